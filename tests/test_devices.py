"""Dtypes and devices: bf16/fp16 on CPU against fp32 (and against transformers at the same dtype), the bytes a
KV cache really holds, and CUDA (skipped where there is no GPU).

Low precision can flip a near-tied MoE routing decision, which changes one token's logits a lot; the error
checks therefore use the typical (median) error per position and top-1 agreement, not the worst position.
"""

import pytest
import torch

from conftest import CONFIGS
from ds_core import DeepSeekModel, SamplingParams, Tokenizer, generate, generate_ids

NAMES = list(CONFIGS)
LOW = [torch.bfloat16, torch.float16]
BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def prompt(batch=2, length=24, seed=0):
    return torch.randint(2, 320, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fp32_logits(reference_checkpoints):
    ids = prompt()
    return {name: DeepSeekModel.from_pretrained(path)(ids) for name, (path, _) in reference_checkpoints.items()}


def row_error(got, ref):
    """Median over positions of the largest |error| in that position's logits."""
    return (got - ref).abs().amax(-1).median().item()


# ---- low precision on CPU -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", LOW + [torch.float32])
def test_parameters_take_the_asked_dtype_except_balancing_bias(tiny_checkpoint, dtype):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint, dtype=dtype)
    assert model.dtype == dtype
    for name, p in model.named_parameters():
        assert p.dtype == dtype, name
    biases = {name: b for name, b in model.named_buffers() if name.endswith("e_score_correction_bias")}
    assert len(biases) == sum(model.config.is_moe_layer(i) for i in range(model.config.num_hidden_layers))
    assert all(b.dtype == torch.float32 for b in biases.values())
    assert model.rotary.inv_freq.dtype == torch.float32


def test_unsupported_dtype_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="dtype must be"):
        DeepSeekModel.from_pretrained(tiny_checkpoint, dtype=torch.float64)


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_logits_are_close_to_fp32(reference_checkpoints, fp32_logits, name, dtype):
    from transformers import AutoModelForCausalLM

    path, _ = reference_checkpoints[name]
    ids, ref = prompt(), fp32_logits[name]
    model = DeepSeekModel.from_pretrained(path, dtype=dtype)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    with torch.no_grad():
        hf_err = row_error(hf(ids).logits.float(), ref)
    std = ref.std().item()
    # bf16 keeps 8 bits of mantissa, fp16 11: typical errors ~2^-8 and ~2^-11 of the logits' scale, times depth
    limit = {torch.bfloat16: 0.15, torch.float16: 0.03}[dtype] * std
    for mla in ("naive", "absorbed"):
        got = model(ids, mla=mla)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert torch.isfinite(got).all()
        err = row_error(got, ref)
        assert err < limit, f"{mla}: median row error {err:.4f} (limit {limit:.4f})"
        assert err <= 1.5 * hf_err + 0.01 * std, f"{mla}: {err:.4f} vs transformers' {hf_err:.4f} at {dtype}"
        agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
        assert agree >= 0.85, f"{mla}: top-1 agrees with fp32 at {agree:.0%} of positions"
    # the low-precision path is really low precision: not bit-equal to fp32
    assert not torch.equal(model(ids), ref)


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_generation_runs(tiny_checkpoint, dtype):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint, dtype=dtype)
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    steps = list(generate(model, tok, "Once upon a time", temperature=0.8, top_k=20, max_new_tokens=8, seed=0))
    assert 1 <= len(steps) <= 8 and all(0 <= s.token_id < model.config.vocab_size for s in steps)
    again = list(generate(model, tok, "Once upon a time", temperature=0.8, top_k=20, max_new_tokens=8, seed=0))
    assert [s.token_id for s in steps] == [s.token_id for s in again]


# ---- the KV cache's real size ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["v3_groups", "v2_lite"])
def test_cache_bytes_per_token(reference_checkpoints, name, dtype):
    model = DeepSeekModel.from_pretrained(reference_checkpoints[name][0], dtype=dtype)
    cfg, size = model.config, BYTES[dtype]
    B, T = 2, 13
    ids = prompt(B, T)
    expected = {
        "absorbed": (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * cfg.num_hidden_layers * size,
        "naive": cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim) * cfg.num_hidden_layers * size,
    }
    numbers = cfg.kv_cache_numbers_per_token()
    assert expected["absorbed"] == numbers["latent"] * size and expected["naive"] == numbers["naive"] * size
    for mla, per_token in expected.items():
        cache = model.new_cache(mla)
        model(ids[:, :9], cache=cache)
        for t in range(9, T):  # decode steps too, which grow the buffers past their first size
            model(ids[:, t:t + 1], cache=cache)
        assert cache.length == T
        # measured from the tensors the cache holds, independently of cache.bytes_per_token()
        held = [g.view() for g in cache.tensors()]
        assert all(t.dtype == dtype for t in held)
        assert sum(t.numel() * t.element_size() for t in held) == per_token * B * T
        assert cache.bytes_per_token() == per_token
    assert expected["naive"] > expected["absorbed"]


# ---- CUDA -----------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_fp32_matches_cpu(reference_checkpoints, fp32_logits, name):
    model = DeepSeekModel.from_pretrained(reference_checkpoints[name][0], device="cuda")
    assert model.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(b.device.type == "cuda" for b in model.buffers())
    ids = prompt().cuda()
    for mla in ("naive", "absorbed"):
        got = model(ids, mla=mla)
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), fp32_logits[name], atol=1e-4, rtol=0)
        cache = model.new_cache(mla)
        steps = [model(ids[:, :10], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(10, 24)]
        torch.testing.assert_close(torch.cat(steps, 1).cpu(), fp32_logits[name], atol=1e-4, rtol=0)


@needs_cuda
def test_cuda_bf16_runs(tiny_checkpoint, fp32_logits):
    model = DeepSeekModel.from_pretrained(tiny_checkpoint, device="cuda", dtype=torch.bfloat16)
    ref = fp32_logits["v3_groups"]
    for mla in ("naive", "absorbed"):
        got = model(prompt().cuda(), mla=mla).cpu()
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        assert row_error(got, ref) < 0.15 * ref.std().item()
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.85


@needs_cuda
def test_cuda_generation_and_trace(tiny_checkpoint):
    tok = Tokenizer.from_pretrained(tiny_checkpoint)
    cpu = DeepSeekModel.from_pretrained(tiny_checkpoint)
    gpu = DeepSeekModel.from_pretrained(tiny_checkpoint, device="cuda")
    ids = torch.tensor([tok.encode("Once upon a time")])
    greedy = dict(params=SamplingParams(temperature=0), max_new_tokens=12, eos_ids=[])
    on_cpu = [int(t[0]) for t in generate_ids(cpu, ids, **greedy)]
    on_gpu = [int(t[0]) for t in generate_ids(gpu, ids, **greedy)]
    assert on_gpu == on_cpu
    run = lambda: [s.token_id for s in generate(gpu, tok, "Ada", temperature=1.2, max_new_tokens=10, seed=7)]
    first = run()
    assert first == run() and len(first) >= 1
    with gpu.trace() as tr:
        gpu(ids.cuda())
    assert all(t.device.type == "cuda" for t in tr.values())
