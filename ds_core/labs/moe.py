"""The MoE lab's measurements: how DeepSeekMoE routes each token, step by step, and what each part is worth.

    layers = route(model, ids)                      # one LayerRouting per MoE layer, as its Router computed it
    print(format_steps(selection_steps(layers[0], token=5)))   # one token's group-limited top-k, step by step
    with intervene(model, "top1", "no_bias"):       # interventions: reversible patches of the model's modules
        perplexity(model, tok, n=8, opts=RunOptions(backend="dense"))
    measure_interventions(model, tok, n=16, per_bucket=8)        # perplexity and recall under each intervention

Nothing here routes a token a second way: every affinity, biased score, group score, kept group, chosen expert
and weight is what the model's Router returned in a real forward pass (traced: ds_core.trace's layers.{i}.moe.*
names), so the step-by-step view cannot drift from the model. The interventions change the model the Router and
MoE modules read (their config, their bias buffer, their shared expert), run whatever the caller runs (the eval
functions take their usual RunOptions), and put the very same objects back on exit, exception or not.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from ..checks import check_index, check_int
from ..config import ModelConfig
from ..evaluation.quality import ExpertLoad, RunOptions, perplexity, recall_accuracy
from ..model.moe import MoE, Router
from ..tokenizer import Tokenizer


# ---- what the routers did ------------------------------------------------------------------------------------
@dataclass
class LayerRouting:
    """One MoE layer's routing of N tokens (N = B·T, flattened row by row), as its Router computed it.

    E routed experts in G groups of experts_per_group (G = 1 when routing is not group-limited), k per token.
    """

    layer: int
    scores: torch.Tensor                # [N, E] affinities s: sigmoid (V3) or softmax (V2) of the router logits
    biased_scores: torch.Tensor | None  # [N, E] s + b (b = e_score_correction_bias): what the choice ranks (V3)
    group_scores: torch.Tensor | None   # [N, G] each group's score (V3: sum of its 2 best biased scores)
    kept_groups: torch.Tensor | None    # [N, topk_group] the groups the choice was limited to
    experts: torch.Tensor               # [N, k] the chosen routed experts
    weights: torch.Tensor               # [N, k] their gate weights (unbiased s, normalised, scaled)
    bias: torch.Tensor | None           # [E] the correction bias b
    load: torch.Tensor                  # [E] token slots routed to each expert; sums to N·k
    routed_norm: torch.Tensor           # [N] L2 norm of Σ_k weight_k · expert_k(x), per token
    shared_norm: torch.Tensor | None    # [N] L2 norm of the shared experts' output (None: there are none)
    experts_per_group: int              # E / n_group

    @property
    def choice_scores(self) -> torch.Tensor:
        """[N, E] what the top-k ranks: the biased scores, or the affinities when there is no bias."""
        return self.scores if self.biased_scores is None else self.biased_scores

    @property
    def expert_groups(self) -> torch.Tensor:
        """[E] the group of each expert: groups are runs of experts_per_group consecutive experts."""
        return torch.arange(self.scores.shape[1]) // self.experts_per_group

    def eligible(self) -> torch.Tensor:
        """[N, E] bool: the expert's group was kept for the token (all True when routing is not group-limited)."""
        if self.kept_groups is None:
            return torch.ones_like(self.scores, dtype=torch.bool)
        return (self.expert_groups[None, :, None] == self.kept_groups[:, None, :]).any(-1)

    def chosen(self) -> torch.Tensor:
        """[N, E] bool: the expert is one of the token's top-k."""
        return torch.zeros_like(self.scores, dtype=torch.bool).scatter_(1, self.experts, True)


def moe_layers(cfg: ModelConfig) -> list[int]:
    """The indices of the layers whose MLP is DeepSeekMoE (the first first_k_dense_replace are dense)."""
    return [i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i)]


