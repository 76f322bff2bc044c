"""eqkernels.nn.LoopedTransformerStack: EqR's parameter names (the Sudoku model's L_level loads
unchanged and apply() is its math), the fused update chain against the eager one and a float64
reference (Triton interpreted on CPU; reference ops too), the noise stream, divergence
freezing, torch.compile(fullgraph=True) and CUDA graphs (GPU). Seeds are named on failure.
"""
import random

import pytest
import torch
from torch.nn import functional as F

import eqkernels as eqk
from eqkernels import _backends
from eqkernels.nn import LoopedTransformerStack, SwiGLU, swiglu_inner_width
from eqkernels.ops.block_step import noise_key, standard_normal_ref

T = 81  # the Sudoku grid: the token MLP's axis


def _require(backend, device="cpu"):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if backend == "triton" and not _backends._usable("triton", torch.device(device)):
        pytest.skip(f"triton on {device}: {_backends.backends()['triton'][1]}")


def _stack(seed, hidden=32, layers=2, device="cpu"):
    torch.manual_seed(seed)
    stack = LoopedTransformerStack(layers, T, hidden, expansion=4.0, eps=1e-5).to(device)
    with torch.no_grad():  # EqR-like scales, so that a few updates stay informative
        for p in stack.parameters():
            p.mul_(1.5)
    return stack


def _latents(seed, B, hidden=32, device="cpu"):
    gen = torch.Generator().manual_seed(seed + 1)
    return (torch.randn(B, T, hidden, generator=gen).to(device),
            torch.randn(B, T, hidden, generator=gen).to(device))


