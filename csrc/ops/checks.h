// Argument checks shared by the ops' check_* functions. Each raises ValueError (in Python) with
// the message the Python dispatcher's twin (eqkernels/ops/_checks.py) raises, word for word.
#pragma once
#include <initializer_list>
#include <utility>

#include "../ops.h"

namespace eqk {
namespace checks {

// t is (len,) of dtype dt.
inline void vec(const char* op, const char* name, const at::Tensor& t, int64_t len,
                at::ScalarType dt) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == len && t.scalar_type() == dt, op, ": ", name,
                    " must be a (", len, ",) ", dtype_name(dt), " tensor, got shape ", t.sizes(),
                    " and dtype ", dtype_name(t.scalar_type()));
}

// t has ref's shape and dtype.
inline void like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                 const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), op, ": ", name, " must have ", ref_name,
                    "'s shape ", ref.sizes(), ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have ",
                    ref_name, "'s dtype ", dtype_name(ref.scalar_type()), ", got ",
                    dtype_name(t.scalar_type()));
}

// Every tensor on ref's device, and contiguous (the kernels index raw memory).
inline void placement(const char* op,
                      std::initializer_list<std::pair<const char*, const at::Tensor*>> ts,
                      const at::Tensor& ref) {
  for (const auto& [name, t] : ts) {
    TORCH_CHECK_VALUE(t->device() == ref.device(), op, ": ", name, " must be on z's device ",
                      ref.device(), ", got ", t->device());
    TORCH_CHECK_VALUE(t->is_contiguous(), op, ": ", name, " must be contiguous");
  }
}

}  // namespace checks
}  // namespace eqk
