"""A small tuning sweep of the looped-transformer block ops' Triton tiles (GPU suite).

    python benchmarks/sweep_looped_tiles.py --device cuda [--batches 768,64] [--out md]
    python benchmarks/sweep_looped_tiles.py --dry-run     # tiny stack, Triton interpreted, CPU

For the Sudoku recipe's stack (eqk.nn.LoopedTransformerStack: 2 layers, 81 tokens, hidden 512,
expansion 4) in bfloat16, one fused update (update_: the whole block and the damped update,
noise on) is timed with each op's candidate tiles (stack.tile_candidates: token_mix, gate_up,
down; the first of each list is the default), one op varied at a time, the others at their
defaults. The table gives, per batch size and op, the default's and the best candidate's time
per update, their ratio, and the block's TFLOP/s with the best tile; the last line per batch
is every op at its best together. Each candidate is a Triton compile: --budget-s stops the
sweep (what is measured so far is reported) before the suite's stage limit does.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if "--dry-run" in sys.argv:  # the kernels run interpreted on the CPU (before triton loads)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from timing import (environment_lines, measure, median, report, setup_device,  # noqa: E402
                    use_repo_checkout)

use_repo_checkout()
import eqkernels as eqk  # noqa: E402
from eqkernels.nn import LoopedTransformerStack  # noqa: E402

RECIPE = dict(layers=2, seq_len=81, hidden=512, expansion=4.0)
DRY = dict(layers=2, seq_len=81, hidden=64, expansion=2.0)
OPS = ("token_mix", "gate_up", "down")


def block_flops(stack: LoopedTransformerStack, batch: int) -> float:
    """FLOPs of one pass of the stack's GEMMs over (batch, T, C) latents."""
    T, C = stack.seq_len, stack.hidden
    layer = stack.layers[0]
    I_t, I = layer.mlp_t.inner, layer.mlp.inner
    return len(stack.layers) * 2.0 * batch * (3 * I_t * T * C + 3 * I * T * C)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", default="768,64")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--updates", type=int, default=10, help="updates per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=80.0)
    p.add_argument("--dry-run", action="store_true", help="tiny stack, 2 candidates an op, CPU")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    shape = DRY if args.dry_run else RECIPE
    if args.dry_run:
        args.device, args.batches, args.dtype, args.updates, args.repeats = "cpu", "2", "float32", 1, 1
    device = setup_device(args.device)
    ok, why = eqk.backends()["triton"]
    if not ok:
        print(f"triton is not usable here ({why}); nothing to sweep.")
        return 0
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    stack = LoopedTransformerStack(shape["layers"], shape["seq_len"], shape["hidden"],
                                   shape["expansion"]).to(device)
    weights = stack.weights(dtype)
    start = time.perf_counter()
    rows, best_all = [], {}
    for B in [int(b) for b in args.batches.split(",")]:
        cands = stack.tile_candidates(B, dtype, device)
        if args.dry_run:
            cands = {op: c[:2] for op, c in cands.items()}
        z0 = torch.randn(B, shape["seq_len"], shape["hidden"], device=device).to(dtype)
        inj = torch.randn_like(z0)
        upd = eqk.LoopedUpdate(B, damping=0.95, noise_std=0.01, seed=0, device=device,
                               backend="triton")

        def per_update(tiles) -> float:
            """Median seconds of one fused update with `tiles` (after a compile/warm-up call)."""
            z = z0.clone()

            def call():
                for _ in range(args.updates):
                    stack.update_(upd, z, inj, weights, backend="triton", tiles=tiles)
            return median(measure(call, device, warmup=1, repeats=args.repeats)) / args.updates

        flops = block_flops(stack, B)
        base = per_update({})
        best = {}
        for op in OPS:
            timed = [(base, cands[op][0])] if cands.get(op) else []
            for tile in cands.get(op, [])[1:]:
                if time.perf_counter() - start > args.budget_s:
                    break
                try:
                    timed.append((per_update({op: tile}), tile))
                except Exception as err:  # noqa: BLE001 -- a tile that fails is reported, not fatal
                    print(f"B={B} {op} {tile}: failed ({type(err).__name__}: {err})", flush=True)
            if not timed:
                continue
            t_best, tile = min(timed)
            best[op] = tile
            rows.append([str(B), op, str(cands[op][0]), f"{base * 1e6:.1f}", str(tile),
                         f"{t_best * 1e6:.1f}", f"{base / t_best:.3f}",
                         f"{flops / t_best / 1e12:.1f}", f"{len(timed)}/{len(cands[op])}"])
            print("  ".join(rows[-1]), flush=True)
        if best:
            t_all = per_update(best)
            rows.append([str(B), "all best", "-", f"{base * 1e6:.1f}", "-", f"{t_all * 1e6:.1f}",
                         f"{base / t_all:.3f}", f"{flops / t_all / 1e12:.1f}", "-"])
            best_all[B] = best
    header = [f"Looped-transformer block ops: Triton tile sweep ({device.type}, {args.dtype})",
              *environment_lines(device),
              f"stack: {shape['layers']} layers, T {shape['seq_len']}, hidden {shape['hidden']}, "
              f"expansion {shape['expansion']}; one fused update (block + damped update, noise on), "
              f"{args.updates} updates per timed call, median of {args.repeats}"
              + ("; dry run: tiny stack, interpreted" if args.dry_run else "")]
    notes = ["Each op's candidates timed with the other ops at their defaults (the first "
             "candidate); ratio = default time / best time (> 1: a better tile than the default); "
             "TFLOP/s of the block's GEMMs at the best tile; tried = candidates timed / listed "
             "(fewer: --budget-s ran out).",
             "best tiles: " + "; ".join(f"B={B}: {b}" for B, b in best_all.items())]
    report(header, ["B", "op", "default tile", "default us", "best tile", "best us", "ratio",
                    "TFLOP/s", "tried"], rows, notes, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
