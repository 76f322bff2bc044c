"""Fails if a built eqkernels._C carries its own copy of libstdc++'s stream / locale code, or
does not load the shared libstdc++.so.6 that torch uses.

    python scripts/check_ext_symbols.py path/to/_C*.so     # exit 1 naming what is wrong

Why. libstdc++ keeps global state in its iostream / locale code: each facet's static
std::locale::id is an index into every locale's facet table, numbered by the copy of the
library that hands it out. The first GPU run's build (issue 19: gcc 13.3, torch 2.11.0+cu130)
linked libstdc++'s objects into _C.so (a static libstdc++.a link: its backtrace shows
`std::ostream::_M_insert<long>` and the non-template `std::codecvt<char16_t, char>::
do_unshift` inside _C.so; linking with -static-libstdc++ reproduces that backtrace frame for
frame). Two copies of that state met in one stream, `stream << long` looked num_put up with
the wrong index and called a codecvt facet's do_unshift as num_put::do_put: every
bad-argument error message (TORCH_CHECK -> c10::str -> ostream) crashed the process. A sound
build defines none of these symbols (nm: U, resolved in libstdc++.so.6) and lists
libstdc++.so.6 as NEEDED. setup.py runs this check after linking; so do
tests/test_ext_symbols.py (the CPU build) and scripts/check_cuda_build.py (the CUDA build).

Not counted: std::string (in C++20 mode libstdc++ has user code instantiate it, by design;
torch >= 2.14 requires C++20), and the string streams' destructors, which are inline in the
headers and which gcc 12 emits in C++20 mode (header and runtime from one compiler).
"""
import re
import shutil
import subprocess
import sys

# std:: classes and functions whose code or data must come from libstdc++.so alone.
STREAM_LOCALE = frozenset({
    "basic_ostream", "basic_istream", "basic_iostream", "basic_ios", "ios_base",
    "basic_streambuf", "basic_stringbuf", "basic_ostringstream", "basic_istringstream",
    "basic_stringstream", "locale", "num_put", "num_get", "numpunct", "codecvt", "ctype",
    "__codecvt_abstract_base", "__ctype_abstract_base", "__ostream_insert", "endl", "ends",
    "flush", "operator<<", "operator>>"})
# inline in the headers, emitted (weak) by some GCCs in C++20 mode: D0/D1/D2 destructors
_INLINE_DTORS = re.compile(r"^_ZN(?:St7__cxx11)?\d+basic_(?:i|o)?string(?:buf|stream)I.*ED[012]Ev$")
_ABBREVIATIONS = {"So": "basic_ostream", "Si": "basic_istream", "Sd": "basic_iostream"}
_OPERATORS = {"ls": "operator<<", "rs": "operator>>"}
# vtable / VTT / typeinfo / typeinfo name, and (virtual) thunks, in front of the entity
_PREFIX = re.compile(r"_Z(?:T[VTIS]|Th n?\d+_|Tv n?\d+_n?\d+_)?".replace(" ", ""))


def std_entity(mangled: str):
    """The std:: class or namespace-scope function a mangled (Itanium ABI) symbol belongs to,
    e.g. '_ZNSo9_M_insertIlEERSoT_' -> 'basic_ostream', '_ZNSt6locale2idE' -> 'locale';
    None for anything outside namespace std (c10's operator<< returning std::ostream& too)."""
    m = _PREFIX.match(mangled)
    if not m:
        return None
    rest = mangled[m.end():]
    rest = rest[2:] if rest.startswith("NK") else rest[1:] if rest.startswith("N") else rest
    if rest[:2] in _ABBREVIATIONS:
        return _ABBREVIATIONS[rest[:2]]
    if not rest.startswith("St"):
        return None
    rest = rest[2:]
    if rest.startswith("7__cxx11"):
        rest = rest[8:]
    if rest[:2] in _OPERATORS:
        return _OPERATORS[rest[:2]]
    n = re.match(r"\d+", rest)
    if not n:
        return None
    return rest[n.end():n.end() + int(n.group())]


def defined_symbols(path: str):
    """Mangled names of the symbols a shared library defines (nm --defined-only, both the
    dynamic table and, where present, the full one)."""
    names = set()
    for extra in ([], ["-D"]):
        out = subprocess.run(["nm", "--defined-only", *extra, path], capture_output=True,
                             text=True)
        if out.returncode == 0:
            names.update(line.split()[-1] for line in out.stdout.splitlines()
                         if len(line.split()) >= 3)
    return names


def stream_locale_definitions(path: str):
    """[(mangled, demangled)] of the stream / locale symbols `path` defines (sorted)."""
    hits = [s for s in defined_symbols(path)
            if std_entity(s) in STREAM_LOCALE and not _INLINE_DTORS.match(s)]
    # the crash's own frames first (ostream::_M_insert<long>, locale ids, codecvt), then the rest
    hits.sort(key=lambda s: (not ("_M_insert" in s or s.endswith("2idE") or "codecvt" in s), s))
    if not hits or shutil.which("c++filt") is None:
        return [(h, h) for h in hits]
    demangled = subprocess.run(["c++filt"], input="\n".join(hits), capture_output=True,
                               text=True).stdout.splitlines()
    return list(zip(hits, demangled))


def needed_libraries(path: str):
    """The DT_NEEDED entries of a shared library (readelf -d), or None if readelf fails."""
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out.stdout)


def runtime_linkage_problem(path: str):
    """What is wrong with how `path` links the C++ runtime (one line), or None."""
    hits = stream_locale_definitions(path)
    if hits:
        return (f"it defines {len(hits)} libstdc++ stream/locale symbols (e.g. {hits[0][1]}): "
                f"libstdc++ was linked into it statically, and its error messages would crash")
    needed = needed_libraries(path)
    if needed is not None and not any(n.startswith("libstdc++.so") for n in needed):
        return "it does not load libstdc++.so.6 (NEEDED: " + ", ".join(needed) + ")"
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: check_ext_symbols.py path/to/_C*.so", file=sys.stderr)
        return 2
    if shutil.which("nm") is None or shutil.which("readelf") is None:
        print("error: nm / readelf (binutils) not found; cannot read the library", file=sys.stderr)
        return 2
    hits = stream_locale_definitions(argv[0])
    problem = runtime_linkage_problem(argv[0])
    if problem:
        print(f"FAIL: {argv[0]}: {problem}")
        for _, name in hits[:20]:
            print(f"  {name}")
        return 1
    print(f"ok: {argv[0]} links the shared libstdc++ and defines none of its stream/locale code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
