"""The kernel defects found by reading and AOT-compiling the kernels, each with a test that
would catch it (CPU here; the GPU halves are marked gpu and run by scripts/gpu_suite.sh)."""
import importlib.util
import pathlib
import random
import warnings

import pytest
import torch

import eqkernels as eqk
from eqkernels import _backends
from eqkernels.ops import block_step
from ops_cases import anderson_args, block_step_args

ROOT = pathlib.Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
tba = pytest.importorskip("eqkernels.ops.triton.anderson_mix")
tbs = pytest.importorskip("eqkernels.ops.triton.block_step")


def _interpreted():
    if not _backends._usable("triton", torch.device("cpu")):
        pytest.skip(_backends.backends()["triton"][1])


@pytest.mark.parametrize("B", [1, 64, 1024, 65536])
@pytest.mark.parametrize("n", [1, 4, 33, 512, 4096])
@pytest.mark.parametrize("m", [1, 3, 6, 16])
def test_triton_anderson_tiles_are_bounded_for_small_n_large_m(B, n, m):
    """BLOCK_B is capped by the (BLOCK_B, M_PAD, M_PAD) Gram tile too, not only the history
    tile (at B=1024, m=16, n=4 it was 32 samples: 8192 float64 per tile, 34 KB spilled)."""
    cfg = tba.kernel_config(B, n, m, stop_rel=False)
    M_PAD, BB, BN = cfg["M_PAD"], cfg["BLOCK_B"], cfg["BLOCK_N"]
    assert BB * M_PAD * M_PAD <= max(tba._GRAM_ELEMS_GPU, M_PAD * M_PAD)
    assert BB * M_PAD * BN <= max(tba._TILE_ELEMS_GPU, M_PAD * 16)
    assert BB >= 1 and BB & (BB - 1) == 0


def test_triton_launches_run_under_the_tensors_device(monkeypatch):
    """Triton launches on the current device's stream: the launchers enter the tensors'."""
    guard = tbs.launch_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    _interpreted()
    seen = []
    real = tbs.launch_guard

    def spy(device):
        seen.append(device)
        return real(device)
    monkeypatch.setattr(tbs, "launch_guard", spy)
    monkeypatch.setattr(tba, "launch_guard", spy)
    tbs.block_step_triton(*block_step_args(3, 5, torch.float32, 1))
    tba.anderson_step_triton(*anderson_args(3, 5, 2, torch.float64, 1))
    assert seen == [torch.device("cpu")] * 2


def test_triton_launches_turn_fp_fusion_off(monkeypatch):
    """c_z*z + c_f*f and new + sigma*eps must not become FMAs where bit parity is promised."""
    assert tbs.LAUNCH_OPTIONS == {"enable_fp_fusion": False}
    launched = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launched.append((self.kernel, kwargs))
    monkeypatch.setattr(torch.library, "wrap_triton", Recorder)
    tbs.block_step_triton(*block_step_args(3, 5, torch.float32, 2))
    tba.anderson_step_triton(*anderson_args(3, 5, 2, torch.float64, 2))
    assert len(launched) == 5  # block step: update, finish; Anderson: dots, decide, mix
    assert all(kw.get("enable_fp_fusion") is False for _, kw in launched)


@triton.jit
def _offsets_probe(out_ptr, n, stride_b, stride_n, BLOCK_N: tl.constexpr):
    cols = (n - BLOCK_N + tl.arange(0, BLOCK_N))[None, :]  # int32, the last BLOCK_N columns
    rows64 = tl.zeros([1], dtype=tl.int64)
    tl.store(out_ptr + tl.arange(0, BLOCK_N)[None, :],
             tbs._offsets(rows64, cols, stride_b, stride_n))


@pytest.mark.interpreter
def test_triton_column_offsets_are_64_bit():
    """(n - 1) * stride_n >= 2**31 with stride_n < 2**31: the offset must not wrap (only the
    offsets are computed: no 8 GB tensor)."""
    _interpreted()
    n, stride_n = 2**15 + 4, 2**16
    out = torch.zeros(1, 4, dtype=torch.int64)
    _offsets_probe[(1,)](out, n, n * stride_n, stride_n, BLOCK_N=4)
    expect = torch.arange(n - 4, n, dtype=torch.int64)[None, :] * stride_n
    assert (expect >= 2**31).all()
    assert torch.equal(out, expect)


