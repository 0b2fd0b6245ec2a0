"""Train the lightning indexers of DeepSeek Sparse Attention (ds_core.attention.dsa) for a frozen model.

    python -m ds_core train-indexer --model assets/ds-tiny              # writes indexer.safetensors + indexer_config.json
    python -m ds_core train-indexer --model assets/ds-tiny --steps 50   # a quick run

As DeepSeek-V3.2's dense warm-up stage: the model is frozen and runs dense attention. For each layer and query t
the target p(t, ·) is the layer's attention probabilities summed over heads and renormalised; the indexer's
distribution is softmax over the causal keys of I(t, ·); the loss is KL(p || softmax I), summed over layers and
averaged over queries. Batches are story windows (as in ds_core.evaluation.quality), drawn with a generator seeded by
(seed, step). At the end it reports, on held-out validation windows, the KL before and after training and the
top-k recall: the share of the dense attention mass that falls on the indexer's top-k keys, next to that of
the last k tokens (a sliding window) for comparison, counted over queries with more than k keys to choose from.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..attention.dsa import DSAAttention, IndexerStack
from ..cli import add_config_arguments, config_from_args
from ..evaluation.quality import story_windows
from ..model import DeepSeekModel
from ..tokenizer import Tokenizer

RECALL_KS = (16, 32, 64)


@dataclass
class IndexerTrainConfig:
    model: str = "assets/ds-tiny"   # checkpoint directory: read, and the indexer files are written into it
    steps: int = 300
    batch_size: int = 4
    seq_len: int = 384
    lr: float = 2e-3
    seed: int = 0
    n_heads: int = 4                # indexer heads H_I
    head_dim: int = 32              # d_I
    rope_dim: int = 8               # dims of q_I, k_I that rope rotates
    train_windows: int = 2000       # story windows the batches are drawn from (training split)
    eval_windows: int = 16          # held-out windows (validation split)
    threads: int = 0                # torch threads (0: torch's default)


# ---- targets and loss ------------------------------------------------------------------------------------

@torch.no_grad()
def attention_targets(model: DeepSeekModel, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """ids [B, T] -> per layer (x [B, T, D]: the attention input the indexer reads, p [B, T, T]: the dense
    attention probabilities summed over heads and renormalised; each row sums to 1 over its causal keys)."""
    with model.trace() as tr:
        model(ids, backend="dense", mla="naive")  # naive MLA: the cheaper form without a cache
    return [(tr[f"layers.{i}.attn.input"], tr[f"layers.{i}.attn.probs"].mean(dim=1))
            for i in range(model.config.num_hidden_layers)]


def index_logits(stack: IndexerStack, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The indexer's I(t, s) [B, T, T] over x [B, T, D] at positions 0..T-1, -inf on future keys."""
    indexer = stack.layers[layer]
    positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[:2])
    index = indexer.scores(*indexer.queries(x, positions), indexer.keys(x, positions))
    future = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).triu(1)
    return index.masked_fill(future, float("-inf"))


def kl_per_layer(stack: IndexerStack, targets) -> torch.Tensor:
    """[L]: KL(p || softmax I) per layer, averaged over the batch's queries."""
    kls = []
    for layer, (x, p) in enumerate(targets):
        log_q = index_logits(stack, layer, x).log_softmax(dim=-1)
        log_q = log_q.masked_fill(p == 0, 0.0)  # future keys: p = 0 and log q = -inf; 0·log 0 counts as 0
        kls.append((torch.xlogy(p, p) - p * log_q).sum(dim=-1).mean())
    return torch.stack(kls)


