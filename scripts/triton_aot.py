"""AOT-compiles every Triton kernel of eqkernels for sm_80 and sm_90 without a GPU, over the
constexpr configurations the launchers actually use (their own kernel_config()), and prints
registers, spills, shared memory and stack frame per kernel. Fails on any spill, and on an FMA in a
noiseless block step compiled with fp fusion off (its spec promises the reference's bits).

    python scripts/triton_aot.py [--archs 80,90] [--set quick|ci|full]

--set ci (the default, what .ci/run compiles): every block-step configuration, and the
Anderson ones for m in {1, 6, 16} at small n (1, 4: the small-n large-m tiles that once
spilled) and wide n, float32, plus float64 for two of them; the looped-transformer block ops
(token_mix, swiglu gate_up / down and their cuBLAS-variant epilogues, rmsnorm_update) at the
recipe shapes (B * 81 rows, C = 512, I = 1536, T = 81 with I_t = 256; B = 768 and 1) in bfloat16
and float32: the default tiles, and for bfloat16 at B = 768 every candidate of the GPU suite's
tile sweep; full: the whole grid (~10 min on 2 cores: m = 16 with wide tiles takes ~30 s a
compile) and every candidate; quick: a smoke subset.

Registers / shared / local memory: cuobjdump --dump-resource-usage on the cubin; spill
bytes: ptxas -v on the PTX, run by the ptxas Triton itself compiles with for that arch (a
failing ptxas -v is an error, never "0 spills"). Shared memory must fit the arch's per-block
limit. Kernels are compiled with Triton's launch-time specialisation (16-byte aligned pointers,
ints divisible by 16 marked so, at the shapes named). Runs under whichever triton is installed
(CI: the system's and 3.6, the GPU machine's).
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
from eqkernels.ops.triton import rmsnorm_update as tru  # noqa: E402
from eqkernels.ops.triton import swiglu as tsw  # noqa: E402
from eqkernels.ops.triton import token_mix as ttm  # noqa: E402

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


# ---- looped-transformer block ops (eqkernels/ops/token_mix.py, swiglu.py, rmsnorm_update.py) --
RECIPE = dict(T=81, C=512, I=1536, I_T=256)  # the Sudoku recipe; rows M = B * 81
RECIPE_BATCHES = (768, 1)


def _attrs(fn, sig, ints):
    """Triton's launch-time specialisation: every pointer (allocations are 16-byte aligned) and
    every int argument divisible by 16 at the shape in `ints` carry tt.divisibility = 16."""
    return {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, v in sig.items()
            if v.startswith("*") or (k in ints and ints[k] % 16 == 0)}


def _source(fn, sig, cfg, ints, skip=("num_warps", "num_stages")):
    const = {k: v for k, v in cfg.items() if k not in skip}
    sig = dict(sig)
    for k in const:
        sig[k] = "constexpr"
    return ASTSource(fn, sig, constexprs=const, attrs=_attrs(fn, sig, ints))


def _opts(cfg, **extra):
    return dict(num_warps=cfg["num_warps"], num_stages=cfg.get("num_stages", 3), **extra)


def _pick(which, default, candidates, B):
    """The default tiles always; every candidate at B = 768 in bfloat16 (ci) or always (full)."""
    if which == "full" or (which == "ci" and B == RECIPE_BATCHES[0]):
        return candidates
    return [default]


def looped_block_jobs(which, arch):
    """(name, dtype, cfg, why, source, options) of every block-op launch configuration on
    `arch` (the tile candidates are per arch)."""
    T, C, I, I_T = RECIPE["T"], RECIPE["C"], RECIPE["I"], RECIPE["I_T"]
    jobs, seen = [], set()

    def add(name, dt, cfg, why, src_fn, opts):
        key = (name, dt, tuple(sorted((k, str(v)) for k, v in cfg.items())))
        if key not in seen:
            seen.add(key)
            jobs.append((name, dt, cfg, why, src_fn(), opts))

    dtypes = (torch.bfloat16,) if which == "quick" else (torch.bfloat16, torch.float32)
    batches = RECIPE_BATCHES[:1] if which == "quick" else RECIPE_BATCHES
    for dt, B in itertools.product(dtypes, batches):
        P = PTR[dt]
        M = B * T
        every = dt == torch.bfloat16 or which == "full"
        # token_mix: (B, 81, 512) with the packed (96, 512) / (256, 96) weights
        cands = ttm.candidate_tiles(B, T, C, I_T, dt, arch)
        for tiles in (_pick(which, cands[0], cands, B) if every else cands[:1]):
            for inj, scale in ((True, False), (False, True)):  # layer 0; later layers
                cfg = dict(ttm.kernel_config(B, T, C, I_T, dt, tiles, arch=arch), HAS_INJ=inj,
                           HAS_SCALE=scale, SCALE_FROM_SUMSQ=scale)
                sig = dict(h_ptr=P, inj_ptr=P, scale_ptr="*fp32", wgu_ptr=P, wd_ptr=P, out_ptr=P,
                           T="i32", C="i32", I="i32", n_ctiles="i32", eps="fp32")
                ints = dict(T=T, C=C, I=I_T, n_ctiles=C // cfg["BLOCK_C"])
                add("token_mix", dt, cfg, f"B={B} tiles={tiles}",
                    lambda cfg=cfg, sig=sig, ints=ints: _source(ttm._token_mix_kernel, sig, cfg,
                                                                ints), _opts(cfg))
        # swiglu gate_up: (M, 512) x (3072, 512) -> (M, 1536)
        cands = tsw.gate_up_candidates(M, C, I, dt, arch)
        for tiles in (_pick(which, cands[0], cands, B) if every else cands[:1]):
            cfg = tsw.gate_up_config(M, C, I, dt, tiles, arch=arch)
            sig = dict(x_ptr=P, w_ptr=P, a_ptr=P, M="i32", K="i32", I="i32")
            add("gate_up", dt, cfg, f"M={M} tiles={tiles}",
                lambda cfg=cfg, sig=sig, M=M: _source(tsw._gate_up_kernel, sig, cfg,
                                                      dict(M=M, K=C, I=I)), _opts(cfg))
        # swiglu down: (M, 1536) x (512, 1536) + residual, sums of squares
        cands = tsw.down_candidates(M, I, C, dt, arch)
        for tiles in (_pick(which, cands[0], cands, B) if every else cands[:1]):
            cfg = tsw.down_config(M, I, C, dt, tiles, arch=arch)
            cfg.pop("N_SPLIT")
            sig = dict(a_ptr=P, w_ptr=P, r_ptr=P, out_ptr=P, ss_ptr="*fp32", M="i32", K="i32",
                       N="i32")
            add("down_sumsq", dt, cfg, f"M={M} tiles={tiles}",
                lambda cfg=cfg, sig=sig, M=M: _source(tsw._down_kernel, sig, cfg,
                                                      dict(M=M, K=I, N=C)), _opts(cfg))
        # the cuBLAS variant's epilogues
        for kind, fn, sig in (
                ("silu_mul", tsw._silu_mul_kernel, dict(gu_ptr=P, a_ptr=P, M="i32", I="i32")),
                ("add_sumsq", tsw._add_sumsq_kernel,
                 dict(t_ptr=P, r_ptr=P, out_ptr=P, ss_ptr="*fp32", M="i32", N="i32"))):
            cfg = tsw.epilogue_config(kind)
            add(kind, dt, cfg, f"M={M}",
                lambda fn=fn, sig=sig, cfg=cfg, M=M: _source(fn, sig, cfg,
                                                             dict(M=M, I=I, N=C)), _opts(cfg))
    # rmsnorm_update: (B, 81, 512) latents, noiseless and noisy, one program a sample or split
    dtypes = [torch.bfloat16] if which == "quick" else [torch.bfloat16, torch.float32,
                                                        torch.float64]
    for dt, B, sigma in itertools.product(dtypes, RECIPE_BATCHES + (64,), (0.0, 0.01)):
        if which == "quick" and B != 768:
            continue
        cfg = tru.kernel_config(B, T, C, dt, sigma, stop_rel=False)
        cfg.pop("RP"), cfg.pop("P")
        R = "*fp64" if dt == torch.float64 else "*fp32"
        sig = dict(z_ptr=PTR[dt], r_ptr=PTR[dt], sumsq_ptr=R, out_ptr=PTR[dt], active_ptr="*i1",
                   converged_ptr="*i1", diverged_ptr="*i1", nstep_ptr="*i32", abs_res_ptr=R,
                   rel_res_ptr=R, part_ptr="*fp64", step_ptr="*i64", B="i32", R="i32", C="i32",
                   RP="i32", P="i32", seed="i64", c_z="fp64", c_f="fp64", sigma="fp64",
                   tol="fp64", rel_eps="fp64", eps="fp64")
        add("rmsnorm_upd", dt, cfg, f"B={B} sigma={sigma}",
            lambda cfg=cfg, sig=sig, B=B: _source(tru._rmsnorm_update_kernel, sig, cfg,
                                                  dict(B=B, R=T, C=C)),
            _opts(cfg, **tbs.LAUNCH_OPTIONS))
    sig = dict(part_ptr="*fp64", active_ptr="*i1", converged_ptr="*i1", diverged_ptr="*i1",
               nstep_ptr="*i32", abs_res_ptr="*fp32", rel_res_ptr="*fp32", B="i32", P="i32",
               tol="fp64", rel_eps="fp64")
    for B in (1, 64):  # the batches whose samples split (B = 768: one program a sample)
        P = tru.kernel_config(B, T, C, torch.bfloat16, 0.01, False)["P"]
        cfg = tru.finish_config(B, P, False)
        add("rmsnorm_fin", torch.float32, cfg, f"B={B} P={P}",
            lambda cfg=cfg, B=B, P=P: _source(tru._finish_kernel, sig, cfg, dict(B=B, P=P)),
            _opts(cfg))
    return jobs


# Spills this check could not see before ptxas -v ran with the right ptxas and -arch (the sm_90a
# PTX was handed to -arch=sm_90, which ptxas refuses, read as "0 spills"), left for the owner of
# the kernel: (kernel, constexprs as printed, arch, triton version) -> bytes allowed. A larger
# spill, or one anywhere else, still fails.
KNOWN_SPILLS = {
}

# Per-block shared memory an arch allows (sm_80: 163 KB, sm_90: 227 KB).
SMEM_LIMIT = {80: 166912, 90: 232448}


def _ptxas(arch):
    """The ptxas Triton compiles with for `arch` (triton >= 3.5 picks by arch; older ones ship
    one), and the -arch it wants for the PTX's target."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return get_ptxas(arch).path
    except (ImportError, TypeError):
        return _tool("ptxas")


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
    target = re.search(r"^\.target\s+(sm_\w+)", compiled.asm["ptx"], re.M)
    log = subprocess.run([_ptxas(arch), f"-arch={target.group(1) if target else f'sm_{arch}'}",
                          "-v", ptx, "-o", os.path.join(tmp, "v.cubin")],
                         capture_output=True, text=True)
    if log.returncode != 0:  # a ptxas that cannot read the PTX reports no spills: not a pass
        raise RuntimeError(f"ptxas -v failed on sm_{arch}: {log.stderr.strip()[-400:]}")
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
    plain = dict(**tbs.LAUNCH_OPTIONS)
    common = ([("block_step", dt, cfg, why, block_step_source(dt, cfg), plain)
               for dt, cfg, why in block_step_cases(args.which)]
              + [("block_step_fin", dt, cfg, why, block_step_finish_source(dt, cfg), plain)
                 for dt, cfg, why in block_step_finish_cases(args.which)]
              + [(name, dt, dict(const, num_warps=cfg["num_warps"]), why, src, plain)
                 for dt, cfg, n_chunks, why in anderson_cases(args.which)
                 for name, src, const in anderson_sources(dt, cfg, n_chunks)])
    runs = [(job, arch) for arch in archs for job in common + looped_block_jobs(args.which, arch)]
    print(f"triton {triton.__version__}: {len(runs)} kernel configurations on sm_{archs}")
    print(f"{'kernel':13} {'dtype':8} {'constexprs':48} {'arch':5} {'regs':>4} {'spill B':>7} "
          f"{'smem B':>7} {'stack':>5} {'fma':>4} {'s':>5}  from")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for (name, dt, cfg, why, src, extra), arch in runs:
            opts = dict(extra, num_warps=cfg["num_warps"])
            t0 = time.time()
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)
            dt_s = time.time() - t0
            regs, spill, smem, local, stack = resources(compiled, arch, tmp)
            fma = len(re.findall(r"\bfma\.rn\.f(?:32|64)", compiled.asm["ptx"]))
            shown = {k: (str(v).replace("fp", "f") if k == "W" else int(v) if isinstance(v, bool)
                         else v) for k, v in cfg.items()
                     if k not in ("num_warps", "INTERPRETED", "INPUT_PRECISION")}
            text = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"{name:15} {str(dt)[6:]:8} {text:48} sm_{arch} {regs:4d} {spill:7d} {smem:7d} "
                  f"{stack:5d} {fma:4d} {dt_s:5.1f}  {why}", flush=True)
            known = KNOWN_SPILLS.get((name, text, arch, triton.__version__), 0)
            if known and spill <= known and local <= known:
                print(f"  known: {spill} B spilled in this configuration, left to the kernel's "
                      f"owner (KNOWN_SPILLS)")
            elif spill or local:
                failures.append(f"{name} {dt} {text} sm_{arch}: {spill} B spilled (ptxas -v), "
                                f"{local} B local memory in the cubin")
            if smem > SMEM_LIMIT.get(arch, SMEM_LIMIT[80]):
                failures.append(f"{name} {dt} {text} sm_{arch}: {smem} B shared memory > the "
                                f"{SMEM_LIMIT.get(arch, SMEM_LIMIT[80])} B a block may use")
            if name in ("block_step", "rmsnorm_upd") and not cfg["HAS_NOISE"] and fma:
                failures.append(f"{name} {dt} {text} sm_{arch}: {fma} FMAs with fp fusion off")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print(f"ok: no spills, shared memory fits, no contracted noiseless update "
          f"({len(runs)} compiles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
