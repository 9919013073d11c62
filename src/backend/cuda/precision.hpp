// The CUDA engine's numerics, decided in one place: the element and accumulation types of the
// cuDNN descriptors, which cuDNN math types an algorithm may use, cuBLAS's math mode and its GEMM
// call. No other file names a cuDNN/cuBLAS math mode or data type. The mode is config
// train.precision (gputrain::Precision, include/gputrain/precision.hpp). In every mode parameters,
// gradients, optimizer state (momentum), activations in memory and the loss are FP32; only the
// multiplications inside convolutions and GEMMs change.
//
// fp32 (the parity mode): FP32 storage and FP32 FMA arithmetic, no TF32 — cuDNN CUDNN_FMA_MATH,
//   cuBLAS CUBLAS_DEFAULT_MATH (which does not use TF32 for SGEMM) — so the engine matches the CPU
//   engine and PyTorch with TF32 off to FP32 rounding.
// tf32: cuDNN convolutions with CUDNN_TENSOR_OP_MATH (an algorithm of any math type is accepted:
//   tensor-op TF32 kernels where cuDNN ranks them best), cuBLAS CUBLAS_TF32_TENSOR_OP_MATH for the
//   SGEMMs. TF32 keeps FP32's range and rounds each product's inputs to 10 mantissa bits; sums
//   accumulate in FP32. This is PyTorch's allow_tf32 = True.
// bf16: the GEMMs (linear layers: forward, weight and input gradients) take BF16 inputs with FP32
//   accumulation: cublasGemmEx on the FP32 buffers with CUBLAS_COMPUTE_32F_FAST_16BF, where cuBLAS
//   rounds A and B to BF16 inside its tensor-core kernel and accumulates and writes C in FP32. This
//   is the arithmetic of FP32 → BF16 copies fed to cublasGemmEx(CUDA_R_16BF, CUBLAS_COMPUTE_32F)
//   without the copies' memory traffic (fc1's weights are the largest tensor of a step).
//   Convolutions run as in tf32 (TF32 tensor ops, FP32 storage): BF16 convolutions need BF16
//   copies of activations and weights and BF16 cuDNN descriptors for x, w and y (cuDNN has no BF16
//   conv with FP32 tensors); the casting kernels for that (kernels/cast.cuh, checked bit for bit
//   against cpu::round_to_bf16) exist, the conv buffers do not yet, so bf16's convolutions are
//   TF32 — at least as precise as BF16 (10 mantissa bits against 7).
#pragma once

#include <cublas_v2.h>
#include <cudnn.h>

#include <string>

#include "backend/cuda/cuda_resources.hpp"
#include "gputrain/precision.hpp"

namespace gputrain::cuda {

// "fp32 (FMA math, no TF32)", "tf32 (TF32 tensor ops)", ...
std::string precision_name(Precision p);

// cuDNN descriptors of activations [n, c, h, w], conv weights [o, i, kh, kw] and a convolution.
TensorDesc activation_desc(Precision p, int n, int c, int h, int w);
FilterDesc filter_desc(Precision p, int o, int i, int kh, int kw);
ConvDesc conv_desc(Precision p, int padding, int stride);

// Whether a cuDNN algorithm result computing with `math` keeps this precision's numerics.
bool accepts_conv_math(Precision p, cudnnMathType_t math);
// "FMA", "TENSOR_OP", ... (for reports and error messages).
const char* math_type_name(cudnnMathType_t math);

// Sets the handle's math mode for this precision (after cublasSetStream).
void configure_cublas(Precision p, cublasHandle_t handle);

// Column-major C[m,n] = op(A)·op(B) (alpha 1, beta 0: C is written) in this precision, enqueued on
// the handle's stream; throws RuntimeFailure when cuBLAS refuses.
void gemm(Precision p, cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b, int m,
          int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc);

}  // namespace gputrain::cuda
