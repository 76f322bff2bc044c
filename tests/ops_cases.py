"""Inputs for the fused ops' registration tests: fresh random mid-run states (seed in the id)."""
import torch

from eqkernels.ops.anderson_mix import AndersonHistory
from eqkernels.ops.block_step import new_step_counter, residual_dtype
from eqkernels.ops.tracking import SolveState


def block_step_args(B, n, dtype, seed, device="cpu", sigma=0.05):
    """Positional arguments of eqk::block_step: a state with live, frozen and diverging rows."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=gen, dtype=torch.float64)
    f_out = z + 0.1 * torch.randn(B, n, generator=gen, dtype=torch.float64)
    if B > 2:
        f_out[1] = float("nan")
    z, f_out = z.to(device, dtype), f_out.to(device, dtype)
    st = SolveState.start(torch.zeros(B, 1, dtype=residual_dtype(dtype), device=device))
    st.active.copy_(torch.rand(B, generator=gen) < 0.8)
    st.nstep.copy_(torch.randint(0, 9, (B,), generator=gen, dtype=torch.int32))
    step = new_step_counter(device, int(torch.randint(0, 1000, (), generator=gen)))
    return (z, f_out, torch.zeros_like(z), st.active, st.converged, st.diverged, st.nstep,
            st.abs_res, st.rel_res, step, seed, 0.9, sigma, 1e-3, bool(seed % 2))


def anderson_args(B, n, m, dtype, seed, device="cpu"):
    """Positional arguments of eqk::anderson_step after a few steps of history."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B, n, generator=gen, dtype=torch.float64).to(device, dtype)
    fz = (0.5 * torch.tanh(z.double()) + 0.1).to(device, dtype)
    st = SolveState.start(z)
    hist = AndersonHistory.empty(z, m)
    hist.X.copy_(torch.randn(B, m, n, generator=gen, dtype=torch.float64))
    hist.G.copy_(0.1 * torch.randn(B, m, n, generator=gen, dtype=torch.float64))
    G = hist.G.double()
    hist.gram.copy_(G @ G.transpose(1, 2))
    hist.count.copy_(torch.randint(0, 2 * m, (B,), generator=gen, dtype=torch.int32))
    st.active.copy_(torch.rand(B, generator=gen) < 0.8)
    st.best_abs.fill_(10.0)
    st.best_rel.fill_(10.0)
    return (z, fz, torch.zeros_like(z), st.active, st.converged, st.diverged, st.nstep,
            st.abs_res, st.rel_res, st.best_abs, st.best_rel, st.best_z, hist.X, hist.G,
            hist.gram, hist.count, 1e-6, bool(seed % 2), 1.0, 1e-4, 10.0)
