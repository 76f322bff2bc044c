"""The Sudoku reasoning loop in segments (reasoner.reasoning): per-step halting on the device,
compaction at segment boundaries, CUDA-graph replays of whole segments (a stand-in capture on
CPU, the real one on a GPU) -- and the model's compile path and kernel switch."""
import random

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import eqkernels.solvers.segments as segments_mod
import reasoner.model as model_mod
import reasoner.reasoning as reasoning
from reasoner.model import ReasonerConfig, Reasoner as SudokuReasoner
from sudoku.tokens import CELLS, VOCAB_SIZE
from reasoner.reasoning import reasoning_steps

SMALL = dict(hidden=16, layers=1, expansion=2.0, H_cycles=1, L_cycles=2, seq_len=CELLS, vocab=VOCAB_SIZE)
FIELDS = ("pred", "residual", "running", "steps_used", "change", "diverged", "ran")


def _case(seed, noise_std, n=12, device="cpu", **over):
    torch.manual_seed(seed)
    model = SudokuReasoner(ReasonerConfig(**dict(SMALL, noise_std=noise_std, **over))).to(device)
    tokens = torch.randint(1, 11, (n, 81), device=device)
    return model, tokens, model.initial_carry(n, device)


def _run(model, tokens, starts, **kw):
    """Every record of a run, copied: [(t, {field: tensor})]."""
    return [(r.t, {f: getattr(r, f).clone() for f in FIELDS})
            for r in reasoning_steps(model, tokens, starts, **kw)]


def _spread_tol(model, tokens, starts, seed):
    """A halting tolerance that stops some starts early and others late: the median windowed
    latent change of a full-depth run at step 5."""
    rec = _run(model, tokens, starts, depth=5, full_depth=True, seed=seed)[-1][1]
    return float(rec["residual"].median())


def _assert_same(a, b, msg):
    assert [t for t, _ in a] == [t for t, _ in b], msg
    for (t, ra), (_, rb) in zip(a, b):
        for f in FIELDS:
            assert torch.equal(ra[f], rb[f]), f"{msg}: step {t}, {f}"


@pytest.mark.parametrize("K, compact_below", [(4, None), (5, 0.5), (3, 1.0)])
def test_segments_and_late_compaction_keep_per_step_halting(K, compact_below):
    """Noise off (then a start's trajectory does not depend on its batch row): segments of K
    steps with compaction only at their boundaries give exactly the per-step loop's records,
    halting steps included, because halting is decided every step on the device."""
    seed = random.randrange(2**31)
    model, tokens, starts = _case(seed, noise_std=0.0)
    kw = dict(depth=14, seed=seed, halt_tol=_spread_tol(model, tokens, starts, seed), patience=0)
    base = _run(model, tokens, starts, **kw)
    used = base[-1][1]["steps_used"]
    assert len(set(used.tolist())) > 1 and int(used.min()) < 14, f"seed {seed}: no spread {used}"
    seg = _run(model, tokens, starts, segment_steps=K, compact_below=compact_below, **kw)
    _assert_same(base, seg, f"seed {seed}, K {K}")


class _FakeGraph:
    """Stands in for a CUDA graph on the CPU: records fn, replays by calling it."""

    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        self.fn()


def test_captured_segments_replay_the_eager_stream(monkeypatch):
    """Noise on: the same segments, run eagerly or as replays of per-(batch, K) captures,
    draw the same noise stream; compaction makes a new runner (new buffers, new graphs)."""
    seed = random.randrange(2**31)
    model, tokens, starts = _case(seed, noise_std=0.01)
    kw = dict(depth=13, seed=seed, halt_tol=_spread_tol(model, tokens, starts, seed), patience=0,
              segment_steps=4, compact_below=0.9)
    eager = _run(model, tokens, starts, graphs=False, **kw)
    runners = []

    class Captured(segments_mod.SegmentRunner):
        def __init__(self, body, capture, reason, **more):
            super().__init__(body, True, "captured", **more)
            runners.append(self)
    monkeypatch.setattr(segments_mod, "_capture_graph", _FakeGraph)
    monkeypatch.setattr(reasoning, "SegmentRunner", Captured)
    captured = _run(model, tokens, starts, graphs=True, **kw)
    _assert_same(eager, captured, f"seed {seed}")
    assert sum(r.replays for r in runners) >= 1 and sum(r.captures for r in runners) >= 1
    assert len(runners) >= 2, f"seed {seed}: no compaction happened"


