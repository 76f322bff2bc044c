"""AOT-compiles every Triton kernel of eqkernels for sm_80 and sm_90 without a GPU, over the
constexpr configurations the launchers actually use (their own kernel_config()), and prints
registers, spills, shared memory and stack frame per kernel. Fails on any spill, and on an FMA in a
noiseless block step compiled with fp fusion off (its spec promises the reference's bits).

    python scripts/triton_aot.py [--archs 80,90] [--set quick|ci|full]

--set ci (the default, what .ci/run compiles): every block-step configuration, and the
Anderson ones for m in {1, 6, 16} at small n (1, 4: the small-n large-m tiles that once
spilled) and wide n, float32, plus float64 for two of them; full: the whole grid (~10 min on
2 cores: m = 16 with wide tiles takes ~30 s a compile); quick: a smoke subset.

Registers / shared / local memory: cuobjdump --dump-resource-usage on the cubin; spill
bytes: ptxas -v on the PTX (the ptxas Triton ships). Runs under whichever triton is
installed (CI: the system's and 3.6, the GPU machine's).
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from eqkernels.ops.triton import anderson_mix as tam  # noqa: E402
from eqkernels.ops.triton import block_step as tbs  # noqa: E402

PTR = {torch.float32: "*fp32", torch.float64: "*fp64", torch.bfloat16: "*bf16"}
NVBIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def _tool(name):
    path = os.path.join(NVBIN, name)
    return path if os.path.exists(path) else name


def block_step_cases(which):
    shapes = [(1, 1), (512, 32), (64, 512), (1, 4096), (512, 81 * 512)]
    dtypes = [torch.float32, torch.float64, torch.bfloat16]
    seen = {}
    shapes += [(3, 41473)]  # odd n: each element draws its own pair
    for (B, n), dt, sigma in itertools.product(shapes, dtypes, (0.0, 0.01)):
        cfg = tbs.kernel_config(B, n, dt, sigma, stop_rel=False)
        cfg.pop("chunk")
        key = (dt, cfg["HAS_NOISE"], cfg["PAIRED"] or not cfg["HAS_NOISE"], cfg["BLOCK_B"],
               cfg["BLOCK_N"])
        seen.setdefault(key, (dt, cfg, f"B={B} n={n}"))
    cases = list(seen.values())
    return cases[:4] if which == "quick" else cases


def block_step_finish_cases(which):
    out = []
    for dt, n_chunks in ((torch.float32, 1), (torch.float32, 6), (torch.float64, 11)):
        cfg = tbs.finish_config(n_chunks, stop_rel=False)
        out.append((dt, cfg, f"n_chunks={n_chunks}"))
    return out[:1] if which == "quick" else out


def block_step_finish_source(dt, cfg):
    R = "*fp64" if dt == torch.float64 else "*fp32"
    sig = dict(active_ptr="*i1", converged_ptr="*i1", diverged_ptr="*i1", nstep_ptr="*i32",
               abs_res_ptr=R, rel_res_ptr=R, step_ptr="*i64", ws_ptr="*fp64", B="i32",
               tol="fp64", rel_eps="fp64")
    const = {k: v for k, v in cfg.items() if k != "num_warps"}
    for k in const:
        sig[k] = "constexpr"
    return ASTSource(tbs._block_step_finish_kernel, sig, constexprs=const)


def anderson_cases(which):
    if which == "full":
        grid = itertools.product([(1024, 1), (1024, 4), (256, 33), (64, 256), (8, 4096)],
                                 [1, 3, 6, 16], (torch.float32, torch.float64))
    elif which == "ci":
        grid = [(s, m, torch.float32) for s in [(1024, 1), (1024, 4), (64, 256), (8, 4096)]
                for m in (1, 6, 16)]
        grid += [((1024, 4), 16, torch.float64), ((64, 256), 6, torch.float64),
                 ((256, 8192), 8, torch.float32), ((1024, 1024), 6, torch.float32)]
    else:  # quick: the small-n large-m case that once spilled, and a common one
        grid = [((1024, 4), 16, torch.float32), ((64, 256), 6, torch.float32)]
    seen = {}
    for (B, n), m, dt in grid:
        cfg = tam.kernel_config(B, n, m, stop_rel=False)
        n_chunks = -(-n // cfg["chunk"])
        key = (dt, cfg["M"], cfg["BLOCK_B"], cfg["BLOCK_N"], n_chunks)
        seen.setdefault(key, (dt, cfg, n_chunks, f"B={B} n={n} m={m}"))
    return list(seen.values())


def anderson_sources(dt, cfg, n_chunks):
    """(name, ASTSource, constexprs) of the three Anderson launches."""
    T = PTR[dt]
    common = dict(B="i32")
    dots = dict(z_ptr=T, fz_ptr=T, active_ptr="*i1", count_ptr="*i32", G_ptr=T,
                part_ptr="*fp64", n="i32", chunk="i32", stride_zb="i32", stride_zn="i32",
                stride_fb="i32", stride_fn="i32")
    decide = dict(active_ptr="*i1", converged_ptr="*i1", diverged_ptr="*i1", nstep_ptr="*i32",
                  count_ptr="*i32", abs_res_ptr=T, rel_res_ptr=T, best_abs_ptr=T,
                  best_rel_ptr=T, gram_ptr="*fp64", part_ptr="*fp64", plan_ptr="*fp64",
                  tol="fp64", lam="fp64", restart_growth="fp64", rel_eps="fp64",
                  pivot_rtol="fp64")
    mix = dict(z_ptr=T, fz_ptr=T, out_ptr=T, best_z_ptr=T, X_ptr=T, G_ptr=T, plan_ptr="*fp64",
               n="i32", chunk="i32", stride_zb="i32", stride_zn="i32", stride_fb="i32",
               stride_fn="i32", stride_ob="i32", stride_on="i32", stride_bb="i32",
               stride_bn="i32", beta="fp64")
    out = []
    for name, kern, sig, const in (
            ("anderson_dots", tam._anderson_dots_kernel, dots, tam.stream_config(cfg)),
            ("anderson_decide", tam._anderson_decide_kernel, decide,
             tam.decide_config(cfg, n_chunks)),
            ("anderson_mix", tam._anderson_mix_kernel, mix, tam.stream_config(cfg))):
        const = {k: v for k, v in const.items() if k != "num_warps"}
        full = {}
        for k in kern.arg_names:  # the kernel's argument order
            full[k] = "constexpr" if k in const else (sig.get(k) or common[k])
        out.append((name, ASTSource(kern, full, constexprs=const), const))
    return out


def block_step_source(dt, cfg):
    T, R = PTR[dt], "*fp64" if dt == torch.float64 else "*fp32"
    sig = dict(z_ptr=T, f_ptr=T, out_ptr=T, active_ptr="*i1", step_ptr="*i64", ws_ptr="*fp64",
               B="i32", n="i32", chunk="i32", stride_zb="i32", stride_zn="i32",
               stride_fb="i32", stride_fn="i32", stride_ob="i32", stride_on="i32", seed="i64",
               c_z="fp64", c_f="fp64", sigma="fp64")
    const = {k: v for k, v in cfg.items() if k != "num_warps"}
    for k in const:
        sig[k] = "constexpr"
    return ASTSource(tbs._block_step_kernel, sig, constexprs=const)


def resources(compiled, arch, tmp):
    cubin = os.path.join(tmp, "k.cubin")
    with open(cubin, "wb") as fh:
        fh.write(compiled.asm["cubin"])
    usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", cubin],
                           capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(REG|SHARED|LOCAL|STACK):(\d+)", usage))
    ptx = os.path.join(tmp, "k.ptx")
    with open(ptx, "w") as fh:
        fh.write(compiled.asm["ptx"])
    log = subprocess.run([_tool("ptxas"), f"-arch=sm_{arch}", "-v", ptx, "-o",
                          os.path.join(tmp, "v.cubin")], capture_output=True, text=True)
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", log.stderr)]
    shared = max(int(fields.get("SHARED", 0)), compiled.metadata.shared)
    # STACK in the cubin is not by itself a spill (libdevice's cosf keeps a local array for
    # its large-argument reduction: 32 B under triton 3.6); spills are what ptxas -v reports.
    return (int(fields.get("REG", -1)), sum(spills), shared, int(fields.get("LOCAL", 0)),
            int(fields.get("STACK", 0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="80,90")
    ap.add_argument("--set", dest="which", choices=("quick", "ci", "full"), default="ci",
                    help="which configurations (see the module docstring)")
    args = ap.parse_args()
    archs = [int(a) for a in args.archs.split(",")]
    jobs = ([("block_step", dt, cfg, why, block_step_source(dt, cfg))
             for dt, cfg, why in block_step_cases(args.which)]
            + [("block_step_fin", dt, cfg, why, block_step_finish_source(dt, cfg))
               for dt, cfg, why in block_step_finish_cases(args.which)]
            + [(name, dt, dict(const, num_warps=cfg["num_warps"]), why, src)
               for dt, cfg, n_chunks, why in anderson_cases(args.which)
               for name, src, const in anderson_sources(dt, cfg, n_chunks)])
    print(f"triton {triton.__version__}: {len(jobs)} kernel configurations x sm_{archs}")
    print(f"{'kernel':15} {'dtype':8} {'constexprs':48} {'arch':5} {'regs':>4} {'spill B':>7} "
          f"{'smem B':>7} {'stack':>5} {'fma':>4} {'s':>5}  from")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for (name, dt, cfg, why, src), arch in itertools.product(jobs, archs):
            opts = dict(num_warps=cfg["num_warps"], **tbs.LAUNCH_OPTIONS)
            t0 = time.time()
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)
            dt_s = time.time() - t0
            regs, spill, smem, local, stack = resources(compiled, arch, tmp)
            fma = len(re.findall(r"\bfma\.rn\.f(?:32|64)", compiled.asm["ptx"]))
            shown = {k: (str(v).replace("fp", "f") if k == "W" else int(v) if isinstance(v, bool)
                         else v) for k, v in cfg.items() if k not in ("num_warps", "INTERPRETED")}
            text = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"{name:15} {str(dt)[6:]:8} {text:48} sm_{arch} {regs:4d} {spill:7d} {smem:7d} "
                  f"{stack:5d} {fma:4d} {dt_s:5.1f}  {why}", flush=True)
            if spill or local:
                failures.append(f"{name} {dt} {text} sm_{arch}: {spill} B spilled (ptxas -v), "
                                f"{local} B local memory in the cubin")
            if name == "block_step" and not cfg["HAS_NOISE"] and fma:
                failures.append(f"{name} {dt} {text} sm_{arch}: {fma} FMAs with fp fusion off")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print(f"ok: no spills, no contracted noiseless update ({len(jobs) * len(archs)} compiles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