def test_parameter_names_and_shapes_are_eqrs():
    stack = LoopedTransformerStack(2, T, 512, 4.0, 1e-5)
    shapes = {n: tuple(p.shape) for n, p in stack.named_parameters()}
    assert shapes == {f"layers.{i}.{k}": v for i in range(2) for k, v in {
        "mlp_t.gate_up_proj.weight": (512, 81), "mlp_t.down_proj.weight": (81, 256),
        "mlp.gate_up_proj.weight": (3072, 512), "mlp.down_proj.weight": (512, 1536)}.items()}
    assert swiglu_inner_width(512, 4.0) == 1536 and swiglu_inner_width(81, 4.0) == 256
    assert SwiGLU(100, 2.0).inner == 256
    with pytest.raises(ValueError, match="layers must be an int >= 1"):
        LoopedTransformerStack(0, T, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_sudoku_models_stack_loads_and_apply_is_eqrs_layer(dtype):
    """python/reasoner/model.py builds its block as this stack (its L_level state dict loads
    unchanged); apply() is EqR's layer as EqR writes it: the token MLP on the transposed latent,
    normed over the tokens, then the channel MLP, each post-norm (float64: 1e-12)."""
    from reasoner.model import ReasonerConfig, Reasoner as SudokuReasoner
    from sudoku.tokens import CELLS, VOCAB_SIZE
    seed = random.randrange(2**31)
    torch.manual_seed(seed)
    cfg = ReasonerConfig(seq_len=CELLS, vocab=VOCAB_SIZE, hidden=32, layers=2)
    model = SudokuReasoner(cfg)
    ours = LoopedTransformerStack(2, T, 32, cfg.expansion, cfg.rms_eps)
    ours.load_state_dict(model.L_level.state_dict(), strict=True)
    ours = ours.to(dtype)

    def rms(x):
        return x * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + cfg.rms_eps).to(x.dtype)

    def swiglu(x, m):
        gate, up = F.linear(x, m.gate_up_proj.weight).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, m.down_proj.weight)

    h = torch.randn(3, T, 32, dtype=dtype)
    want = h
    for layer in ours.layers:
        t = want.transpose(1, 2)
        want = rms(t + swiglu(t, layer.mlp_t)).transpose(1, 2)
        want = rms(want + swiglu(want, layer.mlp))
    with torch.no_grad():
        got = ours.apply(h, ours.weights(dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, want.detach(), rtol=tol, atol=tol, msg=f"seed {seed}")
    h = h.requires_grad_()  # and it is differentiable
    ours.apply(h, ours.weights(dtype)).float().square().sum().backward()
    assert h.grad is not None and all(p.grad is not None for p in ours.parameters())


def _run(stack, z0, inj, kernels, backend, K, seed, noise_std=0.02, dtype=None):
    dtype = dtype or z0.dtype
    upd_backend = {"triton": "triton", "reference": "reference"}.get(backend, "auto")
    upd = eqk.LoopedUpdate(z0.shape[0], damping=0.9, noise_std=noise_std, seed=seed,
                           device=z0.device, backend=upd_backend)
    z = z0.to(dtype).clone()
    inj = inj.to(dtype)
    w = stack.weights(dtype)
    for _ in range(K):
        out = stack.update_(upd, z, inj, w, kernels=kernels,
                            **({} if kernels == "eager" else dict(backend=backend)))
        assert out is z
    return z, upd


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_fused_update_float32_matches_eager_and_float64(backend):
    _require(backend)
    seed = random.randrange(2**31)
    stack = _stack(seed)  # two layers: the second reads the first's deferred norm (in_scale)
    z0, inj = _latents(seed, 2)
    K = 2
    z_f, upd_f = _run(stack, z0, inj, "fused", backend, K, seed)
    z_e, upd_e = _run(stack, z0, inj, "eager", None, K, seed)
    z_64, upd_64 = _run(stack, z0.double(), inj.double(), "eager", None, K, seed)
    scale = float(z_64.abs().max())
    for name, z, upd in (("eager", z_e, upd_e), ("float64", z_64, upd_64)):
        err = float((z_f.double() - z.double()).abs().max()) / scale
        assert err < 2e-5, f"seed {seed}: fused vs {name}: {err:.3g}"
        torch.testing.assert_close(upd_f.step_norm.double(), upd.step_norm.double(), rtol=2e-5,
                                   atol=0, msg=f"seed {seed}: step norms vs {name}")
    assert int(upd_f.step_counter) == K and upd_f.steps == K
    assert not upd_f.diverged.any()


def test_fused_update_bfloat16_no_worse_than_eager():
    """bf16: the fused chain (Triton, interpreted) ends no further from the float64 run than the
    eager bf16 chain (PyTorch ops in bf16, as the Sudoku model runs them)."""
    _require("triton")
    seed = random.randrange(2**31)
    stack = _stack(seed)
    z0, inj = _latents(seed, 2)
    z0, inj = z0.bfloat16(), inj.bfloat16()  # both runs start from the same bf16 values
    K = 1
    z_f, _ = _run(stack, z0, inj, "fused", "triton", K, seed)
    z_e, _ = _run(stack, z0, inj, "eager", None, K, seed)
    z_64, _ = _run(stack, z0.double(), inj.double(), "eager", None, K, seed)
    err_f = float((z_f.double() - z_64).pow(2).mean().sqrt())
    err_e = float((z_e.double() - z_64).pow(2).mean().sqrt())
    assert err_f <= err_e, f"seed {seed}: fused bf16 rms error {err_f:.3g} > eager's {err_e:.3g}"


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_fused_update_noise_is_block_steps_stream(backend):
    """One fused update with noise minus the same update without: noise_std * eps of
    noise_key(seed, 1), block_step's stream (standard_normal_ref)."""
    _require(backend)
    seed = random.randrange(2**31)
    stack = _stack(seed, layers=1)
    z0, inj = _latents(seed, 2)
    sigma = 0.25
    z_n, _ = _run(stack, z0, inj, "fused", backend, 1, seed, noise_std=sigma)
    z_0, _ = _run(stack, z0, inj, "fused", backend, 1, seed, noise_std=0.0)
    eps = standard_normal_ref(noise_key(seed, 1), 2, T * 32).view(2, T, 32)
    torch.testing.assert_close((z_n - z_0) / sigma, eps, rtol=0, atol=2e-5, msg=f"seed {seed}")


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_a_nan_sample_is_frozen_and_flagged_and_the_others_are_untouched(backend):
    _require(backend)
    seed = random.randrange(2**31)
    stack = _stack(seed, layers=1)
    z0, inj = _latents(seed, 3)
    z_bad = z0.clone()
    z_bad[1, 40, 7] = float("nan")
    upd = eqk.LoopedUpdate(3, damping=0.9, noise_std=0.02, seed=seed,
                           backend="triton" if backend == "triton" else "reference")
    w = stack.weights(torch.float32)
    stack.update_(upd, z_bad, inj, w, backend=backend)
    assert upd.diverged.tolist() == [False, True, False], f"seed {seed}"
    # samples 0 and 2 are those of a run without the NaN: nothing leaks across the batch
    z_ok, _ = _run(stack, z0, inj, "fused", backend, 1, seed)
    assert torch.equal(z_bad[[0, 2]], z_ok[[0, 2]]), f"seed {seed}"
    frozen = z_bad[1].clone()
    stack.update_(upd, z_bad, inj, w, backend=backend)
    assert torch.equal(z_bad[1].isnan(), frozen.isnan()), "the diverged sample was written"
    assert torch.equal(z_bad[1].nan_to_num(), frozen.nan_to_num())
    assert torch.isfinite(z_bad[[0, 2]]).all() and int(upd.step_counter) == 2


def test_compiled_update_loop_matches_eager():
    """K fused updates (CPU: the reference ops and the compiled block step) under
    torch.compile(fullgraph=True): no graph break, the eager iterates and counter."""
    seed = random.randrange(2**31)
    stack = _stack(seed, hidden=16, layers=1)
    z0, inj = _latents(seed, 2, hidden=16)
    K = 3

    def loop(z, inj, upd):
        w = stack.weights(z.dtype)
        for _ in range(K):
            stack.update_(upd, z, inj, w)
        return z

    z_e = z0.clone()
    upd_e = eqk.LoopedUpdate(2, damping=0.9, noise_std=0.05, seed=seed)
    loop(z_e, inj, upd_e)
    torch._dynamo.reset()
    z_c = z0.clone()
    upd_c = eqk.LoopedUpdate(2, damping=0.9, noise_std=0.05, seed=seed)
    torch.compile(loop, fullgraph=True, backend="aot_eager")(z_c, inj, upd_c)
    assert int(upd_c.step_counter) == int(upd_e.step_counter) == K
    torch.testing.assert_close(z_c, z_e, rtol=1e-5, atol=1e-5, msg=f"seed {seed}")
    torch.testing.assert_close(upd_c.step_norm, upd_e.step_norm, rtol=1e-5, atol=1e-5)


def test_compiled_triton_update_loop_has_no_graph_break():
    """The Triton chain (interpreted: dynamo traces the calls, the kernels run as its graph
    executes) under torch.compile(fullgraph=True): the eager iterates; and the tile
    candidates a sweep would time, each accepted by update_."""
    _require("triton")
    seed = random.randrange(2**31)
    stack = _stack(seed, hidden=16, layers=1)
    z0, inj = _latents(seed, 2, hidden=16)

    def loop(z, inj, upd, tiles=None):
        w = stack.weights(z.dtype)
        for _ in range(2):
            stack.update_(upd, z, inj, w, backend="triton", tiles=tiles)
        return z

    z_e = z0.clone()
    loop(z_e, inj, eqk.LoopedUpdate(2, damping=0.9, noise_std=0.05, seed=seed, backend="triton"))
    torch._dynamo.reset()
    z_c = z0.clone()
    upd = eqk.LoopedUpdate(2, damping=0.9, noise_std=0.05, seed=seed, backend="triton")
    torch.compile(loop, fullgraph=True, backend="eager")(z_c, inj, upd)
    assert int(upd.step_counter) == 2
    torch.testing.assert_close(z_c, z_e, rtol=1e-6, atol=1e-6, msg=f"seed {seed}")
    cands = stack.tile_candidates(2, torch.bfloat16, "cpu")
    assert set(cands) == {"token_mix", "gate_up", "down"} and all(cands.values())
    last = {op: c[-1] for op, c in stack.tile_candidates(2, torch.float32, "cpu").items()}
    z_t = z0.clone()
    upd = eqk.LoopedUpdate(2, damping=0.9, noise_std=0.05, seed=seed, backend="triton")
    stack.update_(upd, z_t, inj, stack.weights(torch.float32), backend="triton", tiles=last)
    z_1 = z0.clone()  # one update with the default tiles
    upd = eqk.LoopedUpdate(2, damping=0.9, noise_std=0.05, seed=seed, backend="triton")
    stack.update_(upd, z_1, inj, stack.weights(torch.float32), backend="triton")
    torch.testing.assert_close(z_t, z_1, rtol=2e-5, atol=2e-5, msg=f"seed {seed} {last}")


def test_update_rejects_bad_arguments():
    stack = _stack(0, hidden=16, layers=1)
    z, inj = _latents(0, 2, hidden=16)
    upd = eqk.LoopedUpdate(2, damping=0.9)
    w = stack.weights(torch.float32)
    with pytest.raises(ValueError, match=r"z must be a \(B, 81, 16\) tensor, got shape \(2, 81, 8\)"):
        stack.update_(upd, z[..., :8].contiguous(), None, w)
    with pytest.raises(ValueError, match=r"inj must have z's shape \(2, 81, 16\) and dtype"):
        stack.update_(upd, z, inj.double(), w)
    with pytest.raises(ValueError, match=r"kernels must be one of \('fused', 'eager'\)"):
        stack.update_(upd, z, inj, w, kernels="compiled")
    with pytest.raises(ValueError, match=r"token_mix: w_gate_up must have h's dtype"):
        stack.update_(upd, z, inj, stack.weights(torch.float64))


# ---- on a GPU (scripts/gpu_suite.sh runs pytest -m gpu) -----------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_update_on_cuda_matches_eager(dtype):
    _require("triton", "cuda")
    seed = random.randrange(2**31)
    stack = _stack(seed, hidden=512, device="cuda")
    z0, inj = _latents(seed, 64, hidden=512, device="cuda")
    assert stack.weights(dtype)[0].t_packed is not None
    z_f, upd_f = _run(stack, z0, inj, "fused", "auto", 3, seed, dtype=dtype)
    z_e, upd_e = _run(stack, z0, inj, "eager", None, 3, seed, dtype=dtype)
    z_64, _ = _run(stack, z0.double(), inj.double(), "eager", None, 3, seed)
    if dtype == torch.float32:
        err = float((z_f.double() - z_64).abs().max() / z_64.abs().max())
        assert err < 2e-5, f"seed {seed}: {err:.3g}"
    else:
        err_f = float((z_f.double() - z_64).pow(2).mean().sqrt())
        err_e = float((z_e.double() - z_64).pow(2).mean().sqrt())
        assert err_f <= err_e, f"seed {seed}: fused {err_f:.3g} > eager {err_e:.3g}"


@pytest.mark.gpu
def test_fused_updates_capture_in_a_cuda_graph():
    """K fused updates captured once and replayed: the eager loop's iterates and counter."""
    _require("triton", "cuda")
    seed = random.randrange(2**31)
    stack = _stack(seed, hidden=512, device="cuda")
    z0, inj = _latents(seed, 8, hidden=512, device="cuda")
    z0, inj = z0.bfloat16(), inj.bfloat16()
    w = stack.weights(torch.bfloat16)
    K = 4
    z_e = z0.clone()
    upd_e = eqk.LoopedUpdate(8, damping=0.9, noise_std=0.02, seed=seed, device="cuda")
    for _ in range(2 * K):
        stack.update_(upd_e, z_e, inj, w)
    z_g = z0.clone()
    upd_g = eqk.LoopedUpdate(8, damping=0.9, noise_std=0.02, seed=seed, device="cuda")
    stack.update_(upd_g, z0.clone(), inj, w)  # warm-up (compiles) on a scratch copy
    upd_g.step_counter.zero_()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s), torch.cuda.graph(graph):
        for _ in range(K):
            stack.update_(upd_g, z_g, inj, w)
    z_g.copy_(z0)
    upd_g.step_counter.zero_()
    graph.replay()
    graph.replay()
    torch.cuda.synchronize()
    assert int(upd_g.step_counter) == 2 * K
    assert torch.equal(z_g, z_e), f"seed {seed}"
