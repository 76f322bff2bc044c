// The compiled module eqkernels._C. The fused ops themselves are torch.library ops
// (torch.ops.eqk.*: schemas in csrc/ops/, implementations per dispatch key in csrc/cpu/ and
// csrc/cuda/), registered when this library loads; this pybind11 module says what was built,
// exposes the compiled copies of the shared constants, and the bound CPU Anderson step.
#include "ops.h"

#ifdef EQK_WITH_CUDA
namespace eqk::cuda {
void compiled_constants(double out[6]);  // csrc/cuda/block_step.cu, as nvcc compiled them
}
#endif

namespace eqk {

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kHalf: return "torch.float16";
    case at::kBool: return "torch.bool";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    default: return std::string("torch.") + c10::toString(t);
  }
}

}  // namespace eqk

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "eqkernels compiled kernels (C++ CPU, and CUDA where built); ops in torch.ops.eqk";
#ifdef EQK_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  // The compiled copies of eqkernels/ops/constants.py (csrc/common/kernel_common.h).
  m.def("constants", []() {
    pybind11::dict d;
    d["REL_EPS"] = eqk::kRelEps;
    d["CHOL_PIVOT_RTOL"] = eqk::kCholPivotRtol;
    d["MAX_HISTORY"] = eqk::kMaxHistory;
    d["HASH_MUL0"] = eqk::kHashMul0;
    d["HASH_MUL1"] = eqk::kHashMul1;
    d["MASK32"] = uint32_t(0xffffffffu);
    d["NOISE_STEP_OFFSET"] = eqk::kNoiseStepOffset;
    return d;
  });
#ifdef EQK_WITH_CUDA
  m.def("cuda_constants", []() {
    double c[6];
    eqk::cuda::compiled_constants(c);
    pybind11::dict d;
    d["REL_EPS"] = c[0];
    d["CHOL_PIVOT_RTOL"] = c[1];
    d["MAX_HISTORY"] = int(c[2]);
    d["HASH_MUL0"] = uint32_t(c[3]);
    d["HASH_MUL1"] = uint32_t(c[4]);
    d["NOISE_STEP_OFFSET"] = uint32_t(c[5]);
    return d;
  });
#endif
  // The Anderson CPU step bound to one solve's state (csrc/ops.h); eqkernels/ops/anderson_mix.py
  // bind_anderson_step makes it, the eager solver loop calls it once per step.
  pybind11::class_<eqk::AndersonStepCpu>(m, "AndersonStepCpu")
      .def(pybind11::init<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                          at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                          at::Tensor, at::Tensor, at::Tensor, at::Tensor, double, bool, double,
                          double, double>())
      .def("__call__", &eqk::AndersonStepCpu::operator(), pybind11::arg("z"),
           pybind11::arg("fz"), pybind11::call_guard<pybind11::gil_scoped_release>());
  // The host side of the compiled noise key, to test it against block_step.noise_key.
  m.def("noise_key", [](int64_t seed, int64_t step) { return eqk::noise_key(seed, step); });
}
