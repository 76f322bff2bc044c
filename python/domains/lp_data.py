"""Random feasible, bounded linear programs with their optimum from HiGHS.

Every instance is

    min c^T x   s.t.   A x <= b,   0 <= x <= 1,

with A (m, n), b (m,), c (n,). It is feasible by construction: a point x0 is drawn strictly
inside the box and b = A x0 + slack with slack > 0, so x0 is strictly feasible. The box makes it
bounded. Each row of [A | b] is scaled to ||A_i|| = 1 and c to ||c|| = 1: neither changes the
optimal x, and it puts every instance on one scale for the model. An instance whose optimal
objective is nearly 0 is redrawn (|c^T x*| >= MIN_ABS_OBJECTIVE), so the relative objective
gap the LP domain reports never divides by ~0.

The optimum x*, its objective and its duals come from scipy.optimize.linprog(method="highs");
`objective_by_duality` is an independent check of them (tests/test_domains_lp.py).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch
from scipy.optimize import linprog

# Redraw instances whose optimal objective (||c|| = 1) is closer to 0 than this.
MIN_ABS_OBJECTIVE = 0.1
# x0 is drawn uniformly in [INTERIOR_MARGIN, 1 - INTERIOR_MARGIN]^n: strictly inside the box.
INTERIOR_MARGIN = 0.2
# Draws per instance before giving up on |c^T x*| >= MIN_ABS_OBJECTIVE (it holds for ~95%).
MAX_REDRAWS = 100


def lp_instances(n: int, num_vars: int, num_cons: int, seed: int, *,
                 max_slack: float = 0.3) -> Dict[str, torch.Tensor]:
    """n labelled LPs with num_vars variables and num_cons constraints, deterministic in seed.

    max_slack: b = A x0 + slack, slack ~ U(0, max_slack) per row (rows with ||A_i|| = 1); a
      smaller slack makes more constraints active at the optimum.

    Returns
      input: (n, m + 1, v + 1) float32, [[A, b], [c^T, 0]] (m = num_cons, v = num_vars)
      x_star: (n, v) float32, an optimal solution
      objective: (n,) float64, c^T x* as HiGHS reports it
      duals: (n, m) float64, the multipliers y <= 0 of A x <= b (see objective_by_duality)
      interior: (n, v) float64, the strictly feasible point x0 the instance was built around
    """
    if n < 1 or num_vars < 1 or num_cons < 1:
        raise ValueError(f"n, num_vars and num_cons must be >= 1, got n={n}, "
                         f"num_vars={num_vars}, num_cons={num_cons}")
    if not max_slack > 0:
        raise ValueError(f"max_slack must be > 0 (x0 strictly feasible), got {max_slack}")
    rng = np.random.default_rng(seed)
    inputs = np.zeros((n, num_cons + 1, num_vars + 1), dtype=np.float32)
    x_star = np.zeros((n, num_vars), dtype=np.float32)
    objective = np.zeros(n)
    duals = np.zeros((n, num_cons))
    interior = np.zeros((n, num_vars))
    for k in range(n):
        A, b, c, x0, solution = _one_instance(rng, num_vars, num_cons, max_slack)
        inputs[k, :num_cons, :num_vars], inputs[k, :num_cons, num_vars] = A, b
        inputs[k, num_cons, :num_vars] = c
        x_star[k], objective[k] = solution.x, solution.fun
        duals[k], interior[k] = solution.ineqlin.marginals, x0
    return dict(input=torch.from_numpy(inputs), x_star=torch.from_numpy(x_star),
                objective=torch.from_numpy(objective), duals=torch.from_numpy(duals),
                interior=torch.from_numpy(interior))


def split_instance(packed: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """packed (B, m + 1, v + 1) [[A, b], [c^T, 0]] -> A (B, m, v), b (B, m), c (B, v)."""
    if packed.dim() != 3 or packed.shape[1] < 2 or packed.shape[2] < 2:
        raise ValueError(f"packed must have shape (B, m + 1, v + 1) with m, v >= 1, "
                         f"got {tuple(packed.shape)}")
    return packed[:, :-1, :-1], packed[:, :-1, -1], packed[:, -1, :-1]


def solve_lp(A: np.ndarray, b: np.ndarray, c: np.ndarray, method: str = "highs"):
    """scipy's OptimizeResult of min c^T x s.t. A x <= b, 0 <= x <= 1 (method: "highs",
    "highs-ds" dual simplex, "highs-ipm" interior point). Raises if it is not solved."""
    result = linprog(c, A_ub=A, b_ub=b, bounds=(0.0, 1.0), method=method)
    if result.status != 0:
        raise RuntimeError(f"linprog(method={method!r}) did not solve the LP: {result.message}")
    return result


def objective_by_duality(A: np.ndarray, b: np.ndarray, c: np.ndarray, duals: np.ndarray) -> float:
    """The Lagrange dual function at y = duals (y <= 0, scipy's sign for A x <= b):
    g(y) = b^T y + sum_j min(0, (c - A^T y)_j), the box's best x for the reduced costs.
    g(y) <= c^T x for every feasible x (weak duality), with equality iff x and y are optimal."""
    reduced_costs = c - A.T @ duals
    return float(b @ duals + np.minimum(reduced_costs, 0.0).sum())


def _one_instance(rng: np.random.Generator, num_vars: int, num_cons: int, max_slack: float):
    for _ in range(MAX_REDRAWS):
        # Each of A, b, c is rounded to the float32 the model sees, so the label is for that LP;
        # b is rounded up, so x0 stays strictly feasible.
        A = rng.standard_normal((num_cons, num_vars))
        A = _float32_values(A / np.linalg.norm(A, axis=1, keepdims=True))
        x0 = rng.uniform(INTERIOR_MARGIN, 1 - INTERIOR_MARGIN, num_vars)
        b = A @ x0 + rng.uniform(0.0, max_slack, num_cons)
        b32 = b.astype(np.float32)
        b = np.where(b32 < b, np.nextafter(b32, np.float32(np.inf)), b32).astype(np.float64)
        c = rng.standard_normal(num_vars)
        c = _float32_values(c / np.linalg.norm(c))
        solution = solve_lp(A, b, c)
        if abs(solution.fun) >= MIN_ABS_OBJECTIVE:
            return A, b, c, x0, solution
    raise RuntimeError(f"no instance with |c^T x*| >= {MIN_ABS_OBJECTIVE} in {MAX_REDRAWS} draws "
                       f"(num_vars={num_vars}, num_cons={num_cons})")


def _float32_values(v: np.ndarray) -> np.ndarray:
    """v rounded to float32, held as float64."""
    return v.astype(np.float32).astype(np.float64)
