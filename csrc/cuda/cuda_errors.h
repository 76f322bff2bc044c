// How the CUDA implementations report a failed launch. A GPU without a kernel image in this
// build (an arch newer than the compiled SASS and no compatible PTX) gets one clear message
// that the Python dispatcher recognises (the words "no kernel image") and falls back on.
#pragma once
#include <cuda_runtime.h>

#include <c10/util/Exception.h>

namespace eqk {

inline void check_launch(cudaError_t err, const char* op) {
  if (err == cudaSuccess) return;
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
    (void)cudaGetLastError();  // clear the (non-sticky) launch error
    TORCH_CHECK(false, op, ": no kernel image for this GPU in eqkernels._C (built for EQK_CUDA_ARCHS; "
                "rebuild with the GPU's arch in EQK_CUDA_ARCHS): ", cudaGetErrorString(err));
  }
  TORCH_CHECK(false, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace eqk
