"""Training: a few real steps end to end, resuming gives the same model, balancing moves the router bias."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch

from ds_core import DeepSeekModel, Tokenizer
from ds_core.training.train import TrainConfig, train


def small(tmp_path, **kw) -> TrainConfig:
    base = dict(out=str(tmp_path / "out"), work=str(tmp_path / "work"), train_stories=40, val_stories=4,
                vocab_size=300, seq_len=32, batch_size=2, steps=4, warmup=1, eval_every=2, save_every=1,
                bias_update_speed=0.01)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = small(tmp)
    train(cfg)
    return cfg


def test_training_writes_a_checkpoint_both_libraries_load(trained):
    out = trained.out
    log = json.loads(open(f"{out}/training_log.json").read())["log"]
    assert [e["step"] for e in log] == [1, 2, 3, 4] and "val_loss" in log[1] and "copy_gain" in log[1]
    assert all("guide_loss" in e for e in log) and any(e["guide_loss"] > 0 for e in log)  # the guide ran
    assert log[-1]["loss"] < log[0]["loss"]  # four steps of a fresh model still learn the token frequencies
    model = DeepSeekModel.from_pretrained(out)
    assert model.config.model_type == "deepseek_v3" and model.config.max_position_embeddings == 32
    biases = [m.e_score_correction_bias for m in model.modules() if hasattr(m, "e_score_correction_bias")]
    assert biases and all(b.abs().sum() > 0 for b in biases)  # balancing moved every router's bias
    tok = Tokenizer.from_pretrained(out)
    ids = torch.tensor([tok.encode("Once upon a time")])

    from transformers import AutoModelForCausalLM
    ref = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), ref(ids).logits.float(), atol=1e-4, rtol=1e-4)


def test_resume_continues_exactly(tmp_path, trained):
    cfg = small(tmp_path, stop_after=2)
    assert train(cfg) == tmp_path / "work"            # stopped early: nothing exported yet
    train(small(tmp_path), resume=True)                # steps 3 and 4 from the checkpoint
    resumed = DeepSeekModel.from_pretrained(tmp_path / "out").state_dict()
    straight = DeepSeekModel.from_pretrained(trained.out).state_dict()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, atol=0, rtol=0, msg=name)


FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from ds_core.training.train import keep_freed_memory
    keep_freed_memory()
torch.ones(25_000_000).sum()  # 100 MB: the first allocation faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.ones(25_000_000).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory tunes glibc's malloc")
def test_keep_freed_memory_stops_refaulting_large_tensors():
    """Without it, every 100 MB tensor is a fresh mmap whose ~25,000 pages fault in again; with it, the
    memory freed by the first one is reused."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "keep")}
    assert faults["default"] > 4 * 20_000, faults
    assert faults["keep"] < faults["default"] / 10, faults


def test_train_command_sets_every_option_of_the_config(monkeypatch, tmp_path):
    """python -m ds_core train: one flag per TrainConfig field (--no-FLAG for a bool), and --resume."""
    from ds_core.__main__ import main
    from ds_core.training import train as train_module

    calls = []
    monkeypatch.setattr(train_module, "train", lambda cfg, resume=False: calls.append((cfg, resume)))
    assert main(["train", "--steps", "3", "--lr", "0.01", "--no-bf16", "--work", str(tmp_path), "--resume"]) == 0
    assert calls == [(TrainConfig(steps=3, lr=0.01, bf16=False, work=str(tmp_path)), True)]
    assert main(["train"]) == 0 and calls[-1] == (TrainConfig(), False)
