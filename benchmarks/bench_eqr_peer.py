"""EqR's own forward against our reasoner on the same weights (CPU or GPU), Sudoku or Maze.

    EQR_DIR=/path/to/EqR python benchmarks/bench_eqr_peer.py [--batches 1,8,64] [--out md]
    EQR_DIR=... python benchmarks/bench_eqr_peer.py --task maze --batches 1,64
    EQR_DIR=... python benchmarks/bench_eqr_peer.py --device cuda --batches 1,64,768 --dtypes bfloat16
    python benchmarks/bench_eqr_peer.py --dry-run [--task maze]   # tiny model, every column (CI)

EQR_DIR is a checkout of github.com/locuslab/EqR (read from a scratch folder, never part of
this repository; its models/ need pydantic and colorama). Without it the script says so and
exits 0 (a dry run then times our columns alone; a dry run has every column). The model
(--task): the Sudoku recipe (hidden 512, 2 layers, H_cycles 3, L_cycles 6, mlp_t, 81 tokens)
or the Maze-Unique recipe (EqR's eqr_maze_unique.yaml: hidden 128, 8 heads, 1 layer, H_cycles
3, L_cycles 4, attention with 1-D RoPE over 900 tokens), noise 0.01: EqR's `InnerNetwork` is
built and its weights loaded into our `Reasoner` (reasoner.checkpoint.load_eqr_state_dict).
One timed call = one reasoning step (H_cycles x (L_cycles + 1) block updates: 21 Sudoku, 15
Maze) from the same starts and tokens. On CUDA EqR's attention calls flash_attn; where that
package is not installed its flash_attn_func is replaced by SDPA (flash kernels through
PyTorch), and the table says so. Columns (--paths; default: eqr,ours on CPU, all of them on
CUDA; the maze model has no fused columns: its attention is SDPA's kernel):
  eqr           EqR's `inner(carry, batch)` under torch.no_grad (its eager evaluation);
  eqr_compile   the same under torch.compile(inner, dynamic=False), as EqR's evaluate.py runs it;
  eqr_graphs    torch.compile(inner, mode="reduce-overhead", dynamic=False): + CUDA graphs;
  ours          `model(tokens, carry, steps=1, grad="none")`, kernels="eager" (the eager block,
                fused update);
  fused         the same with kernels="fused" (the fused block ops);
  fused_graphs  kernels="fused", the step replayed as a CUDA graph (model.step_runner; the
                carry copied into its static buffers, then the heads);
  compile       kernels="compile" (the step under torch.compile(fullgraph=True)).
Calls alternate between the columns within each repeat (interleaved), so a load change on a
shared machine hits all; the table gives medians. Compiled columns are warmed up first (their
compile times are printed). Agreement: with the noise off, EqR and our eager / fused /
fused_graphs paths run one step from the same starts; the relative error of the logits is
printed against EqR in the same dtype and against EqR in float32 (the worst of our paths; see
the table's note); our compile path is checked against our eager path with the same noise
seed. A disagreement beyond tolerance makes the script exit 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from timing import (environment_lines, median, report, setup_device, synchronize, time_call,
                    use_repo_checkout)

use_repo_checkout()
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "python"))

ARCH = dict(name="eqr@EqRModel", H_cycles=3, L_cycles=6, H_layers=0, L_layers=2, hidden_size=512,
            expansion=4, num_heads=8, pos_encodings="none", mlp_t=True, lambda_=0.95,
            noise_scale=0.01, H_init_std=1.0, L_init_std=1.0, halt_max_steps=16,
            halt_exploration_prob=0.1, rms_norm_eps=1e-5)
MAZE_ARCH = dict(ARCH, L_cycles=4, L_layers=1, hidden_size=128, pos_encodings="rope",
                 board_height=None, board_width=None, mlp_t=False)
# task -> (recipe arch, dry-run arch, seq_len, dry-run seq_len, vocab, input tokens [lo, hi))
TASKS = {"sudoku": (ARCH, dict(ARCH, hidden_size=64, L_layers=1, H_cycles=2, L_cycles=2,
                                expansion=2), 81, 81, 11, (1, 11)),
         "maze": (MAZE_ARCH, dict(MAZE_ARCH, hidden_size=32, num_heads=4, H_cycles=2, L_cycles=2,
                                  expansion=2), 900, 81, 6, (1, 5))}
FUSED_PATHS = ("fused", "fused_graphs")
LABELS = {"eqr": "EqR", "eqr_compile": "EqR compile", "eqr_graphs": "EqR compile+graphs",
          "ours": "ours", "fused": "fused", "fused_graphs": "fused+graphs", "compile": "ours compile"}
EQR_PATHS = ("eqr", "eqr_compile", "eqr_graphs")
DEFAULT_PATHS = {"cpu": "eqr,ours", "cuda": ",".join(LABELS)}
SEED = 0


def import_eqr(eqr_dir: str, device_type: str):
    """EqR's InnerNetwork, EqRConfig, LatentCarry from its checkout (models/eqr.py), and a note
    when its CUDA attention had to run through SDPA (flash_attn not installed)."""
    sys.path.insert(0, eqr_dir)
    from models.eqr import EqRConfig, InnerNetwork, LatentCarry  # the reference code
    note = ""
    if device_type == "cuda":
        import models.layers as eqr_layers
        if eqr_layers.flash_attn_func is None:
            eqr_layers.flash_attn_func = _sdpa_flash_attn
            note = ("flash_attn is not installed: EqR's CUDA attention (flash_attn_func) runs "
                    "through SDPA here")
    return (InnerNetwork, EqRConfig, LatentCarry), note


def _sdpa_flash_attn(q, k, v, causal=False):
    """flash_attn_func's signature on SDPA: q, k, v (B, L, heads, d) -> (B, L, heads, d)."""
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return out.transpose(1, 2)


