"""The compiled extension links the shared C++ runtime torch uses and carries none of
libstdc++'s stream / locale code (scripts/check_ext_symbols.py says why: a build that did
crashed on every bad-argument error message, issue 19)."""
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

from eqkernels import _backends

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_ext_symbols",
                                              ROOT / "scripts/check_ext_symbols.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

needs_binutils = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not (shutil.which("nm") and shutil.which("readelf")),
    reason="needs Linux and binutils (nm, readelf)")

TINY = '#include <sstream>\n#include <string>\n' \
       'std::string fmt(long x) { std::ostringstream s; s << x; return s.str(); }\n'


@pytest.mark.parametrize("mangled,entity", [
    ("_ZNSo9_M_insertIlEERSoT_", "basic_ostream"),               # the crash's frame 1
    ("_ZNKSt7codecvtIDsc11__mbstate_tE10do_unshiftERS0_PcS3_RS3_", "codecvt"),  # frame 0
    ("_ZNSt6locale2idE", "locale"),
    ("_ZNSt7num_putIcSt19ostreambuf_iteratorIcSt11char_traitsIcEEE2idE", "num_put"),
    ("_ZTVSt15basic_streambufIcSt11char_traitsIcEE", "basic_streambuf"),
    ("_ZStlsISt11char_traitsIcEERSt13basic_ostreamIcT_ES5_PKc", "operator<<"),
    ("_ZNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEE7reserveEm", "basic_string"),
    ("_ZN3c10lsIlEERSoS1_NS_8ArrayRefIT_EE", None),   # c10's operator<< returns std::ostream&
    ("PyInit__C", None),
])
def test_std_entity_names_the_std_class_a_symbol_belongs_to(mangled, entity):
    assert check.std_entity(mangled) == entity


def test_string_and_the_inline_stream_destructors_are_not_counted():
    assert "basic_string" not in check.STREAM_LOCALE
    assert check._INLINE_DTORS.match("_ZNSt7__cxx1115basic_stringbufIcSt11char_traitsIcESaIcEED2Ev")
    assert not check._INLINE_DTORS.match("_ZNSo9_M_insertIlEERSoT_")


@needs_binutils
def test_the_built_extension_links_the_shared_runtime():
    module, reason = _backends._load_extension()
    if module is None:
        pytest.skip(reason)
    assert check.runtime_linkage_problem(module.__file__) is None


@needs_binutils
def test_a_static_libstdcxx_link_is_caught_and_the_setup_link_flag_prevents_it(tmp_path):
    """The failure mode itself, in a tiny library: -static-libstdc++ copies the stream code in;
    setup.py's -l:libstdc++.so.6 (named first) keeps it out even with that flag."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    setup_spec = importlib.util.spec_from_file_location("eqk_setup", ROOT / "setup.py")
    setup_mod = importlib.util.module_from_spec(setup_spec)
    setup_spec.loader.exec_module(setup_mod)  # setup() itself runs only under __main__
    runtime = [f for f in setup_mod.link_flags() if f != "-fopenmp"]
    assert runtime == ["-l:libstdc++.so.6"]
    src = tmp_path / "tiny.cpp"
    src.write_text(TINY)
    built = {}
    for name, flags in (("static", ["-static-libstdc++"]),
                        ("named", [*runtime, "-static-libstdc++"])):
        out = tmp_path / f"{name}.so"
        run = subprocess.run([cxx, "-O1", "-fPIC", "-shared", str(src), *flags, "-o", str(out)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            pytest.skip(f"cannot link the probe ({name}): {run.stderr.strip()[:200]}")
        built[name] = check.runtime_linkage_problem(str(out))
    assert built["static"] and "stream/locale" in built["static"], built
    assert built["named"] is None, built


PROBE = r'''
import sys, torch
sys.path.insert(0, sys.argv[2])
from ops_cases import anderson_args, block_step_args
device = sys.argv[1]
a = list(anderson_args(4, 6, 3, torch.float32, 1, device=device))
a[7] = torch.zeros(1, device=device)                  # abs_res of the wrong shape
b = list(block_step_args(4, 6, torch.float32, 1, device=device))
b[1] = b[1].double()                                  # f_out of another dtype
for op, args in ((torch.ops.eqk.anderson_step, a), (torch.ops.eqk.block_step, b)):
    try:
        op(*args)
        print("no error")
    except ValueError as err:
        print("ValueError:", str(err).splitlines()[0])
'''


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bad_arguments_to_the_compiled_ops_raise_value_error_in_a_fresh_process(device):
    """In a child process, so a build whose error path crashes (issue 19: SIGSEGV in the
    message formatting) fails this test by name instead of killing the test run."""
    backend = "cpp" if device == "cpu" else "cuda"
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
    if not _backends.backends()[backend][0]:
        pytest.skip(_backends.backends()[backend][1])
    run = subprocess.run([sys.executable, "-c", "import eqkernels.ops\n" + PROBE, device,
                          str(ROOT / "tests")], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert run.returncode == 0, (f"rc {run.returncode} (negative: killed by that signal)\n"
                                 f"{run.stderr[-2000:]}")
    lines = run.stdout.splitlines()
    assert lines == ["ValueError: anderson_step: abs_res must be a (4,) torch.float32 tensor, "
                     "got shape [1] and dtype torch.float32",
                     "ValueError: block_step: f_out must have z's dtype torch.float32, got "
                     "torch.float64"], run.stdout
