"""Build of eqkernels and its one compiled module, eqkernels._C.

The C++ CPU kernels are always built. The CUDA kernels are added when a CUDA
toolkit and a CUDA build of torch are present. Environment switches:
  EQK_SKIP_CUDA=1     never build the CUDA kernels
  EQK_FORCE_CUDA=1    build them even if torch reports no CUDA (needs CUDA_HOME)
  EQK_CUDA_ARCHS      e.g. "80;90" (default "80;90")
  EQK_NO_NATIVE=1     do not tune the CPU code for this machine (-march=native)
  EQK_SKIP_EXTENSION=1  pure-Python install; every op falls back to its reference
"""
import glob
import os

from setuptools import find_packages, setup


def _flag(name):
    return os.environ.get(name, "0") == "1"


def _extensions():
    if _flag("EQK_SKIP_EXTENSION"):
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = ["csrc/bindings.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # -fno-math-errno: sqrt and friends may vectorise (nothing here reads errno)
    cxx = ["-O3", "-fopenmp", "-std=c++20", "-fno-math-errno"]
    if not _flag("EQK_NO_NATIVE"):
        cxx.append("-march=native")
    want_cuda = not _flag("EQK_SKIP_CUDA") and CUDA_HOME is not None and (
        torch.version.cuda is not None or _flag("EQK_FORCE_CUDA"))
    if want_cuda:
        archs = os.environ.get("EQK_CUDA_ARCHS", "80;90").split(";")
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a]
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        ext = CUDAExtension(
            "eqkernels._C", sources,
            define_macros=[("EQK_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", *gencode]},
            extra_link_args=["-fopenmp"])
    else:
        ext = CppExtension("eqkernels._C", sources, extra_compile_args=cxx,
                           extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(
    packages=find_packages(include=["eqkernels", "eqkernels.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
