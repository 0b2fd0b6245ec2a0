"""Train the shipped model, assets/ds-tiny, from nothing but this repository.

    python -m ds_core train                    # corpus -> tokenizer -> model -> assets/ds-tiny
    python -m ds_core train --resume           # continue from the last checkpoint in --work
    python -m ds_core train --steps 20 --out /tmp/t --work /tmp/w   # a quick smoke run

Steps: generate the story corpus (ds_core.data.stories), train a byte-level BPE tokenizer on the training
split, then train a miniature DeepSeek-V3 (MLA with q_lora, a dense first layer, DeepSeekMoE layers with a
shared expert, fine-grained routed experts, group-limited sigmoid routing) by next-token prediction.

Expert balance uses DeepSeek-V3's auxiliary-loss-free method: after every step each router's correction bias
moves by γ towards under-loaded experts, b_e += γ·sign(mean load − load_e). The bias steers which experts are
chosen, never their weights, and no balance term enters the loss.

Copying from context (what every recall cue needs) would appear too late for a CPU budget on its own, so an
auxiliary loss, the induction guide (ds_core.training.induction_guide), trains GUIDED_HEADS to attend to copy targets.

Training windows start at story starts, so a story's introductions and its later references (up to ~500
tokens apart) fall in the same window. Seeded and resumable: the batch of step s depends only on (seed, s).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..cli import add_config_arguments, config_from_args
from ..config import ModelConfig
from ..data import bpe, stories
from ..evaluation.quality import ExpertLoad, induction_score
from .induction_guide import InductionGuide
from ..model import DeepSeekModel
from ..tokenizer import Tokenizer


@dataclass
class TrainConfig:
    out: str = "assets/ds-tiny"          # the finished model, Hugging Face layout
    work: str = "runs/ds-tiny"           # token cache, checkpoints, log
    seed: int = 0
    train_stories: int = 60_000
    val_stories: int = 400
    vocab_size: int = 4096
    seq_len: int = 512
    batch_size: int = 12
    steps: int = 4500
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bias_update_speed: float = 1e-3      # γ of the auxiliary-loss-free balancing
    guide_weight: float = 0.2            # weight of the induction guide loss on GUIDED_HEADS (0: off)
    eval_every: int = 100
    save_every: int = 50
    stop_after: int = 0                  # stop (checkpointed) after this many steps in this run; 0: run to the end
    threads: int = 0                     # torch threads (0: torch's default)
    bf16: bool = True                    # bf16 autocast for the matmuls (3x faster on a CPU with avx512_bf16);
                                         # weights, optimizer state, router and loss stay fp32
    device: str = "auto"


def model_config(vocab_size: int, seq_len: int) -> ModelConfig:
    """DeepSeek-V3 in miniature (ds_core.evaluation.sizes.param_summary counts its parameters)."""
    return ModelConfig(
        model_type="deepseek_v3", vocab_size=vocab_size, hidden_size=256, intermediate_size=640,
        num_hidden_layers=4, num_attention_heads=4, q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32,
        qk_rope_head_dim=16, v_head_dim=32, moe_intermediate_size=128, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1, norm_topk_prob=True,
        routed_scaling_factor=1.0, scoring_func="sigmoid", topk_method="noaux_tc", max_position_embeddings=seq_len,
        rope_theta=10000.0, bos_token_id=0, eos_token_id=1, pad_token_id=1, tie_word_embeddings=False,
        initializer_range=0.02,
    )


# (layer, head) pairs the induction guide trains to attend to copy targets (ds_core.training.induction_guide)
GUIDED_HEADS = ((2, 0), (3, 0))


# ---- data ----------------------------------------------------------------------------------------------

def tokenized_split(tok, name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as one stream [N] of ids (each story: <bos> ... <eos>) and its story start offsets [n]."""
    eos = tok.token_to_id(bpe.EOS)
    ids = [e.ids + [eos] for e in tok.encode_batch(stories.split(name, n))]
    starts = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
    return torch.tensor([i for x in ids for i in x], dtype=torch.int16), starts