def test_all_halted_starts_keep_their_records_to_the_end():
    seed = random.randrange(2**31)
    model, tokens, starts = _case(seed, noise_std=0.01, n=4)
    recs = _run(model, tokens, starts, depth=9, seed=seed, halt_tol=1e9, patience=0,
                segment_steps=2)
    assert [t for t, _ in recs] == list(range(1, 10))
    last = recs[-1][1]
    assert (last["steps_used"] == 3).all() and not last["running"].any() and not last["ran"].any()
    assert torch.equal(last["pred"], recs[2][1]["pred"])


def test_a_start_whose_latent_turns_non_finite_is_flagged_and_never_settles():
    """Finite but huge embeddings overflow the injection of the starts of one token pattern:
    their latents turn NaN, the fused update freezes them; with halting wide open every other
    start stops, those run to the end with an infinite change, flagged diverged."""
    seed = random.randrange(2**31)
    model, tokens, starts = _case(seed, noise_std=0.01, n=6)
    with torch.no_grad():
        model.embed_tokens.weight[0].fill_(3e38)  # token 0: only in starts 0 and 3
    tokens[0, 5] = tokens[3, 7] = 0
    recs = _run(model, tokens, starts, depth=6, seed=seed, halt_tol=1e9, patience=0, segment_steps=2)
    last = recs[-1][1]
    bad = torch.tensor([True, False, False, True, False, False])
    assert torch.equal(last["diverged"], bad), f"seed {seed}"
    assert torch.isinf(last["residual"][bad]).all() and torch.isfinite(last["residual"][~bad]).all()
    assert (last["steps_used"][bad] == 6).all() and (last["steps_used"][~bad] == 3).all()
    assert torch.isinf(last["change"][bad]).all() and last["ran"][bad].all()


def test_bad_segment_options_are_refused():
    model, tokens, starts = _case(0, noise_std=0.0, n=2)
    with pytest.raises(ValueError, match="segment_steps"):
        next(reasoning_steps(model, tokens, starts, depth=2, segment_steps=0))
    with pytest.raises(ValueError, match="compact_below"):
        next(reasoning_steps(model, tokens, starts, depth=2, compact_below=1.5))


# ---- the kernel switch and the compile path ---------------------------------------------------
def test_kernel_switch_resolves_per_device_and_refuses_eager_only_variants():
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    assert model.kernels == "auto" and model.kernel_path("cpu")[0] == "eager"
    model.kernels = "compile"
    assert model.kernel_path("cpu") == ("compile", "requested")
    with pytest.raises(ValueError, match="kernels must be one of"):
        model.kernels = "fast"
    legacy = SudokuReasoner(ReasonerConfig(**dict(SMALL, mlp_t_norm="hidden")))
    assert legacy.kernel_path("cuda")[0] == "eager"
    for kind in ("fused", "compile"):
        with pytest.raises(ValueError, match="mlp_t_norm='hidden'"):
            legacy.kernels = kind
    # The attention model has no fused block; it compiles (auto on a GPU with Triton).
    with pytest.raises(ValueError, match="attention"):
        SudokuReasoner(ReasonerConfig(**dict(SMALL, attention=True, heads=2)), kernels="fused")
    attention = SudokuReasoner(ReasonerConfig(**dict(SMALL, attention=True, heads=2)), kernels="compile")
    assert attention.kernel_path("cpu") == ("compile", "requested")


