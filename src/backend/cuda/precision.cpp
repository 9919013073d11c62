// See precision.hpp: the one file that names cuDNN/cuBLAS math modes and data types.
#include "backend/cuda/precision.hpp"

#include "backend/cuda/cuda_check.hpp"

namespace gputrain::cuda {

std::string precision_name(Precision p) {
  switch (p) {
    case Precision::Fp32:
      return "fp32 (FMA math, no TF32)";
    case Precision::Tf32:
      return "tf32 (TF32 tensor ops, FP32 accumulation)";
    case Precision::Bf16:
      return "bf16 (BF16 GEMM inputs, TF32 convolutions, FP32 accumulation)";
  }
  return "?";
}

TensorDesc activation_desc(Precision, int n, int c, int h, int w) {
  return TensorDesc::nchw(CUDNN_DATA_FLOAT, n, c, h, w);
}

FilterDesc filter_desc(Precision, int o, int i, int kh, int kw) {
  return FilterDesc::oihw(CUDNN_DATA_FLOAT, o, i, kh, kw);
}

// FP32 accumulation in every mode. fp32: CUDNN_FMA_MATH, no TF32 tensor-core kernels (PyTorch's
// default allows TF32 for convolutions; gputrain's fp32 mode does not). tf32/bf16: tensor ops
// allowed (TF32 for FP32 data), as PyTorch sets them with allow_tf32.
ConvDesc conv_desc(Precision p, int padding, int stride) {
  return ConvDesc::create(padding, stride, CUDNN_DATA_FLOAT,
                          p == Precision::Fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH);
}

bool accepts_conv_math(Precision p, cudnnMathType_t math) {
  switch (p) {
    case Precision::Fp32:
      // DEFAULT math for FP32 data is FP32 arithmetic too (tensor ops need a TENSOR_OP type).
      return math == CUDNN_FMA_MATH || math == CUDNN_DEFAULT_MATH;
    case Precision::Tf32:
    case Precision::Bf16:
      // TF32 tensor ops or plain FP32: both keep (at least) TF32 precision. ALLOW_CONVERSION
      // (FP32 data converted to FP16 for tensor cores) would lose FP32's range: refused.
      return math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
  }
  return false;
}

const char* math_type_name(cudnnMathType_t math) {
  switch (math) {
    case CUDNN_DEFAULT_MATH:
      return "DEFAULT";
    case CUDNN_TENSOR_OP_MATH:
      return "TENSOR_OP";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
      return "TENSOR_OP_ALLOW_CONVERSION";
    case CUDNN_FMA_MATH:
      return "FMA";
  }
  return "UNKNOWN";
}

void configure_cublas(Precision p, cublasHandle_t handle) {
  // Default math: FP32 SGEMM without TF32 (TF32 only with CUBLAS_TF32_TENSOR_OP_MATH). bf16 names
  // its compute type in each cublasGemmEx call, so the handle's mode stays the default there.
  GT_CHECK(cublasSetMathMode(
      handle, p == Precision::Tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

void gemm(Precision p, cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b, int m,
          int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
  const float one = 1.0f, zero = 0.0f;
  if (p == Precision::Bf16) {
    // FP32 in memory, BF16 products (inputs rounded inside cuBLAS), FP32 accumulation and output.
    GT_CHECK(cublasGemmEx(handle, op_a, op_b, m, n, k, &one, a, CUDA_R_32F, lda, b, CUDA_R_32F, ldb,
                          &zero, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_16BF,
                          CUBLAS_GEMM_DEFAULT));
    return;
  }
  GT_CHECK(cublasSgemm(handle, op_a, op_b, m, n, k, &one, a, lda, b, ldb, &zero, c, ldc));
}

}  // namespace gputrain::cuda
