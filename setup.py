"""Build of eqkernels and its one compiled module, eqkernels._C.

The C++ CPU kernels are always built. The CUDA kernels are added when a CUDA
toolkit and a CUDA build of torch are present. Environment switches:
  EQK_SKIP_CUDA=1     never build the CUDA kernels
  EQK_FORCE_CUDA=1    build them even if torch reports no CUDA (needs CUDA_HOME)
  EQK_CUDA_ARCHS      e.g. "80;90" (default "80;90"): SASS for each, and PTX for the highest,
                      so a newer GPU (sm_100, sm_120) JIT-compiles the kernels instead of
                      failing with "no kernel image"
  EQK_NO_NATIVE=1     do not tune the CPU code for this machine (-march=native); use it for a
                      wheel that will run on other CPUs
  EQK_SKIP_EXTENSION=1  pure-Python install; every op falls back to its reference
The CUDA code is compiled without --use_fast_math: float32 subnormals are kept (not flushed
to zero) and log/cos are the accurate ones, as the reference's.

The extension is compiled against the torch this Python imports, and eqkernels/_C_build.json
records which: eqkernels refuses to load an extension built for another torch (see
eqkernels/_backends.py). torch is therefore not a build requirement in pyproject.toml: under
pip's build isolation (plain `pip install .`) the torch installed beside pip is found and used.
"""
import glob
import json
import os
import subprocess
import sys

from setuptools import find_packages, setup

BUILD_INFO = "_C_build.json"  # beside the built eqkernels/_C*.so


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


def _import_torch():
    """The torch to compile against: the one this Python imports, or, under pip's build
    isolation (which hides the environment's packages), the one this same interpreter imports
    outside it. Exits with one line naming the fix where there is none."""
    try:
        import torch
        return torch
    except ImportError:
        pass
    # pip isolates a build with PYTHONPATH (a sitecustomize that drops site-packages) and
    # PYTHONNOUSERSITE; without them the interpreter sees its environment's packages again.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = subprocess.run([sys.executable, "-c", "import os, torch; "
                            "print(os.path.dirname(os.path.dirname(torch.__file__)))"],
                           env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit("error: eqkernels compiles its kernels against the installed torch and "
                         f"{sys.executable} has none: install torch first, then `pip install .` "
                         "again (or set EQK_SKIP_EXTENSION=1 for the pure-Python references)")
    sys.path.append(probe.stdout.strip().splitlines()[-1])  # after the build requirements
    import torch
    return torch


def cxx_flags():
    """Host C++ flags. No -std: torch's BuildExtension then adds the standard this torch was
    built with (c++17 up to torch 2.11, c++20 after; torch 2.14's headers refuse c++17), so
    torch's inline code means the same on both sides. The standard does not change the float
    results: GCC contracts a*b+c into FMAs in every C++ mode (ISO or GNU), and the kernels
    that need one rounding or none say so explicitly (std::fma / _mm256_fmadd_*, #pragma GCC
    optimize("fp-contract=off"))."""
    # -fno-math-errno: sqrt and friends may vectorise (nothing here reads errno)
    return ["-O3", "-fopenmp", "-fno-math-errno"]


def link_flags():
    """-l:libstdc++.so.6 first on Linux: the extension must use the one shared C++ runtime torch
    uses. The first GPU build (issue 19) carried libstdc++'s own objects instead (a static
    libstdc++.a link): two copies of the iostream/locale state, and every bad-argument error
    message, formatted by `stream << long`, crashed the process. Named first, the shared
    library satisfies every C++ runtime symbol, so nothing is taken from an archive even if
    the compiler would link one (-static-libstdc++ in LDFLAGS, a missing libstdc++.so)."""
    return ["-fopenmp"] + (["-l:libstdc++.so.6"] if sys.platform.startswith("linux") else [])


def _check_runtime_linkage(path):
    """Exit with the reason if the built library carries its own libstdc++ stream/locale code
    or does not load libstdc++.so.6 (scripts/check_ext_symbols.py; skipped off Linux)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts",
                          "check_ext_symbols.py")
    if not sys.platform.startswith("linux") or not os.path.exists(script):
        return
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_ext_symbols", script)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    problem = check.runtime_linkage_problem(path)
    if problem:
        os.remove(path)
        raise SystemExit(f"error: {path}: {problem} (removed; see scripts/check_ext_symbols.py)")


def _accepts(compiler, flag):
    """Whether the C++ compiler (argv list) compiles an empty file with flag."""
    try:
        return subprocess.run([*compiler, flag, "-x", "c++", "-fsyntax-only", os.devnull],
                              capture_output=True).returncode == 0
    except OSError:
        return False


def _build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    class BuildExt(BuildExtension):
        """torch's BuildExtension, plus: -march=native only where the compiler takes it, and
        eqkernels/_C_build.json naming the torch the extension was compiled against."""

        def build_extensions(self):
            cxx_compiler = getattr(self.compiler, "compiler_cxx", None) or self.compiler.compiler_so
            native = not _flag("EQK_NO_NATIVE") and _accepts(cxx_compiler[:1], "-march=native")
            if not _flag("EQK_NO_NATIVE") and not native:
                print("eqkernels: the C++ compiler refuses -march=native; building generic code")
            for ext in self.extensions:
                args = ext.extra_compile_args
                cxx = args["cxx"] if isinstance(args, dict) else args
                if native and "-march=native" not in cxx:
                    cxx.append("-march=native")
            self._native = native
            super().build_extensions()

        def run(self):
            super().run()
            import torch
            for ext in self.extensions:
                _check_runtime_linkage(self.get_ext_fullpath(ext.name))
                path = os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), BUILD_INFO)
                info = {"torch": torch.__version__, "cuda": torch.version.cuda,
                        "with_cuda": any(src.endswith(".cu") for src in ext.sources),
                        "march_native": getattr(self, "_native", False)}
                with open(path, "w") as fh:
                    json.dump(info, fh, indent=1)

    return BuildExt.with_options(use_ninja=True)


def _extensions():
    if _flag("EQK_SKIP_EXTENSION"):
        return [], {}
    torch = _import_torch()
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    sources = (["csrc/bindings.cpp"] + sorted(glob.glob("csrc/ops/*.cpp"))
               + sorted(glob.glob("csrc/cpu/*.cpp")))
    cxx = cxx_flags()
    want_cuda = not _flag("EQK_SKIP_CUDA") and CUDA_HOME is not None and (
        torch.version.cuda is not None or _flag("EQK_FORCE_CUDA"))
    if want_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        ext = CUDAExtension(
            "eqkernels._C", sources,
            define_macros=[("EQK_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": nvcc_flags(cuda_archs())},
            extra_link_args=link_flags())
    else:
        ext = CppExtension("eqkernels._C", sources, extra_compile_args={"cxx": cxx},
                           extra_link_args=link_flags())
    return [ext], {"build_ext": _build_ext_class()}


if __name__ == "__main__":
    ext_modules, cmdclass = _extensions()
    setup(
        packages=find_packages(include=["eqkernels", "eqkernels.*"]),
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
