"""The LP domain: generated programs are feasible, bounded and correctly labelled (checked by an
independent solve and by duality), the implicit GNN is permutation-equivariant and trains."""
import os
import random
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

from domains.domain import RunConfig  # noqa: E402
from domains.lp import DOMAIN, constraint_excess, objective_gap  # noqa: E402
from domains.lp_data import (MIN_ABS_OBJECTIVE, lp_instances, objective_by_duality,  # noqa: E402
                             solve_lp, split_instance)
from domains.train import train  # noqa: E402
from grad_checks import assert_finite_nonzero_grads  # noqa: E402

NUM_VARS, NUM_CONS = 7, 5


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


def tiny_config(**changes) -> RunConfig:
    cfg = RunConfig(train_iters=4, train_steps=40, batch_size=32, lr=1e-2, warmup_steps=5,
                    n_train=64, n_test=16, eval_max_iters=40,
                    model=dict(width=16, hidden=32, damping=0.5, backward="phantom"),
                    data=dict(num_vars=NUM_VARS, num_cons=NUM_CONS, max_slack=0.3))
    return cfg.with_overrides(**changes)


def numpy_instance(data, k):
    A, b, c = split_instance(data["input"].double())
    return A[k].numpy(), b[k].numpy(), c[k].numpy()


def test_generated_lps_are_feasible_bounded_and_optimally_labelled():
    data = lp_instances(12, NUM_VARS, NUM_CONS, seed=random.randrange(2**31))
    assert data["input"].shape == (12, NUM_CONS + 1, NUM_VARS + 1)
    assert data["input"].dtype == torch.float32 and data["x_star"].shape == (12, NUM_VARS)
    assert torch.all(data["input"][:, NUM_CONS, NUM_VARS] == 0)
    for k in range(12):
        A, b, c = numpy_instance(data, k)
        x0, x_star = data["interior"][k].numpy(), data["x_star"][k].double().numpy()
        objective, duals = data["objective"][k].item(), data["duals"][k].numpy()
        # Feasible (strictly, at x0) and scaled as documented.
        assert np.all(A @ x0 < b) and np.all((0 < x0) & (x0 < 1))
        np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(c), 1.0, rtol=1e-6)
        # The label is feasible and attains the objective.
        assert np.all(A @ x_star <= b + 1e-6) and np.all((x_star >= -1e-7) & (x_star <= 1 + 1e-7))
        assert c @ x_star == pytest.approx(objective, abs=1e-6)
        assert abs(objective) >= MIN_ABS_OBJECTIVE
        # Optimal: the duals certify it (weak duality is tight) and interior point agrees.
        assert np.all(duals <= 1e-12)
        assert objective_by_duality(A, b, c, duals) == pytest.approx(objective, abs=1e-8)
        assert solve_lp(A, b, c, method="highs-ipm").fun == pytest.approx(objective, abs=1e-7)


def test_dual_bound_is_below_the_objective_of_any_feasible_point():
    data = lp_instances(4, NUM_VARS, NUM_CONS, seed=random.randrange(2**31))
    for k in range(4):
        A, b, c = numpy_instance(data, k)
        some_duals = -np.random.default_rng(k).uniform(0, 1, NUM_CONS)
        assert objective_by_duality(A, b, c, some_duals) <= c @ data["interior"][k].numpy()


def test_generator_is_deterministic_in_its_seed():
    seed = random.randrange(2**31)
    first, again = (lp_instances(5, NUM_VARS, NUM_CONS, seed) for _ in range(2))
    other = lp_instances(5, NUM_VARS, NUM_CONS, seed + 1)
    for key in first:
        torch.testing.assert_close(first[key], again[key], rtol=0, atol=0)
    assert not torch.equal(first["input"], other["input"])
    with pytest.raises(ValueError, match="num_cons"):
        lp_instances(3, NUM_VARS, 0, seed)
    with pytest.raises(ValueError, match="max_slack"):
        lp_instances(3, NUM_VARS, NUM_CONS, seed, max_slack=0.0)


def test_metrics_of_the_optimum_and_of_the_interior_point():
    data = lp_instances(6, NUM_VARS, NUM_CONS, seed=random.randrange(2**31))
    x_star = data["x_star"].double()
    assert objective_gap(x_star, data).max().item() < 1e-6
    assert constraint_excess(x_star, data).max().item() < 1e-6
    x0 = data["interior"]
    _, _, c = split_instance(data["input"].double())
    expected = ((c * x0).sum(1) - data["objective"]).abs() / data["objective"].abs()
    torch.testing.assert_close(objective_gap(x0, data), expected)
    assert constraint_excess(x0, data).max().item() == 0
    outside = torch.ones_like(x0)  # the all-ones corner violates some row of some instance
    A, b, _ = split_instance(data["input"].double())
    torch.testing.assert_close(constraint_excess(outside, data), (A.sum(2) - b).clamp_min(0))
    extras = DOMAIN.extra_metrics(outside, data)
    assert set(extras) == {"constraint_violation"} and extras["constraint_violation"].shape == (6,)


def test_forward_and_backward_give_finite_nonzero_gradients_for_every_parameter():
    cfg = tiny_config()
    data = DOMAIN.make_data(8, random.randrange(2**31), cfg)
    model = DOMAIN.build_model(cfg)
    pred = model(DOMAIN.model_input(model, data))
    assert pred.shape == (8, NUM_VARS) and torch.all((pred > 0) & (pred < 1))
    loss = DOMAIN.loss(pred, data)
    assert torch.isfinite(loss)
    loss.backward()
    assert_finite_nonzero_grads(model)
    with pytest.raises(ValueError, match="u must have shape"):
        model(data["input"][:, :, :-1])


def test_float64_copy_runs_in_float64():
    cfg = tiny_config()
    data = DOMAIN.make_data(4, random.randrange(2**31), cfg)
    model = DOMAIN.build_model(cfg)
    with torch.no_grad():
        pred32 = model(data["input"], 6)
        pred64 = model.double()(data["input"].double(), 6)
    assert pred64.dtype == torch.float64
    torch.testing.assert_close(pred64.float(), pred32, rtol=0, atol=1e-4)


def test_permuting_variables_or_constraints_permutes_the_solution():
    cfg = tiny_config()
    u = DOMAIN.make_data(5, random.randrange(2**31), cfg)["input"]
    model = DOMAIN.build_model(cfg)
    var_perm, con_perm = torch.randperm(NUM_VARS), torch.randperm(NUM_CONS)
    col_order = torch.cat([var_perm, torch.tensor([NUM_VARS])])
    row_order = torch.cat([con_perm, torch.tensor([NUM_CONS])])
    with torch.no_grad():
        pred = model(u, 12)
        torch.testing.assert_close(model(u[:, :, col_order], 12), pred[:, var_perm],
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(model(u[:, row_order], 12), pred, rtol=0, atol=1e-5)


def test_a_few_training_steps_reduce_the_loss():
    cfg = tiny_config()
    data = DOMAIN.make_data(cfg.n_train, random.randrange(2**31), cfg)
    model = DOMAIN.build_model(cfg)
    log = train(DOMAIN, model, data, cfg, device=torch.device("cpu"), progress=False)
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
