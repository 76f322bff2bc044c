"""Jacobian regularisation: a Hutchinson estimate of ||J_f(z*)||_F^2 / n as a loss term.

Penalising the Frobenius norm of the block's Jacobian at the fixed point keeps f
contractive around z* (fewer solver steps, stable training; Bai et al. 2021). With probes
v ~ N(0, I) (or Rademacher), E ||v^T J||^2 = ||J||_F^2, and one VJP per probe estimates it.

The term is computed on its own evaluation f(z*) at the detached fixed point, with
create_graph=True, so its gradient reaches the parameters through f(z*) and does not
depend on the backward mode used for z* itself (implicit, phantom, ...).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

PROBES = ("gaussian", "rademacher")


def _probe(shape, kind, generator, like):
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def jacobian_reg(f: Callable, z: torch.Tensor, *, n_probes: int = 1, probe: str = "gaussian",
                 generator: Optional[torch.Generator] = None,
                 create_graph: bool = True) -> torch.Tensor:
    """Hutchinson estimate of ||J_f(z)||_F^2 / z.numel(), a scalar tensor.

    f: (B, ...) -> same shape; z: (B, ...) point (detached here). For a sample-wise f this
    is the mean over samples of ||J_b||_F^2 / n (n = features per sample); for a block that
    mixes samples it is the whole batch map's ||J||_F^2 / (B n) (torchdeq's normalisation).
    n_probes: random vectors averaged; probe: "gaussian" | "rademacher";
    generator: torch.Generator on z's device for the probes (the global one by default).
    create_graph: keep the graph so the estimate can be trained on (gradients reach f's
    parameters through the recorded f(z)).
    """
    if not isinstance(n_probes, int) or isinstance(n_probes, bool) or n_probes < 1:
        raise ValueError(f"n_probes must be an int >= 1, got {n_probes!r}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor, got "
                        f"{z.dtype if isinstance(z, torch.Tensor) else type(z).__name__}")
    with torch.enable_grad():
        zr = z.detach().requires_grad_()
        fz = f(zr)
        if not isinstance(fz, torch.Tensor) or fz.shape != zr.shape:
            raise ValueError(f"f(z) must return a tensor shaped like z {tuple(zr.shape)}, got "
                             f"{tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz)}")
        return jac_reg_from_outputs(fz, zr, n_probes=n_probes, probe=probe,
                                    generator=generator, create_graph=create_graph)


def jac_reg_from_outputs(fz: torch.Tensor, z: torch.Tensor, *, n_probes: int = 1,
                         probe: str = "gaussian", generator: Optional[torch.Generator] = None,
                         create_graph: bool = True) -> torch.Tensor:
    """As jacobian_reg, from an already recorded fz = f(z) with z a leaf requiring grad."""
    total = fz.new_zeros(())
    for k in range(n_probes):
        v = _probe(z.shape, probe, generator, fz)
        vjp, = torch.autograd.grad(fz, z, v, retain_graph=create_graph or k < n_probes - 1,
                                   create_graph=create_graph)
        total = total + vjp.square().sum()
    return total / (n_probes * z.numel())


class JacobianRegularizer:
    """The DEQ option: jacobian_reg at z* in a fraction `freq` of training forwards.

    freq: probability in (0, 1] that a training forward computes the term (torchdeq's
    jac_loss_freq), drawn from this object's own generator (seeded by `seed`), so the
    global RNG stream is untouched and every DDP rank makes the same draws.
    Calling it returns the estimate, or a zero scalar (no graph) when the draw skips it.
    """

    def __init__(self, freq: float = 1.0, n_probes: int = 1, probe: str = "gaussian",
                 seed: int = 0):
        if isinstance(freq, bool) or not isinstance(freq, (int, float)) or not 0 < freq <= 1:
            raise ValueError(f"jac_reg_freq must be a number in (0, 1], got {freq!r}")
        if not isinstance(n_probes, int) or isinstance(n_probes, bool) or n_probes < 1:
            raise ValueError(f"jac_reg_probes must be an int >= 1, got {n_probes!r}")
        if probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
        self.freq, self.n_probes, self.probe, self.seed = float(freq), n_probes, probe, seed
        self._draws = torch.Generator().manual_seed(seed)
        self._probes = {}  # device -> generator

    def _generator(self, device):
        if device not in self._probes:
            self._probes[device] = torch.Generator(device=device).manual_seed(self.seed + 1)
        return self._probes[device]

    def __call__(self, f: Callable, z_star: torch.Tensor) -> torch.Tensor:
        if self.freq < 1 and float(torch.rand((), generator=self._draws)) >= self.freq:
            return z_star.new_zeros(())
        return jacobian_reg(f, z_star, n_probes=self.n_probes, probe=self.probe,
                            generator=self._generator(z_star.device))