@torch.inference_mode()
def route(model, ids: torch.Tensor, opts: RunOptions = RunOptions()) -> list[LayerRouting]:
    """One traced forward pass of ids [B, T] (run with opts' attention backend and MLA form) -> one LayerRouting
    per MoE layer, in layer order. The load is counted by eval.ExpertLoad, the expert-load evaluation's counter."""
    cfg = model.config
    if not cfg.has_moe:
        raise ValueError("the model has no routed experts (n_routed_experts is not set): nothing is routed")
    with ExpertLoad(model) as counter, model.trace() as tr:
        model(ids.to(model.device), backend=opts.backend, mla=opts.mla)
    loads = {int(layer): counts.long() for layer, counts in zip(counter.layers, counter.counts)}
    out = []
    for i in moe_layers(cfg):
        p = f"layers.{i}.moe"

        def get(name: str) -> torch.Tensor | None:
            t = tr.get(f"{p}.{name}")
            return None if t is None else t.flatten(0, 1).cpu()  # [B, T, ...] -> [N, ...]

        shared = get("shared_output")
        bias = model.layers[i].mlp.gate.e_score_correction_bias
        out.append(LayerRouting(
            layer=i, scores=get("scores"), biased_scores=get("biased_scores"), group_scores=get("group_scores"),
            kept_groups=get("kept_groups"), experts=get("experts"), weights=get("weights"),
            bias=None if bias is None else bias.detach().cpu(), load=loads[i],
            routed_norm=get("routed_output").float().norm(dim=-1),
            shared_norm=None if shared is None else shared.float().norm(dim=-1),
            experts_per_group=cfg.n_routed_experts // (cfg.n_group if cfg.uses_groups else 1)))
    return out


def selection_steps(lr: LayerRouting, token: int) -> dict:
    """One token's routing in lr, step by step -> {"experts": one row per expert, "groups": one row per group,
    "k": k, "layer": layer, "has_bias": whether the router has a correction bias}. Every value is the Router's own
    (see LayerRouting); the rows only lay them side by side.

    expert rows: expert, group, affinity (s), bias (b, 0 without one), choice_score (s + b), group_kept,
                 rank (1 = best choice score among the eligible experts; None if its group was dropped),
                 chosen, weight (its gate weight; 0 if not chosen)
    group rows:  group, experts (first-last), group_score (None without group-limited routing), kept
    """
    n = lr.scores.shape[0]
    token = check_index("token", token, n, f" (the layer routed {n} tokens)")
    eligible, choice = lr.eligible()[token], lr.choice_scores[token]
    ranked = choice.masked_fill(~eligible, float("-inf")).argsort(descending=True, stable=True)
    rank = {int(e): r + 1 for r, e in enumerate(ranked[:int(eligible.sum())])}
    weight = dict(zip(lr.experts[token].tolist(), lr.weights[token].tolist()))
    groups = lr.expert_groups
    experts = [{"expert": e, "group": int(groups[e]), "affinity": float(lr.scores[token, e]),
                "bias": 0.0 if lr.bias is None else float(lr.bias[e]), "choice_score": float(choice[e]),
                "group_kept": bool(eligible[e]), "rank": rank.get(e), "chosen": e in weight,
                "weight": weight.get(e, 0.0)} for e in range(lr.scores.shape[1])]
    kept = set() if lr.kept_groups is None else set(lr.kept_groups[token].tolist())
    group_rows = [{"group": g, "experts": f"{g * lr.experts_per_group}-{(g + 1) * lr.experts_per_group - 1}",
                   "group_score": None if lr.group_scores is None else float(lr.group_scores[token, g]),
                   "kept": lr.kept_groups is None or g in kept} for g in range(int(groups[-1]) + 1)]
    return {"experts": experts, "groups": group_rows, "k": lr.experts.shape[1], "layer": lr.layer,
            "has_bias": lr.bias is not None}


def format_steps(steps: dict, cfg: ModelConfig) -> str:
    """selection_steps' result as numbered plain-text lines: the five steps of DeepSeek-V3's router."""
    rows, k = steps["experts"], steps["k"]
    chosen = sorted((r for r in rows if r["chosen"]), key=lambda r: r["rank"])

    def top(key: str) -> str:
        return ", ".join(f"e{r['expert']} {r[key]:.3f}" for r in sorted(rows, key=lambda r: -r[key])[:4])

    lines = [f"1. affinities s = {cfg.scoring_func}(router logits), best four: {top('affinity')}"]
    if steps["has_bias"]:
        lines.append(f"2. add the correction bias b to choose (never to weigh); s + b, best four: "
                     f"{top('choice_score')}")
    else:
        lines.append("2. no correction bias: the choice ranks s itself")
    if steps["groups"][0]["group_score"] is not None:
        how = "sum of its 2 best s + b" if cfg.topk_method == "noaux_tc" else "its best s"
        scores = ", ".join(f"g{g['group']} {g['group_score']:.3f}" for g in steps["groups"])
        kept = ", ".join(f"g{g['group']}" for g in steps["groups"] if g["kept"])
        lines.append(f"3. group scores ({how}): {scores}; keep the best {cfg.topk_group}: {kept}")
    else:
        lines.append("3. routing is not group-limited: every expert may be chosen")
    lines.append(f"4. top-{k} by choice score among the kept groups' experts: "
                 + ", ".join(f"e{r['expert']}" for r in chosen))
    norm = "normalised to sum 1, " if cfg.norm_topk_prob else ""
    lines.append(f"5. gate weights = their unbiased s, {norm}times routed_scaling_factor "
                 f"{cfg.routed_scaling_factor:g}: " + ", ".join(f"e{r['expert']} {r['weight']:.3f}" for r in chosen)
                 + f" (sum {sum(r['weight'] for r in chosen):.3f})")
    return "\n".join(lines)


def contribution_norms(layers: list[LayerRouting]) -> list[dict]:
    """Per MoE layer: the mean L2 norm over tokens of the shared and of the routed contribution, and their ratio
    (shared / routed; None without shared experts)."""
    rows = []
    for lr in layers:
        shared = None if lr.shared_norm is None else float(lr.shared_norm.mean())
        routed = float(lr.routed_norm.mean())
        rows.append({"layer": lr.layer, "shared_norm": shared, "routed_norm": routed,
                     "shared_over_routed": None if shared is None else shared / routed})
    return rows


def routing_changes(before: list[LayerRouting], after: list[LayerRouting]) -> list[dict]:
    """Two routings of the same tokens (say without and with an intervention) -> per MoE layer:

        changed                 share of tokens whose set of chosen experts differs
        same_set_weight_diff    the largest |Δ gate weight| among tokens whose set is the same (None if none is)

    From the second MoE layer on, a layer's input differs too once an earlier layer routed differently.
    """
    rows = []
    for b, a in zip(before, after, strict=True):
        if b.layer != a.layer or b.experts.shape != a.experts.shape:
            raise ValueError(f"routings of different layers or token counts: layer {b.layer} {list(b.experts.shape)}"
                             f" vs layer {a.layer} {list(a.experts.shape)}")
        (eb, ob), (ea, oa) = b.experts.sort(-1), a.experts.sort(-1)
        same = (eb == ea).all(-1)                                                  # [N]
        diff = (b.weights.gather(1, ob) - a.weights.gather(1, oa)).abs()[same]    # weights in expert order
        rows.append({"layer": b.layer, "changed": 1 - float(same.float().mean()),
                     "same_set_weight_diff": float(diff.max()) if diff.numel() else None})
    return rows


# ---- interventions: reversible patches ---------------------------------------------------------------------
@contextmanager
def _swapped(changes: list[tuple[object, str, object]]) -> Iterator[None]:
    """Set each (obj, attribute, value) while the block runs; put the previous objects back after it."""
    saved = []
    try:
        for obj, name, value in changes:
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def _routers(model) -> list[Router]:
    routers = [m for m in model.modules() if isinstance(m, Router)]
    if not routers:
        raise ValueError("the model has no routed experts (n_routed_experts is not set): nothing to intervene on")
    return routers


def force_top_k(model, k: int = 1):
    """Context manager: every token goes to its k best routed experts instead of num_experts_per_tok (the
    routers read a copy of the config with num_experts_per_tok = k; with norm_topk_prob the k share the whole
    weight). ValueError when k is not an integer from 1 to what the kept groups hold."""
    routers = _routers(model)
    cfg = dataclasses.replace(routers[0].cfg, num_experts_per_tok=k)
    cfg.validate()  # ConfigError (a ValueError) names the allowed range
    return _swapped([(r, "cfg", cfg) for r in routers])


def drop_shared_experts(model):
    """Context manager: the MoE layers run without their shared experts (only the routed contribution)."""
    moes = [m for m in model.modules() if isinstance(m, MoE) and m.shared_experts is not None]
    if not moes:
        raise ValueError("the model has no shared experts (n_shared_experts is 0 or not set) to drop")
    return _swapped([(m, "shared_experts", None) for m in moes])


def without_correction_bias(model):
    """Context manager: the routers choose by the affinities alone, as if e_score_correction_bias were 0."""
    routers = [r for r in _routers(model) if r.e_score_correction_bias is not None]
    if not routers:
        raise ValueError("the model's routers have no correction bias (softmax routing, as in DeepSeek-V2)")
    return _swapped([(r, "e_score_correction_bias", None) for r in routers])


@dataclass(frozen=True)
class Intervention:
    label: str
    effect: str                              # what changes, in a sentence
    patch: Callable                          # model -> context manager
    applies: Callable[[ModelConfig], bool]   # whether the model has the part it changes


INTERVENTIONS = {
    "top1": Intervention("force top-1", "each token uses only its best routed expert",
                         lambda m: force_top_k(m, 1), lambda c: c.has_moe and c.num_experts_per_tok > 1),
    "no_shared": Intervention("drop the shared expert", "the MoE layers add only the routed experts' output",
                              drop_shared_experts, lambda c: c.has_moe and bool(c.n_shared_experts)),
    "no_bias": Intervention("switch off the correction bias", "experts are chosen by the affinities alone",
                            without_correction_bias, lambda c: c.has_moe and c.scoring_func == "sigmoid"),
}


def interventions_for(cfg: ModelConfig) -> list[str]:
    """The names in INTERVENTIONS that change something in a model of this config."""
    return [name for name, iv in INTERVENTIONS.items() if iv.applies(cfg)]


def _check_names(names: str | Sequence[str]) -> tuple[str, ...]:
    """An intervention name or several -> a tuple of names; ValueError for an unknown one or for none."""
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names or any(n not in INTERVENTIONS for n in names):
        raise ValueError(f"interventions must be among {', '.join(INTERVENTIONS)}, got {list(names)!r}")
    return names


@contextmanager
def intervene(model, *names: str) -> Iterator:
    """Context manager applying the named INTERVENTIONS together (e.g. intervene(model, "top1", "no_bias")),
    undone in reverse order on exit. With no names it changes nothing."""
    with ExitStack() as stack:
        for name in _check_names(names) if names else ():
            stack.enter_context(INTERVENTIONS[name].patch(model))
        yield model


def shared_weight_copy(model):
    """A copy of model with its own modules but the very same parameter and buffer tensors (no weight memory is
    copied; the compiled decode's gathered experts, ds_core.perf.moe_gathered, are shared too). An intervention on
    the copy changes only the copy's modules, so it can run while other requests use the original (the explorer
    does this)."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    compiled = model.__dict__.get("_compiled_decode")
    if compiled is not None:
        memo[id(compiled)] = None  # compiled code is not copied: the copy compiles its own if asked to
    return copy.deepcopy(model, memo)


def measure_interventions(model, tok: Tokenizer, names: Sequence[str | Sequence[str]] | None = None, n: int = 16,
                          per_bucket: int = 8, seq_len: int | None = None, split: str = "test",
                          opts: RunOptions = RunOptions(),
                          progress: Callable[[float, str], None] | None = None) -> list[dict]:
    """Perplexity over n story windows (seq_len tokens, default the context) and greedy recall (per_bucket probes
    per distance bucket) of the model as trained and under each entry of names (an intervention name, or a
    tuple of names applied together; default: every one that applies) -> one row per run, baseline first:

        name, label, perplexity, loss, recall (share of all probes recalled), recall_by_bucket {bucket: accuracy},
        tokens (predicted), probes, and d_perplexity, d_recall: the change from the baseline row

    opts (attention backend, MLA form, batch size) apply to every run. progress(fraction done, message), if
    given, is called before each run.
    """
    check_int("n (story windows)", n, 1)
    check_int("per_bucket (recall probes per distance bucket)", per_bucket, 1)
    if seq_len is not None:
        check_int("seq_len", seq_len, 2)
    entries = interventions_for(model.config) if names is None else [names] if isinstance(names, str) else names
    runs = [()] + [_check_names(entry) for entry in entries]
    rows = []
    for done, run in enumerate(runs):
        label = " + ".join(INTERVENTIONS[name].label for name in run) or "the model as trained"
        if progress is not None:
            progress(done / len(runs), f"{label}: perplexity and recall")
        with intervene(model, *run):
            ppl = perplexity(model, tok, split, n, seq_len, opts)
            recall = recall_accuracy(model, tok, per_bucket, split, opts)
        probes = recall.pop("probes")
        rows.append({"name": "+".join(run) or "baseline", "label": label, "perplexity": ppl["perplexity"],
                     "loss": ppl["loss"], "recall": sum(p["recalled"] for p in probes) / len(probes),
                     "recall_by_bucket": {b: r["accuracy"] for b, r in recall.items()}, "tokens": ppl["tokens"],
                     "probes": len(probes)})
    for row in rows:
        row["d_perplexity"] = row["perplexity"] - rows[0]["perplexity"]
        row["d_recall"] = row["recall"] - rows[0]["recall"]
    return rows


def format_interventions(rows: list[dict]) -> str:
    """measure_interventions' rows as a plain-text table."""
    width = max(len(r["label"]) for r in rows)
    lines = [f"{'run':<{width}}  perplexity  (change)  recall  (change)"]
    for r in rows:
        lines.append(f"{r['label']:<{width}}  {r['perplexity']:>10.3f}  {r['d_perplexity']:>+8.3f}  "
                     f"{r['recall']:>6.1%}  {r['d_recall']:>+8.1%}")
    return "\n".join(lines)