@pytest.mark.parametrize("kernels", ["eager", "fused"])
def test_whole_forward_traces_without_graph_breaks(kernels):
    """torch.compile(model, fullgraph=True) sees one graph, our ops inside: the token check is
    a device-side assert under compile, the update's host counter is not traced."""
    seed = random.randrange(2**31)
    model, tokens, (h, l) = _case(seed, noise_std=0.01, n=3)
    model.kernels = kernels
    upd = model.new_update(3, seed=seed)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(tokens, carry=(h, l), steps=2, grad="none",
                                                 update=upd)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compile_path_matches_eager_and_does_not_recompile_per_step(monkeypatch):
    """kernels="compile": a reasoning step under torch.compile(fullgraph=True) with the update
    op inside equals the eager step (fp32 rounding), noise stream included, and later steps
    of the run reuse the graph. (Compiled here with aot_eager: inductor's C++ build takes
    minutes on a 2-core CPU; the GPU suite runs inductor.)"""
    seed = random.randrange(2**31)
    model, tokens, carry = _case(seed, noise_std=0.01, n=3, H_cycles=2)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(model_mod, "_COMPILED", [])
    model_mod.set_compile_backend(counter)
    outs = {}
    with torch.no_grad():
        for kind in ("eager", "compile"):
            model.kernels = kind
            outs[kind] = model(tokens, carry=carry, steps=3, grad="none", seed=seed)
    for a, b in zip(outs["eager"][:2] + outs["eager"][2], outs["compile"][:2] + outs["compile"][2]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=f"seed {seed}")
    assert counter.frame_count == 1, f"{counter.frame_count} compiles for 3 steps"
    with pytest.raises(ValueError, match="lie in"):
        model(torch.full((1, 81), 11), grad="none")


def test_step_runner_replays_the_forward_steps(monkeypatch):
    """model.step_runner: k steps on static buffers (stand-in capture on CPU) equal the
    forward's steps from the same carry and seed, refilled and replayed."""
    seed = random.randrange(2**31)
    model, tokens, (h0, l0) = _case(seed, noise_std=0.01, n=3)
    with torch.no_grad():
        want = model(tokens, carry=(h0, l0), steps=2, grad="none", seed=seed)
        with pytest.raises(ValueError, match="CUDA"):
            model.step_runner(None, h0, l0, None, None, capture=True)
        monkeypatch.setattr(segments_mod, "_capture_graph", _FakeGraph)
        h, l, x = h0.clone(), l0.clone(), model.embed(tokens)
        upd = model.new_update(3, seed=seed)
        runner = model.step_runner(upd, h, l, x, model.L_level.weights(torch.float32))
        runner.capture = True  # the stand-in capture: warm-up, capture, replays
        for _ in range(3):
            upd.step_counter.zero_()
            h.copy_(h0), l.copy_(l0)
            runner.run(2, 0)
            assert torch.equal(h, want[2][0]) and torch.equal(l, want[2][1])
            assert torch.equal(model.heads(h)[0], want[0])
    assert (runner.captures, runner.replays, runner.eager_segments) == (1, 2, 1)


def test_eval_cli_takes_kernels_and_refuses_a_variant_without_them(tmp_path, capsys):
    from test_eqr_cli_data import _puzzles, _run, _write_csv
    q, a = _puzzles(2, 7)
    _write_csv(tmp_path / "p.csv", q, a)
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    conf = {k: v for k, v in model.cfg.to_dict().items() if k not in ("latent_dtype", "fixed_init",
                                                                       "mlp_t_norm", "H_init_std",
                                                                       "L_init_std")}
    torch.save(dict(format_version=2, model_config=model.cfg.to_dict(), model=model.state_dict(),
                    ema=model.state_dict()), tmp_path / "ok.pt")
    torch.save(dict(model_config=conf, model=model.state_dict(), ema=model.state_dict()),
               tmp_path / "v1.pt")  # format 1: the legacy mlp_t_norm="hidden" layer, eager only
    base = ["eval", "--data", str(tmp_path / "p.csv"), "--depth", "2", "--full-depth", "--device", "cpu"]
    code, out, err = _run(base + ["--checkpoint", str(tmp_path / "ok.pt"), "--kernels", "fused"], capsys)
    assert code == 0 and "board vote" in out, err
    with pytest.warns(UserWarning, match="format 1"):
        code, out, err = _run(base + ["--checkpoint", str(tmp_path / "v1.pt"), "--kernels", "fused"],
                              capsys)
    assert code == 2 and err.startswith("error: kernels='fused'") and "mlp_t_norm" in err, err
