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
      return "bf16 (BF16 convolution and GEMM inputs, FP32 accumulation)";
  }
  return "?";
}

bool bf16_convolutions(Precision p) {
  return p == Precision::Bf16;
}

namespace {
// The element type of a convolution's tensors: BF16 in bf16 (PSEUDO_BFLOAT16_CONFIG, see the
// header), FP32 otherwise (FLOAT_CONFIG).
cudnnDataType_t conv_data_type(Precision p) {
  return bf16_convolutions(p) ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}
}  // namespace

TensorDesc activation_desc(Precision p, int n, int c, int h, int w) {
  return TensorDesc::nchw(conv_data_type(p), n, c, h, w);
}

FilterDesc filter_desc(Precision p, int o, int i, int kh, int kw) {
  return FilterDesc::oihw(conv_data_type(p), o, i, kh, kw);
}

// FP32 accumulation (compute type CUDNN_DATA_FLOAT) in every mode: FLOAT_CONFIG for FP32 data,
// PSEUDO_BFLOAT16_CONFIG for BF16 data (cuDNN has no BF16 accumulation). fp32: CUDNN_FMA_MATH, no
// TF32 tensor-core kernels (PyTorch's default allows TF32 for convolutions; gputrain's fp32 mode
// does not). tf32: tensor ops allowed (TF32 for FP32 data), as PyTorch sets them with allow_tf32.
// bf16: tensor ops (BF16 products, FP32 sums), as PyTorch sets them for BF16 convolutions.
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
      // TF32 tensor ops or plain FP32: both keep (at least) TF32 precision. ALLOW_CONVERSION
      // (FP32 data converted to FP16 for tensor cores) would lose FP32's range: refused.
      return math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
    case Precision::Bf16:
      // BF16 data: tensor ops multiply the BF16 values exactly and sum in FP32; FMA/DEFAULT math
      // does the same on the FP32 units (a product of two 8-bit significands fits FP32's 24).
      // ALLOW_CONVERSION permits down-conversion to FP16 (5 exponent bits against BF16's 8): it
      // would lose BF16's range (activations or gradients past 65504 or below 6e-8 overflow or
      // flush) and is refused here too.
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
