"""torchdeq programs run on eqkernels with ONLY their torchdeq import lines changed.

Each program in programs/ (our small re-implementations of torchdeq's docs sample, README
quick start and the deq-zoo models, with their launch flags) trains a few steps on real
torchdeq and on eqkernels.compat.torchdeq from the same seed; the losses agree within what
per-sample stopping and the solver tolerances explain. Test sizes: the launch flags with
fewer solver steps where a run would take long (with_flags)."""
import pytest
import torch

import tdq_programs

pytest.importorskip("torchdeq")

# Relative loss agreement per training step. deq-seq solves to rel 1e-3 (f_tol and b_tol of
# deq_seq_ift.sh), so its losses may differ at that order: per-sample stopping ends each
# sample's solve at its own step and the IFT adjoint is solved to 1e-3; the others use
# tolerances far below their loss scale.
LOSS_RTOL = {"deq_seq": 5e-3}
DEFAULT_RTOL = 1e-4


def _argv(name):
    prog = tdq_programs.load(name, "torchdeq")
    smaller = {"deq_flow": dict(f_max_iter=12, n_states=3),
               "mdeq": dict(f_max_iter=12)}.get(name)
    return tdq_programs.with_flags(prog.ARGV, **smaller) if smaller else prog.ARGV


def _check_deq_seq(out, warned):
    assert out["backward_infos"] == 2  # IFT's adjoint solves reported their statistics
    assert len(out["final_rel"]) == 4  # solver_stat_from_final_step: (B,)


def _check_deq_inr(out, warned):
    # deq-inr's own keyword verbose= reaches deq(...), which torchdeq swallows
    assert any("'verbose' is not an argument" in w for w in warned), warned
    # from the second step on the solver is skipped with solver_kwargs={'f_max_iter': 0}
    assert out["forward_steps"][0] > 0 and out["forward_steps"][1:] == [0.0, 0.0]


def _check_mdeq(out, warned):
    assert any("'writer' is not an argument" in w and "backward_writer" in w
               for w in warned), warned


def _check_deq_ddim(out, warned):
    assert any("anderson_solver: 'beta' is not an option" in w for w in warned), warned


def _check_ignn(out, warned):
    # its own matrices are normalised (register_norm_module), in torchdeq's names
    assert "ig1.W_orig" in out["params"] and "ig1.W_g" in out["params"]
    assert not any("normalised nothing" in w for w in warned), warned


CHECKS = {"deq_seq": _check_deq_seq, "deq_inr": _check_deq_inr, "mdeq": _check_mdeq,
          "deq_ddim": _check_deq_ddim, "ignn": _check_ignn}


@pytest.mark.parametrize("name", tdq_programs.program_names())
def test_program_trains_on_eqkernels_like_on_torchdeq(name):
    steps = 2 if name in ("deq_flow", "mdeq", "deq_seq") else 3
    results = tdq_programs.run_both(name, steps=steps, seed=0, argv=_argv(name))
    (ours, _, warned), (theirs, _, _) = results["eqk"], results["torchdeq"]
    assert all(torch.isfinite(torch.tensor(ours["losses"]))), ours["losses"]
    assert len(ours["losses"]) == len(theirs["losses"]) == steps
    assert tdq_programs.max_rel_diff(ours["losses"], theirs["losses"]) <= \
        LOSS_RTOL.get(name, DEFAULT_RTOL), (ours["losses"], theirs["losses"])
    if name in CHECKS:
        CHECKS[name](ours, warned)
    if name == "ignn":
        assert ours["params"] == theirs["params"]


def test_only_import_lines_are_rewritten():
    source = (tdq_programs.PROGRAM_DIR / "prog_deq_lm.py").read_text()
    rewritten = tdq_programs.rewrite_imports(source)
    changed = [(a, b) for a, b in zip(source.splitlines(), rewritten.splitlines()) if a != b]
    assert len(source.splitlines()) == len(rewritten.splitlines())
    assert changed and all(a.lstrip().startswith(("from torchdeq", "import torchdeq"))
                           for a, _ in changed)
    assert ("from torchdeq.utils.mem import mem_gc",
            "from eqkernels.compat.torchdeq.utils.mem import mem_gc") in changed
    assert tdq_programs.rewrite_imports("import torchdeq\n") == \
        "import eqkernels.compat.torchdeq as torchdeq\n"
