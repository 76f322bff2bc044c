"""EqR's own forward against our Sudoku reasoner on the same weights (CPU or GPU).

    EQR_DIR=/path/to/EqR python benchmarks/bench_eqr_peer.py [--batches 1,8,64] [--out md]

EQR_DIR is a checkout of github.com/locuslab/EqR (read from a scratch folder, never part of
this repository; its models/ need pydantic and colorama). Without it the script says so and
exits 0. The model is the Sudoku recipe (hidden 512, 2 layers, H_cycles 3, L_cycles 6,
mlp_t, noise 0.01): EqR's `InnerNetwork` is built and its weights loaded into our
`SudokuReasoner` (sudoku.checkpoint.load_eqr_state_dict). One timed call = one reasoning step
(H_cycles x (L_cycles + 1) = 21 block updates) from the same starts and tokens: EqR's
`inner(carry, batch)` under torch.no_grad (how its evaluation runs it) against our
`model(tokens, carry, steps=1, grad="none")`, for forward_dtype float32 and bfloat16. Calls
alternate EqR / ours within each repeat (interleaved), so a load change on a shared machine
hits both; the table gives medians and the ratio EqR time / our time (> 1: ours faster).
Agreement: with the noise off, both run one step from the same starts; the relative error
of the logits is printed against EqR in the same dtype and against EqR in float32 (see the
table's note); a disagreement beyond tolerance makes the script exit 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from timing import environment_lines, median, report, setup_device, use_repo_checkout

use_repo_checkout()
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "python"))

ARCH = dict(name="eqr@EqRModel", H_cycles=3, L_cycles=6, H_layers=0, L_layers=2, hidden_size=512,
            expansion=4, num_heads=8, pos_encodings="none", mlp_t=True, lambda_=0.95,
            noise_scale=0.01, H_init_std=1.0, L_init_std=1.0, halt_max_steps=16,
            halt_exploration_prob=0.1, rms_norm_eps=1e-5)


def import_eqr(eqr_dir: str):
    """EqR's InnerNetwork, EqRConfig, LatentCarry from its checkout (models/eqr.py)."""
    sys.path.insert(0, eqr_dir)
    from models.eqr import EqRConfig, InnerNetwork, LatentCarry  # the reference code
    return InnerNetwork, EqRConfig, LatentCarry


def build_pair(InnerNetwork, EqRConfig, dtype: str, batch: int):
    from sudoku.checkpoint import config_from_eqr, load_eqr_state_dict
    from sudoku.model import SudokuReasoner
    torch.manual_seed(0)
    arch = dict(ARCH, forward_dtype=dtype)
    eqr = InnerNetwork(EqRConfig(batch_size=batch, seq_len=81, vocab_size=11,
                                 **{k: v for k, v in arch.items() if k != "name"})).eval()
    with torch.no_grad():  # a trained-looking halting head instead of EqR's zero init
        eqr.q_head.weight.normal_(0, 0.02)
    state = eqr.state_dict()
    cfg, _ = config_from_eqr(arch, state)
    ours = SudokuReasoner(cfg).eval()
    load_eqr_state_dict(ours, state)
    return eqr, ours


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the table as markdown here")
    args = p.parse_args(argv)
    eqr_dir = os.environ.get("EQR_DIR")
    if not eqr_dir:
        print("EQR_DIR is not set: point it at a checkout of github.com/locuslab/EqR to time its "
              "forward against ours; nothing to do.")
        return 0
    try:
        InnerNetwork, EqRConfig, LatentCarry = import_eqr(eqr_dir)
    except ImportError as e:
        print(f"cannot import EqR's models from EQR_DIR={eqr_dir} ({e}); nothing to do.")
        return 0
    device = setup_device(args.device, args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    dtypes = args.dtypes.split(",")
    rows, bad = [], []
    rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())  # noqa: E731
    for B in batches:
        gen = torch.Generator().manual_seed(B)
        tokens = torch.randint(1, 11, (B, 81), generator=gen).to(device)
        batch = {"inputs": tokens}
        ref32 = None
        for dt in dtypes:
            eqr, ours = build_pair(InnerNetwork, EqRConfig, dt, B)
            eqr.to(device), ours.to(device)
            z_H, z_L = (t.to(device) for t in ours.initial_carry(B, generator=torch.Generator().manual_seed(B)))

            # Agreement, noise off in both, against EqR in the same dtype and EqR in float32.
            eqr.L_level.noise_scale, ours.cfg.noise_std = 0.0, 0.0
            with torch.no_grad():
                e_logits = eqr(LatentCarry(z_H.clone(), z_L.clone()), batch)[1]
                o_logits = ours(tokens, carry=(z_H, z_L), grad="none")[0]
                if ref32 is None:
                    e32 = eqr if dt == "float32" else build_pair(InnerNetwork, EqRConfig, "float32", B)[0].to(device)
                    e32.L_level.noise_scale = 0.0
                    ref32 = e32(LatentCarry(z_H.float(), z_L.float()), batch)[1]
            same, ours32, eqr32 = rel(o_logits, e_logits), rel(o_logits, ref32), rel(e_logits, ref32)
            eqr.L_level.noise_scale, ours.cfg.noise_std = ARCH["noise_scale"], ARCH["noise_scale"]
            # float32: rounding only. bfloat16: no further from EqR-float32 than EqR-bf16 is (x1.5).
            if (dt == "float32" and same > 1e-4) or ours32 > 1.5 * eqr32 + 1e-3:
                bad.append((B, dt, same, ours32, eqr32))

            def run_eqr():
                with torch.no_grad():
                    return eqr(LatentCarry(z_H.clone(), z_L.clone()), batch)

            def run_ours():
                with torch.no_grad():
                    return ours(tokens, carry=(z_H, z_L), grad="none")

            run_eqr(), run_ours()  # warm-up
            t_eqr, t_ours = [], []
            for _ in range(args.repeats):  # interleaved
                for fn, acc in ((run_eqr, t_eqr), (run_ours, t_ours)):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    fn()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    acc.append(time.perf_counter() - t0)
            me, mo = median(t_eqr), median(t_ours)
            rows.append([str(B), dt, f"{me * 1e3:.1f}", f"{mo * 1e3:.1f}", f"{me / mo:.2f}",
                         f"{same:.1e}", f"{ours32:.1e} / {eqr32:.1e}"])
            print("  ".join(rows[-1]), flush=True)
    header = ["EqR forward vs ours on EqR's weights: one reasoning step (21 block updates), "
              "Sudoku recipe (hidden 512, 2 layers, H3/L6, mlp_t)"] + environment_lines(device) + \
        [f"EqR code: {eqr_dir}; {args.repeats} interleaved repeats, medians"]
    notes = ["speedup = EqR time / our time (> 1: ours faster). Agreement after one step with "
             "the noise off, ||a - b|| / ||b|| of the logits: `vs EqR` against EqR's forward in the "
             "same dtype; `vs EqR fp32: ours / EqR's` against EqR in float32, for our output and "
             "for EqR's own. In float32 the two agree to rounding; in bfloat16 EqR rounds each term "
             "of its update to bf16 and we round the fused update once, and 21 updates of these "
             "random-init weights amplify any rounding, so the bf16 check is that ours is no further "
             "from float32 than EqR's own bf16 run (x1.5)."]
    report(header, ["B", "dtype", "EqR ms", "ours ms", "speedup", "vs EqR",
                    "vs EqR fp32: ours / EqR's"], rows, notes, args.out)
    if bad:
        print(f"outputs disagree beyond tolerance: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
