"""Write the shipped model's card, assets/ds-tiny/README.md, from measurements made now.

    python -m ds_core card --model assets/ds-tiny

Every number in the card comes from code run by this command: the architecture and parameter counts from
config.json (ds_core.evaluation.sizes), the recipe and the loss curve from training_log.json (written by
python -m ds_core train), perplexity, recall and expert load from ds_core.evaluation.quality, and the samples from
ds_core.generate. It also writes loss_curve.png and eval.json beside the card.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ..evaluation import quality as evaluation
from ..labs.attention import format_sweep
from ..evaluation.continuations import held_out_openings
from ..generate import generate
from ..evaluation.sizes import architecture_rows, param_summary
from ..viz.text import human_count
from ..model import DeepSeekModel
from ..tokenizer import Tokenizer
from .train import GUIDED_HEADS

SAMPLE_TEMPERATURES = (0.0, 0.7, 1.0, 1.5)
FINAL_WINDOW = 100  # training steps averaged for the final training loss
SAMPLE_TOKENS = 80  # new tokens per sample
SAMPLED_TEMPERATURE = 0.7  # the sampled continuations measured beside the greedy ones


def final_train_loss(log: list[dict]) -> float:
    tail = log[-FINAL_WINDOW:]
    return sum(e["loss"] for e in tail) / len(tail)


def plot_loss(log: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in log]
    loss = [e["loss"] for e in log]
    smooth, acc = [], None
    for x in loss:  # exponential moving average, so the trend shows through batch-to-batch noise
        acc = x if acc is None else 0.95 * acc + 0.05 * x
        smooth.append(acc)
    val = [(e["step"], e["val_loss"]) for e in log if "val_loss" in e]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, loss, color="#bbbbbb", lw=0.6, label="training loss (per step)")
    ax.plot(steps, smooth, color="#4c72b0", lw=1.6, label="training loss (moving average)")
    if val:
        ax.plot(*zip(*val), "o-", color="#c44e52", ms=4, label="validation loss")
    ax.set(xlabel="step", ylabel="cross-entropy (nats / token)", yscale="log",
           title="ds-tiny training: next-token loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def samples(model, tok: Tokenizer, openings: list[str], max_new_tokens: int = SAMPLE_TOKENS) -> list[dict]:
    out = []
    for prompt in openings:
        for t in SAMPLE_TEMPERATURES:
            text = "".join(s.text for s in generate(model, tok, prompt, temperature=t, top_k=0, top_p=1.0,
                                                   max_new_tokens=max_new_tokens, seed=0))
            out.append({"prompt": prompt, "temperature": t, "text": text})
    return out


def continuation_section(greedy: dict, sampled: dict, skip: int, shown: int = 4) -> list[str]:
    """How continuations of held-out openings hold their characters, greedy and sampled, beside the stories'
    own (ds_core.evaluation.quality.continuation_quality), and `shown` greedy ones after the first `skip` (which the Samples
    section shows)."""
    lines = ["**Continuations** (`ds_core.evaluation.quality.continuation_quality`): the first three sentences of "
             f"{greedy['model']['n']} test stories, each naming a character, continued for {greedy['tokens']} "
             f"tokens greedily and sampled at τ = {sampled['temperature']:g}; beside them, the same stories' own "
             "next tokens, measured the same way.", "",
             f"| share of … | greedy | τ = {sampled['temperature']:g} | the stories |", "|---|---|---|---|",
             *[f"| {label} | {greedy['model'][key]:.0%} | {sampled['model'][key]:.0%} | {greedy['corpus'][key]:.0%} |"
               for key, label in evaluation.CONTINUATION_MEASURES.items()], ""]
    if greedy["model"]["loops"] > greedy["corpus"]["loops"] + 0.1:
        lines += ["Greedy decoding loops where the stories do not: it always takes the likeliest token, so "
                  "wherever the likeliest next sentence is the one just said, it says it again, and copying from "
                  "context (which recall needs) makes the repeat likelier still. Sampling does not always take "
                  "the likeliest token (lesson 02 compares the two).", ""]
    else:
        lines += ["Greedy decoding loops hardly more than the stories do: their plots tell their beats in a fixed "
                  "order, so the likeliest next sentence moves the story on (`ds_core/data/stories.py`).", ""]
    lines += [f"Openings {skip + 1} to {skip + shown}, continued greedily (the first {skip} are under Samples):", ""]
    for row in greedy["samples"][skip:skip + shown]:
        lines += [f"- **{row['opening']}** …{row['model'].strip()}"]
    return lines + [""]


def sparse_attention_section(model_dir: Path, sweep_rows: list[dict], context: int) -> list[str]:
    """The DSA indexer's warm-up results (from indexer_config.json, written by python -m ds_core train-indexer)
    and perplexity / recall under sparse attention (ds_core.labs.attention.sweep, measured now)."""
    if not sweep_rows:
        return []
    lines = ["## Sparse attention", "",
             "`python -m ds_core card` measures these with `ds_core.labs.attention.sweep` (test split; "
             f"{next(iter(sweep_rows[0]['recall_n'].values()))} recall probes per distance bucket). `python -m ds_core eval --window W "
             "--sinks G` or `--dsa-top-k K` measures one scheme on the full evaluation.", "",
             f"| attention | scores computed (T = {context}) | perplexity | "
             + " | ".join(f"recall d {k}" for k in sweep_rows[0]["recall"]) + " |",
             "|---|---|---|" + "---|" * len(sweep_rows[0]["recall"])]
    for row in sweep_rows:
        lines.append(f"| {row['name']} | {row['fraction_computed']:.1%} | {row['perplexity']:.3f} | "
                     + " | ".join(f"{v:.0%}" for v in row["recall"].values()) + " |")
    conf = model_dir / "indexer_config.json"
    training = json.loads(conf.read_text()).get("training") if conf.is_file() else None
    if training:
        tc = training["config"]
        lines += ["", f"**DSA lightning indexer** (`indexer.safetensors`, {tc['n_heads']} heads of {tc['head_dim']} "
                  f"dims per layer): trained by `python -m ds_core train-indexer` for {tc['steps']} steps with the "
                  "model frozen, minimising the KL divergence from each layer's dense attention (summed over "
                  "heads) to the indexer's distribution, as DeepSeek-V3.2's warm-up stage does. Held-out KL "
                  f"{training['before']['kl']:.3f} before, {training['after']['kl']:.3f} after. Share of the dense "
                  "attention mass on the indexer's top-k tokens, against simply taking the last k tokens:", "",
                  "| k | indexer | last k tokens |", "|---|---|---|",
                  *[f"| {k} | {v['indexer']:.1%} | {v['last_k']:.1%} |"
                    for k, v in training["after"]["recall"].items()]]
    return lines + [""]


def sparse_sweep(model, tok, model_dir: Path, per_bucket: int) -> list[dict]:
    from ..attention import DSAAttention
    from ..labs.attention import sweep, window_backends

    backends = window_backends(windows=(32, 128), sinks=(0, 4))
    if (model_dir / "indexer.safetensors").is_file():
        backends["DSA top-32"] = DSAAttention.from_pretrained(model_dir, top_k=32)
    return sweep(model, tok, backends, per_bucket=per_bucket, n=60)


def card(model_dir: Path, result: dict, sample_rows: list[dict], training: dict, sampled: dict,
         sweep_rows: list[dict] = ()) -> str:
    """The card's Markdown. sampled: continuation_quality at SAMPLED_TEMPERATURE, beside result's greedy one."""
    cfg = DeepSeekModel.from_pretrained(model_dir).config
    params = param_summary(cfg)
    log, tc = training["log"], training["config"]
    tokens = tc["steps"] * tc["batch_size"] * tc["seq_len"]
    seconds = sum(tc["batch_size"] * tc["seq_len"] / e["tokens_per_s"] for e in log)
    train_ppl = math.exp(final_train_loss(log))
    val_ppl = result["validation"]["perplexity"]
    lines = [
        "# ds-tiny", "",
        "A DeepSeek-V3-architecture model in miniature, trained from nothing by this repository's own code "
        "(`python -m ds_core train`) on a generated corpus of short stories. It exists so that the explorer "
        "and the lessons run real inference anywhere, offline, on a CPU. It loads in ds_core and in "
        "`transformers` (`AutoModelForCausalLM`, `AutoTokenizer`) without remote code.", "",
        "This card is written by `python -m ds_core card --model assets/ds-tiny`; every number below is "
        "measured by that command (details: `eval.json`).", "",
        "## Architecture", "",
        "| field | value | meaning |", "|---|---|---|",
        *[f"| `{k}` | {v} | {what} |" for k, v, what in architecture_rows(cfg)],
        "",
        f"**Parameters:** {params['total']:,} total ({human_count(params['total'])}), "
        f"{params['active']:,} active per token ({params['active_fraction']:.0%}), of which "
        f"{params['embeddings']:,} in the embedding and the LM head "
        "(`python -m ds_core inspect assets/ds-tiny`).", "",
        "## Data and training", "",
        f"- **Corpus** (`ds_core/data/stories.py`): seeded English short stories with named characters, their "
        "belongings, places and dialogue; a character's name and object are introduced early and referred "
        "back to later, sometimes hundreds of tokens later. Each story opens with a short plot about its first "
        "character (a lost object, a journey, a feast, a repair) told in beats that always come in the same "
        "order, then alternates such plots with scenes. Splits by seed: train, validation and test never "
        f"share a story. Training used {tc['train_stories']:,} stories. Most stories also carry a chant of "
        "words drawn at random, told once and repeated word for word later: only copying predicts it.",
        f"- **Tokenizer** (`ds_core/data/bpe.py`): byte-level BPE with {cfg.vocab_size:,} tokens, trained with "
        "the `tokenizers` library on the training split; `<bos>` = 0, `<eos>` = 1.",
        f"- **Recipe** (`ds_core/training/train.py`): {tc['steps']:,} steps of {tc['batch_size']} windows × "
        f"{tc['seq_len']} tokens ({tokens / 1e6:.1f}M tokens), windows starting at story starts; AdamW "
        f"(β = 0.9, 0.95; weight decay {tc['weight_decay']}), learning rate {tc['lr']:g} after "
        f"{tc['warmup']} warm-up steps, cosine decay to {tc['min_lr']:g}; gradient clipping at "
        f"{tc['grad_clip']}; bf16 autocast: {tc['bf16']}; seed {tc['seed']}.",
        f"- **Balancing:** DeepSeek-V3's auxiliary-loss-free method: after each step every router's "
        f"`e_score_correction_bias` moves by γ = {tc['bias_update_speed']:g} towards its under-loaded experts; "
        "no balance loss.",
        *([f"- **Induction guide** (`ds_core/induction_guide.py`): an auxiliary loss, weight "
           f"{tc['guide_weight']:g}, trains attention heads {', '.join(f'{l}.{h}' for l, h in GUIDED_HEADS)} "
           "(layer.head) to look at the token after an earlier occurrence of the last two tokens, the pattern of "
           "an induction head. Without it the model showed no copying within the CPU budget (such heads appear "
           "suddenly, after a loss plateau that is long for small batches); the guide shapes where those heads "
           "look, and the language-modelling loss alone decides what the model does with it. The "
           "architecture is unchanged."] if tc.get("guide_weight") else []),
        f"- **Time:** {seconds / 60:.0f} minutes of training steps ({tokens / seconds:,.0f} tokens/s on average) on "
        "the machine that trained it.", "",
        "![loss curve](loss_curve.png)", "",
        "## Evaluation", "",
        "`python -m ds_core eval --model assets/ds-tiny` (fp32, dense attention, greedy).", "",
        f"- **Perplexity:** validation {val_ppl:.3f}, test {result['test']['perplexity']:.3f}; final training "
        f"perplexity {train_ppl:.3f} (mean loss of the last {FINAL_WINDOW} steps), so validation is "
        f"{val_ppl / train_ppl - 1:+.1%} from training.", "",
        "**Long-range recall** (test split): the text stops where the next word must be a name or an object "
        "the story introduced d tokens earlier and has not mentioned since; recalled = greedy decoding "
        "reproduces the whole word.", "",
        "| distance d (tokens) | probes | recalled | names | objects |", "|---|---|---|---|---|",
        *[f"| {k} | {v['n']} | {v['accuracy']:.1%} | {v.get('name', 0):.1%} | {v.get('object', 0):.1%} |"
          for k, v in result["recall"].items() if k != "probes"],
        "",
        f"**Copying from context** (`ds_core.evaluation.quality.induction_score`): on runs of random words from the "
        "corpus's vocabulary shown twice, the next-token loss is "
        f"{result['induction']['first_copy_loss']:.2f} nats on the first copy and "
        f"{result['induction']['second_copy_loss']:.2f} on the second: the model "
        f"{'copies' if result['induction']['copy_gain'] > 1 else 'does not copy'} (an induction head "
        "finds the earlier occurrence of the current token and copies what followed; long-range recall depends "
        "on it). On random token ids, mostly word pieces never seen side by side, the loss is "
        f"{result['induction_random_ids']['first_copy_loss']:.2f} and "
        f"{result['induction_random_ids']['second_copy_loss']:.2f}: what it learned to copy is text of its own "
        "kind.", "",
        "**Expert load** (share of each MoE layer's routed token slots per expert, test split; "
        f"even would be {1 / cfg.n_routed_experts:.1%}):", "",
        "| layer | " + " | ".join(f"e{i}" for i in range(cfg.n_routed_experts)) + " |",
        "|---|" + "---|" * cfg.n_routed_experts,
        *[f"| {layer} | " + " | ".join(f"{s:.1%}" for s in shares) + " |"
          for layer, shares in result["expert_load"].items()],
        "", *continuation_section(result["continuations"], sampled, skip=len({r["prompt"] for r in sample_rows})),
        *sparse_attention_section(model_dir, list(sweep_rows), cfg.max_position_embeddings), "## Samples", "",
        f"Held-out story openings (test split), continued for {SAMPLE_TOKENS} tokens with seed 0 at several sampling "
        "temperatures τ (`ds_core.generate`, no top-k or top-p).", "",
    ]
    for row in sample_rows:
        if row["temperature"] == SAMPLE_TEMPERATURES[0]:
            lines += [f"**Prompt:** {row['prompt']}", ""]
        lines += [f"- τ = {row['temperature']:g}: …{row['text'].strip()}"]
        if row["temperature"] == SAMPLE_TEMPERATURES[-1]:
            lines.append("")
    lines += ["## Limits", "",
              f"A {human_count(params['total'])}-parameter model of a synthetic world: it writes stories of this "
              "corpus's kind and nothing else, and it knows no facts. Its job is to make every mechanism of "
              "DeepSeek-style inference observable on a laptop."]
    return "\n".join(lines) + "\n"


# ---- python -m ds_core card -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--model", default="assets/ds-tiny", metavar="PATH", help="(default assets/ds-tiny)")
    parser.add_argument("--per-bucket", type=int, default=100, help="recall probes per distance bucket (default 100)")
    parser.add_argument("--samples", type=int, default=3, help="held-out openings to continue (default 3)")


def run(args: argparse.Namespace) -> None:
    path = Path(args.model)
    model = DeepSeekModel.from_pretrained(path)
    tok = Tokenizer.from_pretrained(path)
    training = json.loads((path / "training_log.json").read_text())
    result = evaluation.evaluate(model, tok, args.per_bucket)
    print(evaluation.format_report(result))
    (path / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_loss(training["log"], path / "loss_curve.png")
    with torch.inference_mode():
        rows = samples(model, tok, [opening for opening, _ in held_out_openings(args.samples)])
    sampled = evaluation.continuation_quality(model, tok, temperature=SAMPLED_TEMPERATURE)
    sweep_rows = sparse_sweep(model, tok, path, per_bucket=max(10, args.per_bucket // 2))
    print(format_sweep(sweep_rows))
    (path / "README.md").write_text(card(path, result, rows, training, sampled, sweep_rows))
    print(f"wrote {path / 'README.md'}")