@torch.no_grad()
def recall_sums(stack: IndexerStack, targets, ks=RECALL_KS) -> dict[int, torch.Tensor]:
    """k -> [3] (attention mass on the indexer's top k, mass on the last k tokens, number of queries), summed over
    layers and the queries with more than k causal keys (for the others any rule picks every key)."""
    out = {}
    for k in ks:
        total = torch.zeros(3)
        for layer, (x, p) in enumerate(targets):
            T = x.shape[1]
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril().expand(x.shape[0], T, T)
            picked = DSAAttention.select(index_logits(stack, layer, x), causal, k).clamp(min=0)
            recent = causal & ~causal.tril(-k)  # keys t-k+1 .. t
            rows = slice(k, None)               # query t has t+1 keys: more than k from t = k on
            total += torch.tensor([p.gather(-1, picked)[:, rows].sum().item(), (p * recent)[:, rows].sum().item(),
                                   p[:, rows].shape[0] * p[:, rows].shape[1]])
        out[k] = total
    return out


@torch.no_grad()
def evaluate(model: DeepSeekModel, stack: IndexerStack, ids: torch.Tensor, batch_size: int) -> dict:
    """Held-out KL (summed over layers, mean over queries) and top-k recall vs the last-k tokens' share."""
    kl, recall = 0.0, {}
    for chunk in ids.split(batch_size):
        targets = attention_targets(model, chunk)
        kl += kl_per_layer(stack, targets).sum().item() * len(chunk) / len(ids)
        for k, sums in recall_sums(stack, targets).items():
            recall[k] = recall.get(k, 0) + sums
    return {"kl": kl, "recall": {k: {"indexer": (s[0] / s[2]).item(), "last_k": (s[1] / s[2]).item()}
                                 for k, s in recall.items() if s[2] > 0}}


def format_eval(r: dict) -> str:
    lines = [f"held-out KL {r['kl']:.4f} (summed over layers, mean per query)",
             "top-k recall of the dense attention mass (held out):"]
    lines += [f"  k = {k:3d}: indexer {v['indexer']:.1%}   last {k} tokens {v['last_k']:.1%}"
              for k, v in r["recall"].items()]
    return "\n".join(lines)


# ---- training -------------------------------------------------------------------------------------------

def train(cfg: IndexerTrainConfig) -> dict:
    """Train the indexers of cfg.model, write them into its directory, return {'before', 'after', 'final_kl'}."""
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = DeepSeekModel.from_pretrained(cfg.model)  # frozen: from_pretrained turns gradients off
    if cfg.seq_len > model.config.max_position_embeddings:
        raise ValueError(f"seq_len {cfg.seq_len} is longer than the model's {model.config.max_position_embeddings}")
    tok = Tokenizer.from_pretrained(cfg.model)
    data = story_windows(tok, "train", cfg.train_windows, cfg.seq_len)[:, :-1]
    held_out = story_windows(tok, "validation", cfg.eval_windows, cfg.seq_len)[:, :-1]
    stack = IndexerStack.for_model(model.config, seed=cfg.seed, n_heads=cfg.n_heads, head_dim=cfg.head_dim,
                                   rope_dim=cfg.rope_dim)
    before = evaluate(model, stack, held_out, cfg.batch_size)
    opt = torch.optim.AdamW(stack.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr / 10)
    recent: list[float] = []
    bar = tqdm(range(cfg.steps), desc="training indexer", unit="step", dynamic_ncols=True)
    for step in bar:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        ids = data[torch.randint(len(data), (cfg.batch_size,), generator=g)]
        loss = kl_per_layer(stack, attention_targets(model, ids)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        recent = (recent + [loss.item()])[-20:]
        bar.set_postfix(kl=f"{loss.item():.4f}")
    bar.close()
    after = evaluate(model, stack, held_out, cfg.batch_size)
    result = {"final_kl": sum(recent) / max(len(recent), 1), "before": before, "after": after}
    stack.save(cfg.model, extra={"training": {"config": asdict(cfg), **result}})
    return result


# ---- python -m ds_core train-indexer ----------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    add_config_arguments(parser, IndexerTrainConfig)


def run(args: argparse.Namespace) -> None:
    cfg = config_from_args(IndexerTrainConfig, args)
    result = train(cfg)
    print(f"final training KL {result['final_kl']:.4f} (mean of the last 20 steps)")
    print("before training: " + format_eval(result["before"]))
    print("after training:  " + format_eval(result["after"]))
    print(f"saved {Path(cfg.model) / 'indexer.safetensors'} and indexer_config.json")
