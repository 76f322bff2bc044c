"""Sudoku training: deep supervision runs, checkpoints resume exactly, evaluation aggregates."""
import datetime
import random

import pytest
import torch

from reasoner.evaluate import aggregate, evaluate, log_spaced_depths
from reasoner.model import ReasonerConfig, Reasoner as SudokuReasoner
from sudoku.tokens import CELLS, VOCAB_SIZE
from reasoner.train import TrainConfig, Trainer, load_checkpoint

SMALL = dict(hidden=16, layers=1, expansion=2.0, H_cycles=1, L_cycles=2, seq_len=CELLS, vocab=VOCAB_SIZE)


def _pattern_puzzles(N, gen):
    """Valid solved grids (a shifted pattern, relabelled) with random blanks, encoded."""
    r, c = torch.arange(9)[:, None], torch.arange(9)[None, :]
    base = ((r * 3 + r // 3 + c) % 9).flatten()
    answers = torch.stack([torch.randperm(9, generator=gen)[base] + 2 for _ in range(N)])
    blanks = torch.rand(N, 81, generator=gen) < 0.5
    return torch.where(blanks, torch.ones_like(answers), answers), answers


def _trainer(out, seed, init_seed=None):
    """A small run on data drawn from `seed`; weights and RNG from init_seed (default seed)."""
    torch.manual_seed(seed if init_seed is None else init_seed)
    random.seed(seed)
    q, a = _pattern_puzzles(12, torch.Generator().manual_seed(seed))
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    cfg = TrainConfig(batch_size=4, steps=6, warmup=2, supervision_steps=2, checkpoint_every=3,
                      augment=False, seed=seed)
    return Trainer(model, q, a, cfg, out)


def test_resume_after_interruption_loses_nothing(tmp_path):
    seed = random.randrange(2**31)
    straight = _trainer(str(tmp_path / "a"), seed)
    straight.run(progress=False)
    interrupted = _trainer(str(tmp_path / "b"), seed)
    interrupted.cfg.steps = 4
    interrupted.run(progress=False)  # saves at step 4
    resumed = _trainer(str(tmp_path / "b"), seed, init_seed=seed + 1)  # other weights/RNG: load
    resumed.load(str(tmp_path / "b" / "ckpt.pt"))
    resumed.run(progress=False)
    assert resumed.step == straight.step == 6
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    lines = open(tmp_path / "a" / "metrics.jsonl").read().splitlines()
    assert len(lines) >= 3 and '"cell_acc"' in lines[0]
    model, ckpt = load_checkpoint(str(tmp_path / "a" / "ckpt.pt"))
    assert ckpt["step"] == 6 and isinstance(model, SudokuReasoner)


def test_aggregation_vote_lowest_residual_and_pass_at_b():
    answers = torch.full((2, 81), 5)
    blanks = torch.ones(2, 81, dtype=torch.bool)
    right, wrong = answers[0], torch.full((81,), 6)
    preds = torch.stack([torch.stack([wrong, wrong, right]),   # vote wrong, lowest residual right
                         torch.stack([right, right, wrong])])  # vote right, lowest residual wrong
    residual = torch.tensor([[0.5, 0.6, 0.1], [0.5, 0.6, 0.1]])
    scores = aggregate(preds, residual, answers, blanks)
    assert scores["board"] == {"vote": 0.5, "lowest_residual": 0.5, "pass@3": 1.0}
    assert scores["cell"]["pass@3"] == 1.0


def test_evaluate_depth_breadth_and_adaptive_stopping():
    torch.manual_seed(random.randrange(2**31))
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    q, a = _pattern_puzzles(3, torch.Generator().manual_seed(random.randrange(2**31)))
    full = evaluate(model, q, a, depth=20, breadth=2, full_depth=True)
    assert [r.depth for r in full.results] == log_spaced_depths(20) == [1, 2, 5, 10, 20]
    assert (full.steps_used == 20).all() and full.steps_used.shape == (6,)
    # With the halting thresholds wide open every start stops once its residual window fills.
    early = evaluate(model, q, a, depth=20, breadth=2, halt_tol=1e9, patience=0)
    assert (early.steps_used == 3).all()
    assert set(full.results[-1].board_acc) == {"vote", "lowest_residual", "pass@2"}
    # A tolerance under the noise floor (sqrt(2) * 0.01) could never stop a start: say so.
    with pytest.warns(UserWarning, match="noise floor"):
        evaluate(model, q, a, depth=2, halt_tol=0.01)
    with pytest.raises(ValueError):
        evaluate(model, q, a[:2], depth=5)


def test_evaluate_reports_the_predictions_of_each_depth():
    """Each depth's accuracy is that of the model run to that depth from the same starts
    (noise off), not the final prediction's (a snapshot aliasing the running one did that)."""
    torch.manual_seed(random.randrange(2**31))
    model = SudokuReasoner(ReasonerConfig(**dict(SMALL, noise_std=0.0)))
    q, a = _pattern_puzzles(16, torch.Generator().manual_seed(random.randrange(2**31)))
    seed, depths = random.randrange(2**31), [1, 2, 5, 12]
    report = evaluate(model, q, a, depth=12, depths=depths, full_depth=True, seed=seed)
    starts = model.initial_carry(16, generator=torch.Generator().manual_seed(seed))
    blanks, expected = q == 1, []
    with torch.no_grad():
        for t in depths:
            pred = model(q, carry=starts, steps=t, grad="none")[0].argmax(-1)
            expected.append(float(((pred == a) & blanks).sum() / blanks.sum()))
    assert len(set(expected)) > 1  # the predictions move with depth, so the test can fail
    assert [r.cell_acc["vote"] for r in report.results] == pytest.approx(expected, abs=1e-12)


def test_a_few_training_steps_reduce_the_loss(tmp_path):
    torch.manual_seed(random.randrange(2**31))
    q, a = _pattern_puzzles(8, torch.Generator().manual_seed(random.randrange(2**31)))
    model = SudokuReasoner(ReasonerConfig(**SMALL))
    cfg = TrainConfig(batch_size=8, steps=40, lr=3e-3, weight_decay=0.0, warmup=1,
                      supervision_steps=1, checkpoint_every=1000, augment=False)
    trainer = Trainer(model, q, a, cfg, str(tmp_path))
    losses = [trainer.train_batch()["loss"] for _ in range(40)]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def _sharded_eval_worker(rank, world, tmp, depth, breadth):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))  # fail, never hang CI
    try:
        saved = torch.load(f"{tmp}/case.pt")
        model = SudokuReasoner(ReasonerConfig(**saved["cfg"]))
        model.load_state_dict(saved["state"])
        report = evaluate(model, saved["q"], saved["a"], depth=depth, breadth=breadth)
        torch.save(report, f"{tmp}/report_{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_evaluation_sharded_over_two_gloo_processes_equals_one_process(tmp_path):
    """torch.distributed (gloo, 2 CPU processes): every rank reports the one-process metrics."""
    import torch.multiprocessing as mp
    torch.manual_seed(random.randrange(2**31))
    cfg = dict(SMALL, noise_std=0.0)  # noise keys follow batch rows, which sharding moves
    model = SudokuReasoner(ReasonerConfig(**cfg))
    q, a = _pattern_puzzles(5, torch.Generator().manual_seed(random.randrange(2**31)))
    torch.save(dict(cfg=cfg, state=model.state_dict(), q=q, a=a), tmp_path / "case.pt")
    single = evaluate(model, q, a, depth=6, breadth=2)
    mp.spawn(_sharded_eval_worker, args=(2, str(tmp_path), 6, 2), nprocs=2, join=True)
    for rank in range(2):
        sharded = torch.load(tmp_path / f"report_{rank}.pt", weights_only=False)
        assert [r.depth for r in sharded.results] == [r.depth for r in single.results]
        for r1, r2 in zip(single.results, sharded.results):
            assert r1.board_acc == r2.board_acc and r1.cell_acc == pytest.approx(r2.cell_acc)
            assert r1.mean_residual == pytest.approx(r2.mean_residual, rel=1e-5)
        assert sorted(sharded.steps_used.tolist()) == sorted(single.steps_used.tolist())
        assert sharded.residual_by_step == pytest.approx(single.residual_by_step, rel=1e-5)
