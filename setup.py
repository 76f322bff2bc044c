"""Build of eqkernels and its one compiled module, eqkernels._C.

The C++ CPU kernels are always built. The CUDA kernels are added when a CUDA
toolkit and a CUDA build of torch are present. Environment switches:
  EQK_SKIP_CUDA=1     never build the CUDA kernels
  EQK_FORCE_CUDA=1    build them even if torch reports no CUDA (needs CUDA_HOME)
  EQK_CUDA_ARCHS      e.g. "80;90" (default "80;90"): SASS for each, and PTX for the highest,
                      so a newer GPU (sm_100, sm_120) JIT-compiles the kernels instead of
                      failing with "no kernel image"
  EQK_NO_NATIVE=1     do not tune the CPU code for this machine (-march=native)
  EQK_SKIP_EXTENSION=1  pure-Python install; every op falls back to its reference
The CUDA code is compiled without --use_fast_math: float32 subnormals are kept (not flushed
to zero) and log/cos are the accurate ones, as the reference's.
"""
import glob
import os

from setuptools import find_packages, setup


def _flag(name):
    return os.environ.get(name, "0") == "1"


def cuda_archs():
    archs = [a.strip() for a in os.environ.get("EQK_CUDA_ARCHS", "80;90").split(";") if a.strip()]
    if not archs or not all(a.isdigit() for a in archs):
        raise SystemExit(f"EQK_CUDA_ARCHS must be ';'-separated numbers like '80;90', got "
                         f"{os.environ.get('EQK_CUDA_ARCHS')!r}")
    return sorted(set(archs), key=int)


def nvcc_flags(archs):
    """-O3, SASS for every arch, PTX for the highest (tests/test_ops_defects.py reads this)."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    top = archs[-1]
    gencode.append(f"-gencode=arch=compute_{top},code=compute_{top}")
    return ["-O3", "-std=c++17", *gencode]


def _extensions():
    if _flag("EQK_SKIP_EXTENSION"):
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = (["csrc/bindings.cpp"] + sorted(glob.glob("csrc/ops/*.cpp"))
               + sorted(glob.glob("csrc/cpu/*.cpp")))
    # -fno-math-errno: sqrt and friends may vectorise (nothing here reads errno)
    cxx = ["-O3", "-fopenmp", "-std=c++20", "-fno-math-errno"]
    if not _flag("EQK_NO_NATIVE"):
        cxx.append("-march=native")
    want_cuda = not _flag("EQK_SKIP_CUDA") and CUDA_HOME is not None and (
        torch.version.cuda is not None or _flag("EQK_FORCE_CUDA"))
    if want_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        ext = CUDAExtension(
            "eqkernels._C", sources,
            define_macros=[("EQK_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc_flags(cuda_archs())},
            extra_link_args=["-fopenmp"])
    else:
        ext = CppExtension("eqkernels._C", sources, extra_compile_args=cxx,
                           extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


if __name__ == "__main__":
    ext_modules, cmdclass = _extensions()
    setup(
        packages=find_packages(include=["eqkernels", "eqkernels.*"]),
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
