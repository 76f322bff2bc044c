"""Instruction count of the CUDA block step's main loop per element, from the SASS of an
nvcc -arch=sm_90 compile (cuobjdump -sass), and what it means for an H200's issue rate: the
evidence behind the noisy update's bandwidth model (no GPU needed).

    python scripts/sass_block_step.py [--arch 90]

For each update kernel it finds the loop (the block of code a backward branch closes), counts
its instructions by kind, divides by the elements one trip handles (kSweeps x VEC a thread) and
prints instructions an element, then the time an H200 needs to issue them for (768, 41472)
against the time its measured copy bandwidth needs for the bytes (4.25 TB/s).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (label, mangled-name fragment, elements one loop trip handles a thread, bytes an element)
KERNELS = [("bfloat16 noise", "update_kernelI13__nv_bfloat16Lb1ELi8E", 4 * 8, 6),
           ("bfloat16 no noise", "update_kernelI13__nv_bfloat16Lb0ELi8E", 4 * 8, 6),
           ("float32 noise", "update_kernelIfLb1ELi4E", 4 * 4, 12),
           ("float32 no noise", "update_kernelIfLb0ELi4E", 4 * 4, 12)]
H200 = dict(sms=132, clock_hz=1.98e9, issue_per_clk_sm=4 * 32, copy_bytes_s=4.25e12)
KINDS = {"int": ("IMAD", "LOP3", "SHF", "IADD3", "VIADD", "LEA", "PRMT", "SEL", "ISETP", "I2FP",
                 "MOV", "IABS"),
         "fp32": ("FFMA", "FMUL", "FADD", "FSEL", "FSETP", "HFMA2", "FMNMX"),
         "fp64": ("DFMA", "DADD", "DMUL"),
         "conv/sfu": ("F2F", "F2FP", "I2F", "F2I", "MUFU"),
         "memory": ("LDG", "STG", "LDS", "STS", "LDC", "ULDC")}


def cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    import triton  # ships one
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def functions(sass):
    """{mangled name: [opcodes in address order]} of a cuobjdump -sass listing."""
    out = {}
    for part in re.split(r"\n\s*Function : ", sass)[1:]:
        name = part.split("\n", 1)[0].strip()
        lines = re.findall(r"/\*([0-9a-f]{4,})\*/\s+((?:@!?U?P\w+\s+)?[A-Z][A-Z0-9_.]*)(.*?);", part)
        out[name] = [(int(addr, 16), op.split()[-1], rest) for addr, op, rest in lines]
    return out


def loop_body(code):
    """The instructions between the target of the last backward branch and that branch."""
    best = None
    for addr, op, rest in code:
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", rest)
            if m and int(m.group(1), 16) < addr:
                best = (int(m.group(1), 16), addr)
    if best is None:
        return code
    lo, hi = best
    return [c for c in code if lo <= c[0] <= hi]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="90")
    args = ap.parse_args(argv)
    if not shutil.which("nvcc"):
        print("error: nvcc not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "k.o")
        subprocess.run(["nvcc", "-std=c++17", "-O3", f"-I{ROOT / 'csrc'}", f"-arch=sm_{args.arch}",
                        "-c", str(ROOT / "csrc/cuda/block_step.cu"), "-o", obj], check=True)
        sass = subprocess.run([cuobjdump(), "-sass", obj], capture_output=True, text=True,
                              check=True).stdout
    funcs = functions(sass)
    B, n = 768, 41472
    print(f"sm_{args.arch} SASS of csrc/cuda/block_step.cu, main loop per element; H200 model at "
          f"({B}, {n}): issue {H200['sms']} SMs x {H200['issue_per_clk_sm']} thread-instr/clk "
          f"x {H200['clock_hz'] / 1e9:.2f} GHz, copy {H200['copy_bytes_s'] / 1e12:.2f} TB/s")
    for label, frag, elems, nbytes in KERNELS:
        name = next((k for k in funcs if frag in k), None)
        if name is None:
            print(f"{label}: kernel not found")
            continue
        body = [op for _, op, _ in loop_body(funcs[name])]
        ops = [o.split(".")[0] for o in body if not o.startswith("NOP")]
        kinds = collections.Counter()
        for o in ops:
            kinds[next((k for k, v in KINDS.items() if o in v), "other")] += 1
        per = len(ops) / elems
        t_issue = B * n * per / (H200["sms"] * H200["issue_per_clk_sm"] * H200["clock_hz"])
        t_mem = B * n * nbytes / H200["copy_bytes_s"]
        print(f"{label:18} {per:5.1f} instr/elem ("
              + ", ".join(f"{k} {v / elems:.1f}" for k, v in kinds.most_common())
              + f"); issue {t_issue * 1e6:.0f} us at 100%, copy {t_mem * 1e6:.0f} us; "
              f"70% of copy = {t_mem / 0.7 * 1e6:.0f} us needs {t_issue / (t_mem / 0.7):.0%} "
              f"issue efficiency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
