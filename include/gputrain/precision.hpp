// The arithmetic precision of a training run's convolutions and GEMMs (config train.precision).
// Master weights, gradients, optimizer state and the loss stay FP32 in every mode; how each mode is
// realized on the GPU is described in src/backend/cuda/precision.hpp. The CPU engine computes in
// FP32 whatever is asked (and says so).
#pragma once

#include <string>

namespace gputrain {

enum class Precision {
  Fp32,  // FP32 FMA math, no TF32: the parity mode (matches the CPU engine and FP32 PyTorch)
  Tf32,  // TF32 tensor-op math for conv/GEMM inputs, FP32 accumulation
  Bf16,  // BF16 conv/GEMM inputs, FP32 accumulation
};

// "fp32", "tf32", "bf16": the config spelling.
inline const char* precision_key(Precision p) {
  switch (p) {
    case Precision::Fp32:
      return "fp32";
    case Precision::Tf32:
      return "tf32";
    case Precision::Bf16:
      return "bf16";
  }
  return "?";
}

}  // namespace gputrain
