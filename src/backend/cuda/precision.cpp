// See precision.hpp: the one file that names cuDNN/cuBLAS math modes and data types.
#include "backend/cuda/precision.hpp"

#include "backend/cuda/cuda_check.hpp"

namespace gputrain::cuda {

std::string precision_name(Precision p) {
  switch (p) {
    case Precision::Fp32:
      return "fp32 (FMA math, no TF32)";
  }
  return "?";
}

TensorDesc activation_desc(Precision, int n, int c, int h, int w) {
  return TensorDesc::nchw(CUDNN_DATA_FLOAT, n, c, h, w);
}

FilterDesc filter_desc(Precision, int o, int i, int kh, int kw) {
  return FilterDesc::oihw(CUDNN_DATA_FLOAT, o, i, kh, kw);
}

// FP32 accumulation; CUDNN_FMA_MATH: no TF32 tensor-core kernels (PyTorch's default allows TF32
// for convolutions; gputrain's fp32 mode does not).
ConvDesc conv_desc(Precision, int padding, int stride) {
  return ConvDesc::create(padding, stride, CUDNN_DATA_FLOAT, CUDNN_FMA_MATH);
}

bool accepts_conv_math(Precision p, cudnnMathType_t math) {
  switch (p) {
    case Precision::Fp32:
      // DEFAULT math for FP32 data is FP32 arithmetic too (tensor ops need a TENSOR_OP type).
      return math == CUDNN_FMA_MATH || math == CUDNN_DEFAULT_MATH;
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

void configure_cublas(Precision, cublasHandle_t handle) {
  // Default math: FP32 SGEMM without TF32 (TF32 only with CUBLAS_TF32_TENSOR_OP_MATH).
  GT_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
}

void gemm(Precision, cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b, int m,
          int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
  const float one = 1.0f, zero = 0.0f;
  GT_CHECK(cublasSgemm(handle, op_a, op_b, m, n, k, &one, a, lda, b, ldb, &zero, c, ldc));
}

}  // namespace gputrain::cuda