def _setup_module():
    spec = importlib.util.spec_from_file_location("eqk_setup", ROOT / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # setup() itself runs only under __main__
    return mod


def test_build_embeds_ptx_for_the_highest_arch_and_no_fast_math(monkeypatch):
    mod = _setup_module()
    flags = mod.nvcc_flags(["80", "90"])
    assert "-gencode=arch=compute_80,code=sm_80" in flags
    assert "-gencode=arch=compute_90,code=sm_90" in flags
    assert "-gencode=arch=compute_90,code=compute_90" in flags  # PTX: sm_100/120 JIT it
    assert not any("fast_math" in f or f.startswith("-ftz") for f in flags)
    monkeypatch.setenv("EQK_CUDA_ARCHS", "90;80;120")
    assert mod.cuda_archs() == ["80", "90", "120"]
    assert "-gencode=arch=compute_120,code=compute_120" in mod.nvcc_flags(mod.cuda_archs())


def test_no_kernel_image_falls_back_with_a_clear_message(monkeypatch):
    """A CUDA launch that reports no kernel image: warn once, mark the device, rerun the call
    on the next backend, and stop picking "cuda" there."""
    calls = []

    def no_image(z, *args, **kwargs):
        calls.append("cuda")
        raise RuntimeError("block_step: no kernel image for this GPU in eqkernels._C (...)")

    def other(z, *args, **kwargs):
        calls.append("other")
    impls = {"cuda": no_image, "cpp": other, "reference": other, "triton": other}
    monkeypatch.setattr(_backends, "_NO_KERNEL_IMAGE", {})
    fn = _backends.with_fallback("block_step", "cuda", impls)
    z = torch.zeros(2, 3)
    with pytest.warns(RuntimeWarning, match="no image"):
        fn(z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(z)
    assert calls == ["cuda", "other", "other"]
    assert "cpu" in _backends._NO_KERNEL_IMAGE

    def other_error(z):
        raise RuntimeError("CUDA kernel launch failed: out of memory")
    with pytest.raises(RuntimeError, match="out of memory"):  # only no-kernel-image falls back
        monkeypatch.setattr(_backends, "_NO_KERNEL_IMAGE", {})
        _backends.with_fallback("block_step", "cuda", dict(impls, cuda=other_error))(z)


def test_the_cuda_sources_report_no_kernel_image_by_name():
    text = (ROOT / "csrc/cuda/cuda_errors.h").read_text()
    assert "cudaErrorNoKernelImageForDevice" in text and "no kernel image" in text
    for f in ("block_step_binding.cpp", "anderson_mix_binding.cpp"):
        assert "check_launch(" in (ROOT / "csrc/cuda" / f).read_text()


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_a_transposed_z0_reaches_the_kernels_contiguous(backend):
    if not _backends._usable(backend, torch.device("cpu")):
        pytest.skip(_backends.backends()[backend][1])
    seed = random.randrange(2**31)
    gen = torch.Generator().manual_seed(seed)
    W = 0.5 * torch.randn(12, 12, generator=gen, dtype=torch.float64) / 12 ** 0.5
    zt = torch.randn(12, 5, generator=gen, dtype=torch.float64).t()  # (5, 12), not contiguous
    assert not zt.is_contiguous()
    f = lambda z: torch.tanh(z @ W)  # noqa: E731
    for solver in (eqk.anderson, eqk.damped):
        z, info = solver(f, zt, max_iter=40, tol=1e-8, backend=backend)
        z_c, _ = solver(f, zt.contiguous(), max_iter=40, tol=1e-8, backend=backend)
        assert torch.equal(z, z_c), f"{solver.__name__} seed {seed}"


# ---- the GPU halves ----------------------------------------------------------------------

def _gpu(backend):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _backends._usable(backend, torch.device("cuda")):
        pytest.skip(f"{backend}: {_backends.backends()[backend][1]}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_launch_on_a_second_device(backend):
    _gpu(backend)
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU")
    args = block_step_args(8, 300, torch.float32, 3, device="cuda:1")
    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    with torch.cuda.device(0):
        op = torch.ops.eqk.block_step if backend == "cuda" else tbs.block_step_triton_op()
        op(*args)
        torch.cuda.synchronize(1)
    block_step.block_step_ref(ref[0], ref[1], ref[2], _state(ref), damping=ref[11],
                              sigma=ref[12], tol=ref[13], stop_mode="rel" if ref[14] else "abs",
                              step=ref[9], seed=ref[10])
    torch.testing.assert_close(args[2], ref[2], rtol=1e-4, atol=1e-4)


def _state(a):
    from eqkernels.ops.tracking import SolveState
    return SolveState(active=a[3], converged=a[4], diverged=a[5], nstep=a[6], abs_res=a[7],
                      rel_res=a[8], best_abs=a[7], best_rel=a[8], best_z=a[0])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_noiseless_step_is_bitwise_and_keeps_subnormals(backend):
    _gpu(backend)
    args = list(block_step_args(16, 1000, torch.float32, 4, device="cuda", sigma=0.0))
    args[3].fill_(True)
    args[0][0, :10] = torch.tensor([1e-40] * 10)  # float32 subnormals: kept, not flushed
    args[1][0, :10] = torch.tensor([1e-40] * 10)
    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    op = torch.ops.eqk.block_step if backend == "cuda" else tbs.block_step_triton_op()
    op(*args)
    block_step.block_step_ref(ref[0], ref[1], ref[2], _state(ref), damping=ref[11], sigma=0.0,
                              tol=ref[13], stop_mode="rel" if ref[14] else "abs", step=ref[9],
                              seed=ref[10])
    finite = torch.isfinite(ref[2])
    assert torch.equal(args[2][finite], ref[2][finite])
    assert (args[2][0, :10] != 0).all()


@pytest.mark.gpu
def test_gpu_triton_anderson_small_n_large_m():
    _gpu("triton")
    args = anderson_args(1024, 4, 16, torch.float32, 5, device="cuda")
    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    tba.anderson_step_triton_op()(*args)  # compiles and runs (it once spilled 34 KB)
    ref_z = [a.cpu() if isinstance(a, torch.Tensor) else a for a in ref]
    torch.ops.eqk.anderson_step(*ref_z)  # the C++ CPU kernel as the yardstick
    torch.testing.assert_close(args[2].cpu(), ref_z[2], rtol=1e-4, atol=1e-4)
