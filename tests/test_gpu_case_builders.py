"""The GPU tests' and GPU benchmarks' case builders, run on the CPU with device="meta".

An op that mixes a meta tensor with a (non-scalar) CPU tensor raises, as one mixing a CUDA
tensor with a CPU tensor does. So a builder that is right on the CPU but mixes devices
(test_anderson_mix_parity.make_case divided a CUDA tensor by a CPU one, and all 20 of its
GPU cases failed on the first GPU run) fails here without a GPU; and every tensor a builder
hands back must be on the device asked for. The builders' other work (seeded CPU draws) is
what the CPU cases already run."""
import dataclasses
import importlib
import pathlib
import random
import sys

import pytest
import torch

import ops_cases

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
META = torch.device("meta")


def _bench(name):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def _tensors(obj):
    """Every tensor in obj: nested tuples / lists / dicts and dataclasses (SolveState, ...)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name))


def _all_on_meta(built):
    tensors = list(_tensors(built))
    assert tensors, "the builder returned no tensors"
    wrong = [tuple(t.shape) for t in tensors if t.device != META]
    assert not wrong, f"tensors left off the requested device: shapes {wrong}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_anderson_parity_case_builder(dtype):
    amp = importlib.import_module("test_anderson_mix_parity")
    _all_on_meta(amp.make_case(5, 7, 3, dtype, random.randrange(2**31), device="meta"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_block_step_parity_case_builder(dtype):
    bsp = importlib.import_module("test_block_step_parity")
    _all_on_meta(bsp.make_case(5, 7, dtype, random.randrange(2**31), device="meta"))


def test_op_argument_builders():
    seed = random.randrange(2**31)
    _all_on_meta(ops_cases.block_step_args(5, 7, torch.float32, seed, device="meta"))
    _all_on_meta(ops_cases.anderson_args(5, 7, 3, torch.float32, seed, device="meta"))


def test_gpu_benchmark_builders():
    seed = random.randrange(2**31)
    _all_on_meta(_bench("bench_anderson_mix").make_state(6, 9, 3, META, torch.float32, seed))
    f, z0, _ = _bench("bench_solver_overhead").make_problem(6, 9, META, torch.float32, seed)
    _all_on_meta((z0, f(z0), f.Wt, f.x))


def test_meta_mixing_is_caught():
    """The premise: mixing meta and CPU tensors raises, like CUDA and CPU."""
    with pytest.raises(RuntimeError, match="device"):
        torch.zeros(3, device="meta") / (1 + torch.rand(3))


def test_block_loop_times_whole_graph_segments():
    """bench_block_loop once took its step count from a first call that included compilation
    and graph capture: 3 steps at B=1, under one 16-step graph segment."""
    bbl = _bench("bench_block_loop")
    args = bbl.parse_args([])
    K, low = args.graph_steps, bbl.min_steps(args)
    assert low == args.min_segments * K >= 2 * K
    assert bbl.pick_steps(args, 0.67) == low  # a slow step: still the minimum, not 3
    n = bbl.pick_steps(args, 1e-5)            # a fast one: capped, whole segments
    assert n % K == 0 and low <= n <= args.max_steps
    assert bbl.pick_steps(bbl.parse_args(["--max-steps", str(low + K + 1)]), 1e-5) == low + K
    for bad in (3, low - K, low + 1):
        with pytest.raises(ValueError, match="segments"):
            bbl.pick_steps(bbl.parse_args(["--steps", str(bad)]), 1e-3)
