// The CUDA engine's numerics, decided in one place: the element and accumulation types of the
// cuDNN descriptors, which cuDNN math types an algorithm may use, cuBLAS's math mode and its GEMM
// call. No other file names a cuDNN/cuBLAS math mode or data type. The mode is config
// train.precision (gputrain::Precision, include/gputrain/precision.hpp). In every mode parameters,
// gradients, optimizer state (momentum), activations in memory and the loss are FP32; only the
// arithmetic inside convolutions and GEMMs changes (in bf16 also the rounding of a convolution's
// results to BF16 before they are widened back, see below).
//
// fp32 (the parity mode): FP32 storage and FP32 FMA arithmetic, no TF32 — cuDNN CUDNN_FMA_MATH,
//   cuBLAS CUBLAS_DEFAULT_MATH (which does not use TF32 for SGEMM) — so the engine matches the CPU
//   engine and PyTorch with TF32 off to FP32 rounding.
// tf32: cuDNN convolutions with CUDNN_TENSOR_OP_MATH (an algorithm of any math type is accepted:
//   tensor-op TF32 kernels where cuDNN ranks them best), cuBLAS CUBLAS_TF32_TENSOR_OP_MATH for the
//   SGEMMs. TF32 keeps FP32's range and rounds each product's inputs to 10 mantissa bits; sums
//   accumulate in FP32. This is PyTorch's allow_tf32 = True.
// bf16: convolution and GEMM inputs in BF16 (8 significant bits), FP32 accumulation, FP32
//   master weights, gradients and momentum — the arithmetic of PyTorch's autocast(bfloat16).
//   GEMMs (linear layers: forward, weight and input gradients): cublasGemmEx on the FP32 buffers
//   with CUBLAS_COMPUTE_32F_FAST_16BF, where cuBLAS rounds A and B to BF16 inside its tensor-core
//   kernel and accumulates and writes C in FP32: the arithmetic of FP32 → BF16 copies fed to
//   cublasGemmEx(CUDA_R_16BF, CUBLAS_COMPUTE_32F) without the copies' memory traffic (fc1's
//   weights are the largest tensor of a step).
//   Convolutions: cuDNN's legacy API has no BF16-input convolution with FP32 x/y tensors; its one
//   BF16 configuration, PSEUDO_BFLOAT16_CONFIG, takes x, w and y (and dy, dw, dx) all as
//   CUDNN_DATA_BFLOAT16 with compute type CUDNN_DATA_FLOAT (FP32 accumulation, FP32 alpha/beta).
//   cuDNN lists it for cudnnConvolutionForward, cudnnConvolutionBackwardData and
//   cudnnConvolutionBackwardFilter alike, on devices with BF16 support only (compute capability
//   8.0 and later: Ampere, Hopper, ...; docs.nvidia.com/deeplearning/cudnn/latest/api/
//   cudnn-cnn-library.html, "Supported Configurations"); PyTorch's cuDNN convolutions use the same
//   (BF16 tensors, FP32 compute type, CUDNN_TENSOR_OP_MATH). So in bf16 the descriptors of x, w
//   and y are BF16 and CudaLayers (cuda_layers.hpp: ConvOperands) gives cuDNN BF16 scratch copies:
//   x and w rounded to BF16 before the call (kernels/cast.cuh, round to nearest even, bit for bit
//   cpu::round_to_bf16), y written by cuDNN as BF16 (its FP32 sums rounded once) and widened to
//   the FP32 activation slot, where bias and ReLU run in FP32; backward likewise: dy (after the
//   folded ReLU's mask) rounded to BF16, dw and dx written as BF16 by cuDNN and widened to the
//   FP32 gradient buffers. cpu::conv2d_forward_bf16_reference (include/gputrain/ops.hpp) is the
//   forward's exact meaning on the CPU. Below sm_80 cuDNN refuses BF16 convolutions; planning
//   then fails with the list of what it offered (conv_plans.hpp).
#pragma once

#include <cublas_v2.h>
#include <cudnn.h>

#include <string>

#include "backend/cuda/cuda_resources.hpp"
#include "gputrain/precision.hpp"

namespace gputrain::cuda {

// "fp32 (FMA math, no TF32)", "tf32 (TF32 tensor ops)", ...
std::string precision_name(Precision p);

// Whether convolutions take BF16 operands (BF16 descriptors: the conv buffers are BF16 copies).
bool bf16_convolutions(Precision p);

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
