"""A training run's folder (a checkpoint plus a metrics log) is never overwritten or mixed up.

plan_run_dir decides, before any work and without changing anything, what a new invocation does:
  resume="never"      a folder that already holds a run is refused unless overwrite=True
                      (which starts over: the old checkpoint and log are deleted);
  resume="required"   continue from the checkpoint; none is an error;
  resume="if_exists"  continue if there is a checkpoint, else start a new run (for jobs that
                      are requeued with the same command line); says which it did.
cut_log drops the log rows past the step a run resumes from (the rows a crash after the last
checkpoint left behind), so a resumed run's log has every step once.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from cli_safety.atomic_files import atomic_write

CHECKPOINT = "ckpt.pt"
LOG = "metrics.jsonl"
RESUME_MODES = ("never", "required", "if_exists")


@dataclass(frozen=True)
class RunDirPlan:
    resume: bool        # load the checkpoint and continue
    start_over: bool    # delete what an earlier run left before starting
    note: str           # what was decided, for the user


def plan_run_dir(out: str, *, resume: str, overwrite: bool, checkpoint: str = CHECKPOINT,
                 log: str = LOG) -> RunDirPlan:
    """The plan for run folder `out`, or ValueError naming the flags that decide."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    if overwrite and resume != "never":
        raise ValueError("--overwrite starts over and --resume continues: give one of them")
    ckpt = os.path.join(out, checkpoint)
    has_ckpt = os.path.isfile(ckpt)
    left = [name for name in (checkpoint, log) if os.path.exists(os.path.join(out, name))]
    if resume == "required":
        if not has_ckpt:
            raise ValueError(f"--resume: no checkpoint {ckpt} to resume from; drop --resume to "
                             f"start a new run there (or use --resume-if-exists)")
        return RunDirPlan(True, False, f"resuming from {ckpt}")
    if resume == "if_exists":
        if has_ckpt:
            return RunDirPlan(True, False, f"resuming from {ckpt} (--resume-if-exists)")
        return RunDirPlan(False, bool(left), f"no checkpoint in {out}: starting a new run "
                                             f"(--resume-if-exists)")
    if left and not overwrite:
        what = " and ".join(left)
        hint = ("pass --resume to continue it or --overwrite to start over (deletes them)"
                if has_ckpt else "it stopped before its first checkpoint; pass --overwrite to "
                                 "start over (deletes it)")
        raise ValueError(f"--out {out} already holds a run ({what}); {hint}")
    if left:
        return RunDirPlan(False, True, f"--overwrite: deleted {', '.join(left)} in {out}")
    return RunDirPlan(False, False, f"starting a new run in {out}")


def clear_run(out: str, names=(CHECKPOINT, LOG)) -> None:
    """Delete an earlier run's files (what --overwrite promises, and nothing else)."""
    for name in names:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)


def cut_log(path: str, step: int) -> int:
    """Keep the JSON rows of `path` whose "step" is <= step (atomically); returns how many rows
    were dropped. A torn last line (a crash mid-write) is dropped; a bad line before it is a
    ValueError naming the line."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return 0
    kept = []
    for k, line in enumerate(lines):
        try:
            row = json.loads(line)
            row_step = row["step"]
        except (ValueError, TypeError, KeyError):
            if k == len(lines) - 1:
                continue  # a torn write
            raise ValueError(f"{path} line {k + 1} is not a JSON row with a step: "
                             f"{line[:60]!r}") from None
        if row_step <= step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        with atomic_write(path) as fh:
            fh.write("".join(line + "\n" for line in kept))
    return dropped