def build_pair(eqr_mod, arch, dtype: str, batch: int, seq_len: int, vocab: int):
    """(EqR's InnerNetwork or None, our model on its weights) on the CPU, random init (seed 0)."""
    from reasoner.checkpoint import config_from_eqr, load_eqr_state_dict
    from reasoner.model import Reasoner, ReasonerConfig
    torch.manual_seed(0)
    arch = dict(arch, forward_dtype=dtype)
    if eqr_mod is None:  # our columns alone (a dry run without EqR)
        attention = not arch["mlp_t"]
        cfg = ReasonerConfig(seq_len=seq_len, vocab=vocab, hidden=arch["hidden_size"],
                             layers=arch["L_layers"], expansion=float(arch["expansion"]),
                             H_cycles=arch["H_cycles"], L_cycles=arch["L_cycles"],
                             damping=arch["lambda_"], noise_std=arch["noise_scale"],
                             attention=attention, heads=arch["num_heads"],
                             pos_encoding=arch["pos_encodings"] if attention else "none",
                             latent_dtype=dtype)
        return None, Reasoner(cfg).eval()
    InnerNetwork, EqRConfig, _ = eqr_mod
    eqr = InnerNetwork(EqRConfig(batch_size=batch, seq_len=seq_len, vocab_size=vocab,
                                 **{k: v for k, v in arch.items() if k != "name"})).eval()
    with torch.no_grad():  # a trained-looking halting head instead of EqR's zero init
        eqr.q_head.weight.normal_(0, 0.02)
    state = eqr.state_dict()
    cfg, _ = config_from_eqr(arch, state, seq_len=seq_len)
    ours = Reasoner(cfg).eval()
    load_eqr_state_dict(ours, state)
    return eqr, ours


