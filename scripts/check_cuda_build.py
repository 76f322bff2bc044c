"""Imports a CUDA build of eqkernels._C (path in argv[1]) without a GPU and checks it.

- it loads against the CUDA torch it was built for, and says it has CUDA kernels;
- eqk::block_step and eqk::anderson_step have CPU, CUDA and Meta kernels registered;
- nvcc's copies of the shared constants equal eqkernels/ops/constants.py (the .cu files'
  view, from csrc/cuda/block_step.cu), as do the host C++ ones;
- it links the shared libstdc++ and carries none of its stream/locale code (a build that
  did crashed on every bad-argument message on the first GPU run: check_ext_symbols.py).
"""
import importlib.util
import pathlib
import sys

import torch

root = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("eqkernels._C", sys.argv[1])
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
spec_s = importlib.util.spec_from_file_location("check_ext_symbols",
                                                root / "scripts/check_ext_symbols.py")
symbols = importlib.util.module_from_spec(spec_s)
spec_s.loader.exec_module(symbols)
problem = symbols.runtime_linkage_problem(sys.argv[1])
assert problem is None, f"{sys.argv[1]}: {problem}"
spec_c = importlib.util.spec_from_file_location("constants", root / "eqkernels/ops/constants.py")
constants = importlib.util.module_from_spec(spec_c)
spec_c.loader.exec_module(constants)

assert torch.version.cuda, "not a CUDA build of torch"
assert ext.with_cuda, "extension built without CUDA kernels"
for op in ("eqk::block_step", "eqk::anderson_step"):
    for key in ("CPU", "CUDA", "Meta"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), f"{op}: no {key} kernel"
host, dev = ext.constants(), ext.cuda_constants()
for name, value in constants.ALL.items():
    assert host[name] == value, f"C++ {name} = {host[name]!r}, constants.py {value!r}"
    if name in dev:
        assert dev[name] == value, f"CUDA {name} = {dev[name]!r}, constants.py {value!r}"
print(f"import ok: torch {torch.__version__} (CUDA {torch.version.cuda}); ops with CPU/CUDA/Meta "
      f"kernels; {len(constants.ALL)} constants agree (C++ and nvcc); shared libstdc++, none of "
      f"its stream/locale code inside")
