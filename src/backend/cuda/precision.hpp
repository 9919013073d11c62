// The CUDA engine's numerics, decided in one place: the element and accumulation types of the
// cuDNN descriptors, which cuDNN math types an algorithm may use, cuBLAS's math mode and its GEMM
// call. No other file names a cuDNN/cuBLAS math mode or data type, so a new precision mode
// (TF32, BF16 with FP32 accumulation) is a change to precision.cpp and the buffers it asks for.
//
// Fp32 (the only mode today, the parity mode): FP32 storage and FP32 FMA arithmetic, no TF32 —
// cuDNN CUDNN_FMA_MATH, cuBLAS CUBLAS_DEFAULT_MATH (which does not use TF32 for SGEMM) — so the
// engine matches the CPU engine and PyTorch with TF32 off to FP32 rounding.
#pragma once

#include <cublas_v2.h>
#include <cudnn.h>

#include <string>

#include "backend/cuda/cuda_resources.hpp"

namespace gputrain::cuda {

enum class Precision { Fp32 };

// "fp32 (FMA math, no TF32)"
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