def our_call(path: str, model, tokens, z_H, z_L):
    """A no-argument function running one reasoning step of `path` from (z_H, z_L); returns
    the logits. The noise settings are read from model.cfg when the function is made."""
    if path != "fused_graphs":
        kernels = {"ours": "eager"}.get(path, path)

        def run():
            model.kernels = kernels  # one model serves every path
            with torch.no_grad():
                return model(tokens, carry=(z_H, z_L), grad="none", seed=SEED)[0]
        return run
    model.kernels = "fused"
    with torch.no_grad():
        h, l, x = z_H.clone(), z_L.clone(), model.embed(tokens)
        upd = model.new_update(h.shape[0], h.device, SEED)
        runner = model.step_runner(upd, h, l, x, model.L_level.weights(model.cfg.dtype),
                                   path="fused")

    def run_graph():
        with torch.no_grad():
            h.copy_(z_H)
            l.copy_(z_L)
            runner.run(1, 0)
            return model.heads(h)[0]
    run_graph.runner = runner
    return run_graph


def eqr_call(path: str, eqr, LatentCarry, tokens, z_H, z_L, backend: str):
    batch = {"inputs": tokens}
    fn = eqr
    if path == "eqr_compile":
        fn = torch.compile(eqr, dynamic=False, backend=backend)
    elif path == "eqr_graphs":  # CUDA graphs need inductor; a dry run times the plain compile
        fn = torch.compile(eqr, dynamic=False, mode="reduce-overhead") if backend == "inductor" \
            else torch.compile(eqr, dynamic=False, backend=backend)

    def run():
        with torch.no_grad():
            return fn(LatentCarry(z_H.clone(), z_L.clone()), batch)[1]
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), default="sudoku",
                   help="the recipe model: sudoku (token MLP) or maze (attention + RoPE)")
    p.add_argument("--batches", default=None, help="default 1,8,64 (1,2 in a dry run)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--paths", default=None, help=f"comma list of {', '.join(LABELS)}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compiled columns (a dry run: aot_eager)")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny model (hidden 64, 1 layer, H2/L2), 1 repeat: checks the plumbing")
    p.add_argument("--out", default=None, help="also write the table as markdown here")
    args = p.parse_args(argv)
    if args.compile_backend not in torch._dynamo.list_backends(exclude_tags=()):
        p.error(f"--compile-backend: unknown {args.compile_backend!r}; choose from "
                f"{torch._dynamo.list_backends(exclude_tags=())}")
    recipe, dry, seq_len, dry_len, vocab, token_range = TASKS[args.task]
    arch, seq_len = (dry, dry_len) if args.dry_run else (recipe, seq_len)
    if args.dry_run:
        args.repeats, args.dtypes = 1, "float32"
        args.compile_backend = "aot_eager" if args.compile_backend == "inductor" else args.compile_backend
    eqr_dir, eqr_mod, eqr_note = os.environ.get("EQR_DIR"), None, ""
    if not eqr_dir:
        why = ("EQR_DIR is not set: point it at a checkout of github.com/locuslab/EqR to time its "
               "forward against ours")
    else:
        try:
            eqr_mod, eqr_note = import_eqr(eqr_dir, torch.device(args.device).type)
        except ImportError as e:
            why = f"cannot import EqR's models from EQR_DIR={eqr_dir} ({e})"
    if eqr_mod is None:
        if not args.dry_run:
            print(f"{why}; nothing to do.")
            return 0
        print(f"{why}; dry run: our columns only.")
    device = setup_device(args.device, args.threads)
    batches = [int(b) for b in (args.batches or ("1,2" if args.dry_run else "1,8,64")).split(",")]
    dtypes = args.dtypes.split(",")
    default = DEFAULT_PATHS["cuda" if args.dry_run else device.type if device.type in DEFAULT_PATHS else "cpu"]
    paths = (args.paths or default).split(",")
    if arch["mlp_t"] is False and not args.paths:
        paths = [q for q in paths if q not in FUSED_PATHS]
    unknown = [q for q in paths if q not in LABELS]
    if unknown:
        p.error(f"--paths: unknown {unknown}; choose from {list(LABELS)}")
    if eqr_mod is None:
        paths = [q for q in paths if q not in EQR_PATHS]
    ours_paths = [q for q in paths if q not in EQR_PATHS]
    from reasoner import model as model_mod
    model_mod.set_compile_backend(args.compile_backend)

    rows, bad, notes_run = [], [], []
    rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())  # noqa: E731
    for B in batches:
        torch._dynamo.reset()  # every compiled column specialises on this B (as dynamic=False)
        gen = torch.Generator().manual_seed(B)
        tokens = torch.randint(*token_range, (B, seq_len), generator=gen).to(device)
        ref32 = None
        for dt in dtypes:
            eqr, ours = build_pair(eqr_mod, arch, dt, B, seq_len, vocab)
            ours.to(device)
            if eqr is not None:
                eqr.to(device)
            z_H, z_L = (t.to(device) for t in ours.initial_carry(B, generator=torch.Generator().manual_seed(B)))

            # Agreement, noise off in both, against EqR in the same dtype and EqR in float32.
            agree, failed = {}, {}  # failed: path -> why (a column that cannot run here)
            if eqr is not None:
                LatentCarry = eqr_mod[2]
                eqr.L_level.noise_scale, ours.cfg.noise_std = 0.0, 0.0
                with torch.no_grad():
                    e_logits = eqr(LatentCarry(z_H.clone(), z_L.clone()), {"inputs": tokens})[1]
                    if ref32 is None:
                        e32 = eqr if dt == "float32" else \
                            build_pair(eqr_mod, arch, "float32", B, seq_len, vocab)[0].to(device)
                        e32.L_level.noise_scale = 0.0
                        ref32 = e32(LatentCarry(z_H.float(), z_L.float()), {"inputs": tokens})[1]
                eqr32 = rel(e_logits, ref32)
                for q in ours_paths:
                    if q != "compile":  # compiled per noise setting: checked against ours below
                        try:
                            o = our_call(q, ours, tokens, z_H, z_L)()
                        except Exception as err:  # noqa: BLE001 -- reported, the others go on
                            failed[q] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                            continue
                        agree[q] = (rel(o, e_logits), rel(o, ref32))
                eqr.L_level.noise_scale, ours.cfg.noise_std = arch["noise_scale"], arch["noise_scale"]
                same = max((a for a, _ in agree.values()), default=0.0)
                ours32 = max((b for _, b in agree.values()), default=0.0)
                # float32: rounding only. bfloat16: no further from EqR-float32 than EqR-bf16 is (x1.5).
                for q, (s_, o32) in agree.items():
                    if (dt == "float32" and s_ > 1e-4) or o32 > 1.5 * eqr32 + 1e-3:
                        bad.append((B, dt, q, s_, o32, eqr32))

            calls, warm, first = {}, {}, {}
            for q in paths:  # warm-up: compiles, Triton JIT, graph capture
                if q in failed:
                    continue
                t0 = time.perf_counter()
                try:
                    fn = (eqr_call(q, eqr, eqr_mod[2], tokens, z_H, z_L, args.compile_backend)
                          if q in EQR_PATHS else our_call(q, ours, tokens, z_H, z_L))
                    first[q] = fn()
                    for _ in range(2 if q in ("eqr_graphs", "fused_graphs") else 0):
                        fn()  # reduce-overhead records on its 2nd call; our runner captures on its 2nd
                    synchronize(device)
                except Exception as err:  # noqa: BLE001 -- reported, the others go on
                    failed[q] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                    continue
                calls[q] = fn
                warm[q] = time.perf_counter() - t0
            for q, why in failed.items():
                bad.append((B, dt, q, "failed"))
                notes_run.append(f"B={B} {dt}: {LABELS[q]} FAILED: {why}")
            if "compile" in first and "ours" in first:  # same seed: the same noise stream
                err = rel(first["compile"], first["ours"])
                tol = 1e-4 if dt == "float32" else (1.5 * eqr32 + 1e-3 if eqr is not None else 0.5)
                if err > tol:
                    bad.append((B, dt, "compile vs ours", err, tol))
                notes_run.append(f"B={B} {dt}: ours compile vs ours eager (same noise) {err:.1e}")
            if "fused_graphs" in calls:
                notes_run.append(f"B={B} {dt}: fused+graphs {calls['fused_graphs'].runner.describe()}")
            notes_run.append(f"B={B} {dt}: warm-up s " + ", ".join(f"{LABELS[q]} {warm[q]:.1f}"
                                                                 for q in calls))
            times = {q: [] for q in calls}
            for _ in range(args.repeats):  # interleaved
                for q, fn in calls.items():
                    times[q].append(time_call(fn, device)[0])
            ms = {q: median(v) * 1e3 for q, v in times.items()}
            row = [str(B), dt] + ["failed" if q not in ms else f"{ms[q]:.3f}" if ms[q] < 10
                                  else f"{ms[q]:.1f}" for q in paths]
            if "eqr" in paths and "ours" in paths:
                row.append(f"{ms['eqr'] / ms['ours']:.2f}" if "eqr" in ms and "ours" in ms else "-")
            eqr_fast = [ms[q] for q in ("eqr_compile", "eqr_graphs") if q in ms]
            ours_fast = [ms[q] for q in ours_paths if q in ms]
            if any(q in paths for q in ("eqr_compile", "eqr_graphs")) and ours_paths:
                row.append(f"{min(eqr_fast) / min(ours_fast):.2f}" if eqr_fast and ours_fast else "-")
            if eqr is not None:
                row += [f"{same:.1e}", f"{ours32:.1e} / {eqr32:.1e}"]
            rows.append(row)
            print("  ".join(row), flush=True)
    mixing = "mlp_t" if arch["mlp_t"] else f"attention {arch['num_heads']} heads, {arch['pos_encodings']}"
    name = (f"hidden {arch['hidden_size']}, {arch['L_layers']} layer{'s' * (arch['L_layers'] > 1)}, "
            f"H{arch['H_cycles']}/L{arch['L_cycles']}, {mixing}, {seq_len} tokens")
    steps = arch["H_cycles"] * (arch["L_cycles"] + 1)
    title = ("EqR forward vs ours on EqR's weights" if eqr_mod is not None else "Our reasoner's paths")
    header = [f"{title}: one reasoning step ({steps} block updates), {args.task.capitalize()} "
              f"{'recipe' if not args.dry_run else 'dry-run model'} ({name})"] + \
        environment_lines(device) + \
        [(f"EqR code: {eqr_dir}; " if eqr_mod is not None else "") +
         f"{args.repeats} interleaved repeats, medians; compile backend {args.compile_backend}"] + \
        ([eqr_note] if eqr_note else [])
    headers = ["B", "dtype"] + [f"{LABELS[q]} ms" for q in paths]
    if "eqr" in paths and "ours" in paths:
        headers.append("speedup")
    if any(q in paths for q in ("eqr_compile", "eqr_graphs")) and ours_paths:
        headers.append("vs EqR compiled")
    if eqr_mod is not None:
        headers += ["vs EqR", "vs EqR fp32: ours / EqR's"]
    notes = [] if eqr_mod is None else [
             "speedup = EqR time / our time (> 1: ours faster). Agreement after one step with "
             "the noise off, ||a - b|| / ||b|| of the logits: `vs EqR` against EqR's forward in the "
             "same dtype; `vs EqR fp32: ours / EqR's` against EqR in float32, for our output and "
             "for EqR's own. In float32 the two agree to rounding; in bfloat16 EqR rounds each term "
             f"of its update to bf16 and we round the fused update once, and {steps} updates of these "
             "random-init weights amplify any rounding, so the bf16 check is that ours is no further "
             "from float32 than EqR's own bf16 run (x1.5)."]
    if len(paths) > 2:
        notes.append(("vs EqR compiled = EqR's fastest compiled column / our fastest column. "
                      "Agreement columns: the worst of our eager / fused / fused+graphs paths. "
                      if eqr_mod is not None else "") +
                     "fused+graphs holds the weights cast once (as an evaluation run does); "
                     "the other columns cast them per call.")
    notes += [""] + notes_run
    report(header, headers, rows, notes, args.out)
    if bad:
        print(f"columns failed or outputs disagree beyond tolerance: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