def corpus_version() -> str:
    """A digest of the code that makes the corpus and the tokenizer: a changed generator never reuses a cache."""
    digest = hashlib.sha256()
    for module in (stories, stories.W, bpe):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:10]


def tokenizer_dir(cfg: TrainConfig) -> Path:
    """Where prepare_data keeps the tokenizer trained for the current corpus code."""
    return Path(cfg.work) / f"tokenizer-{corpus_version()}"


def prepare_data(cfg: TrainConfig) -> dict:
    """Corpus and tokenizer, cached in cfg.work (built once; deterministic given the config)."""
    work = Path(cfg.work)
    cache = work / f"tokens-{corpus_version()}-{cfg.train_stories}-{cfg.val_stories}-{cfg.vocab_size}.pt"
    tok_dir = tokenizer_dir(cfg)
    if cache.exists() and (tok_dir / "tokenizer.json").exists():
        return torch.load(cache, weights_only=True)
    print(f"generating {cfg.train_stories} training stories and training a {cfg.vocab_size}-token BPE ...",
          file=sys.stderr)
    tok = bpe.train_bpe(stories.split("train", cfg.train_stories), cfg.vocab_size)
    bpe.save_tokenizer(tok, tok_dir)
    train, train_starts = tokenized_split(tok, "train", cfg.train_stories)
    val, val_starts = tokenized_split(tok, "validation", cfg.val_stories)
    data = dict(train=train, train_starts=train_starts, val=val, val_starts=val_starts)
    torch.save(data, cache)
    return data


def windows(stream: torch.Tensor, starts: torch.Tensor, idx: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Windows of seq_len + 1 ids starting at the chosen story starts: [len(idx), seq_len + 1]."""
    begin = starts[idx].clamp(max=len(stream) - seq_len - 1)
    return stream[begin[:, None] + torch.arange(seq_len + 1)].long()


def batch(data: dict, cfg: TrainConfig, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(len(data["train_starts"]), (cfg.batch_size,), generator=g)
    return windows(data["train"], data["train_starts"], idx, cfg.seq_len)


# ---- balancing ---------------------------------------------------------------------------------------

def update_balancing_bias(load: ExpertLoad, gamma: float) -> list[torch.Tensor]:
    """b_e += γ·sign(mean load − load_e) for every router; returns the loads [E] counted since the last call."""
    loads = load.reset()
    with torch.no_grad():
        for router, counts in zip(load.routers, loads):
            bias = router.e_score_correction_bias
            bias += gamma * torch.sign(counts.mean() - counts).to(bias.device)
    return loads


# ---- training ------------------------------------------------------------------------------------------

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> None:
    """Have glibc keep freed memory in the process rather than hand each large block back to the OS.

    By default every block above a few MB (a step's activations, its logits) is a fresh mmap, unmapped when
    freed, so each training step page-faults all its activations in again: on the 2-core CPU about a fifth of
    the step, nearly all of it system time. Does nothing where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 31)
    except (OSError, AttributeError):
        pass


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to min_lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def lm_loss(model: DeepSeekModel, ids: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy of ids [B, T+1]."""
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(ids[:, :-1], mla="naive")  # naive MLA: per-head K/V, the cheaper form without a cache
    return F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())


@torch.no_grad()
def validation_loss(model: DeepSeekModel, data: dict, cfg: TrainConfig, n: int = 32) -> float:
    model.eval()
    idx = torch.arange(min(n, len(data["val_starts"])))
    ids = windows(data["val"], data["val_starts"], idx, cfg.seq_len).to(model.device)
    loss = sum(lm_loss(model, ids[i:i + 8], cfg.bf16).item() * len(ids[i:i + 8]) for i in range(0, len(ids), 8)) / len(ids)
    model.train()
    return loss


@torch.no_grad()
def copy_gain(model: DeepSeekModel, tok: Tokenizer) -> float:
    """Nats the model saves on the second showing of a run of random corpus words (eval.induction_score with
    the tokenizer): near 0 until the model copies from its context, the skill every recall cue needs. (Random
    token ids are no test here: the shipped model copies words of its corpus, not arbitrary word pieces.)"""
    model.eval()
    gain = induction_score(model, tok, n=8, length=100)["copy_gain"]
    model.train()
    return gain


def optimizer(model: DeepSeekModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and embeddings."""
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run (or, with resume, continue) training; returns cfg.out once exported, or cfg.work if stopped early."""
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else "cpu" if cfg.device == "auto" else cfg.device)
    if device.type == "cpu":
        keep_freed_memory()
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg)
    torch.manual_seed(cfg.seed)
    model = DeepSeekModel(model_config(cfg.vocab_size, cfg.seq_len)).init_weights(cfg.seed).to(device).train()
    opt = optimizer(model, cfg)
    load = ExpertLoad(model)
    guide = InductionGuide(model, GUIDED_HEADS) if cfg.guide_weight else None
    tok = Tokenizer.from_pretrained(tokenizer_dir(cfg))
    state_file = work / "state.pt"
    log: list[dict] = []
    step = 0
    if resume and state_file.exists():
        state = torch.load(state_file, weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, log = state["step"], json.loads(state["log"])
        print(f"resuming at step {step} from {state_file}", file=sys.stderr)
    elif resume:
        print(f"no checkpoint in {work}; starting from step 0", file=sys.stderr)

    bar = tqdm(total=cfg.steps, initial=step, desc="training ds-tiny", unit="step", dynamic_ncols=True)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    last = min(cfg.steps, step + cfg.stop_after) if cfg.stop_after else cfg.steps
    while step < last:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        ids = batch(data, cfg, step).to(device)
        loss = lm_loss(model, ids, cfg.bf16)
        guide_loss = guide.loss(ids[:, :-1]) if guide else torch.zeros(())
        opt.zero_grad(set_to_none=True)
        (loss + cfg.guide_weight * guide_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        loads = update_balancing_bias(load, cfg.bias_update_speed)
        step += 1
        speed = tokens_per_step / (time.perf_counter() - t0)
        entry = {"step": step, "loss": round(loss.item(), 4), "guide_loss": round(guide_loss.item(), 4), "lr": lr_at(cfg, step - 1), "tokens_per_s": round(speed),
                 "max_load": round(max((l.max() / l.sum()).item() for l in loads), 4)}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            entry["val_loss"] = round(validation_loss(model, data, cfg), 4)
            entry["copy_gain"] = round(copy_gain(model, tok), 3)
            load.reset()  # validation's routing must not steer the balancing (and a resumed run never sees it)
        log.append(entry)
        bar.set_postfix(loss=f"{entry['loss']:.3f}", tok_s=f"{speed:,.0f}",
                        **({"val": f"{entry['val_loss']:.3f}", "copy": f"{entry['copy_gain']:.2f}"}
                           if "val_loss" in entry else {}))
        bar.update(1)
        if step % cfg.save_every == 0 or step == last:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "log": json.dumps(log)}, work / "state.tmp")
            (work / "state.tmp").replace(state_file)  # a crash mid-write never leaves a broken checkpoint
    bar.close()
    if guide:
        guide.remove()
    if step < cfg.steps:
        print(f"stopped at step {step} of {cfg.steps}; continue with --resume", file=sys.stderr)
        return work
    return export(model, cfg, log)


def export(model: DeepSeekModel, cfg: TrainConfig, log: list[dict]) -> Path:
    """Write the Hugging Face directory: weights, config, tokenizer, generation config, training log."""
    out = Path(cfg.out)
    model.eval().to("cpu").save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((tokenizer_dir(cfg) / name).read_bytes())
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1, "do_sample": True, "temperature": 0.8,
        "top_k": 50, "top_p": 0.95, "max_new_tokens": 128}, indent=2) + "\n")
    (out / "training_log.json").write_text(json.dumps({"config": asdict(cfg), "log": log}) + "\n")
    print(f"saved {out}", file=sys.stderr)
    return out


# ---- python -m ds_core train ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    add_config_arguments(parser, TrainConfig)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work")


def run(args: argparse.Namespace) -> None:
    train(config_from_args(TrainConfig, args), resume=args.resume)
