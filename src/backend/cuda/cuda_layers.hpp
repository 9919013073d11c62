// The model lowered for the GPU: per layer its activation slots, parameter offsets and cuDNN
// descriptors, and the forward and backward passes over them (cuDNN convolutions, cuBLAS GEMMs,
// hand-written kernels), enqueued on one stream.
//
// Buffers ("slots"). Slot 0 is the normalized input batch [B, C, H, W]; conv2d, linear, maxpool2d,
// batchnorm2d, avgpool2d and global_avgpool each write a new slot [B, out]; relu and dropout work
// in place on their input's slot and flatten is a view of it, so they add none. That is safe
// because no op's backward needs the output of the op *before* a ReLU or dropout (conv/linear
// backward read their input x and weights, batchnorm2d its input x and saved statistics; maxpool
// backward reads its argmax, the average pools nothing), except a folded ReLU's sign test y > 0,
// which dropout keeps (it scales by 1/(1 − p) > 0 or zeroes a unit whose gradient it zeroes too);
// ReLU's backward only needs its own output y, dropout's its mask. Each slot has a gradient slot
// of the same size.
//
// Modes. The training pass (PassContext::training) normalizes with batch statistics and updates
// the running statistics in the model buffers, and drops units keyed by the device's step state
// (the sample indices order[first + i] and the epoch); the evaluation pass normalizes with the
// running statistics and leaves dropout out (the identity). A ReLU right after a conv2d/linear is
// folded into it (decided by ModelPlan): forward runs bias+ReLU in one kernel, backward runs "ReLU
// backward + bias gradient" in one kernel (launch_bias_grad with relu_y).
//
// Convolution operands. In fp32/tf32 cuDNN reads and writes the FP32 slots and the flat parameter
// and gradient buffers directly. In bf16 its descriptors are BF16 (precision.hpp) and it works on
// BF16 scratch copies instead, one set shared by every conv layer (passes run one after another
// on one stream): x [B·in], y / dy [B·out] (the forward output, later the output gradient: never
// live together), w and dw [weights], dx [B·in], each sized for the largest conv layer. Forward:
// x, w → BF16; cuDNN → y (BF16); y → the FP32 slot; bias + ReLU in FP32. Backward: bias gradient
// (with the folded ReLU's mask applied to dy in place) first; dy, x, w → BF16; cuDNN → dw, dx
// (BF16) → the FP32 gradient buffers. conv_operands() is the one place that says which buffers a
// pass uses, for the passes here and for conv_plans.cpp's verification runs alike.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/cuda_resources.hpp"
#include "backend/cuda/precision.hpp"
#include "gputrain/model.hpp"
#include "launchers.hpp"

namespace gputrain::cuda {

struct BatchPlan;  // conv_plans.hpp

struct Layer {
  LayerKind kind = LayerKind::Relu;
  std::string name;  // for messages: "conv1", "layer 3 (maxpool2d)"
  ActivationShape in, out;
  int in_slot = 0, out_slot = 0;
  bool fused_relu = false;            // conv2d/linear: the next layer's ReLU runs here
  bool folded = false;                // relu: run by the previous conv2d/linear, nothing of its own
  size_t w_offset = 0, b_offset = 0;  // into the flat parameter / gradient buffers (floats)
  size_t w_count = 0;                 // conv2d, linear, batchnorm2d: number of weights
  FilterDesc filter;                  // conv2d: w [O, C, k, k]
  ConvDesc conv;                      // conv2d
  DeviceBuffer<int32_t> argmax;       // maxpool2d: [B, C, Ho, Wo]
  int ordinal = 0;                    // the index in model.layers (keys dropout's draws)
  // batchnorm2d: running statistics in the model buffers (floats), eps and momentum, and the
  // batch statistics its backward reads.
  size_t running_mean_offset = 0, running_var_offset = 0;
  float eps = 1e-5f, momentum = 0.1f;
  DeviceBuffer<float> save_mean, save_invstd;  // [C]
  float p = 0.0f;                              // dropout: the rate (0: the identity)
  DeviceBuffer<uint8_t> mask;                  // dropout: [B, size], 1 = kept
};

// What a pass needs besides the layers: handles, the stream, the flat buffers and the scratch.
struct PassContext {
  Precision precision = Precision::Fp32;
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  cudaStream_t stream = nullptr;
  float* params = nullptr;
  float* grads = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  float* buffers = nullptr;  // the model buffers (batchnorm2d running statistics), flat
  bool training = false;     // batch statistics + dropout (forward_backward) or eval mode
  // Training only: the device's order and step state (position in the order, epoch) and the
  // run's seed, which key dropout's draws.
  const int32_t* order = nullptr;
  const kernels::StepState* step = nullptr;
  uint64_t seed = 0;
};

// A convolution's operands in its cuDNN data type: FP32 buffers (fp32, tf32) or the BF16 scratch
// (bf16). y and dy are the same scratch in bf16.
struct ConvOperands {
  const void* x = nullptr;   // [n, C, H, W]
  const void* w = nullptr;   // [O, C, k, k]
  void* y = nullptr;         // [n, O, Ho, Wo], written by the forward
  const void* dy = nullptr;  // [n, O, Ho, Wo]
  void* dw = nullptr;        // [O, C, k, k], written by the weight gradient
  void* dx = nullptr;        // [n, C, H, W], written by the input gradient
};

class CudaLayers {
 public:
  CudaLayers(const ModelPlan& plan, Precision precision);
  // The layers keep a reference to the plan: a temporary would dangle.
  CudaLayers(ModelPlan&& plan, Precision precision) = delete;

  // Declares the activation and gradient slots and the per-layer buffers (argmax, batch
  // statistics, dropout masks) for batches of `batch`; in bf16 also the convolutions' BF16 scratch.
  void plan_allocations(int batch, AllocationList& list);

  // The buffers conv layer l's cuDNN calls read and write (see the file comment); c gives the
  // flat parameter and gradient buffers.
  ConvOperands conv_operands(const PassContext& c, const Layer& l) const;

  // Scratch the hand-written kernels of a pass need at batch n (the cuDNN part is in BatchPlan).
  size_t kernel_workspace_bytes(int n) const;

  // Enqueue only: no sync, no allocation. forward: slot 0 → logits, in c.training's mode;
  // backward (after a training forward): dlogits → gradients of every parameter (written, not
  // accumulated) and of every slot but 0 (data).
  void forward(const PassContext& c, const BatchPlan& bp, int n) const;
  void backward(const PassContext& c, const BatchPlan& bp, int n) const;

  const std::vector<Layer>& layers() const { return layers_; }
  Precision precision() const { return precision_; }
  float* activation(int slot) const { return act_[size_t(slot)].get(); }
  float* activation_grad(int slot) const { return grad_[size_t(slot)].get(); }
  float* input() const { return activation(0); }
  float* logits() const { return activation(layers_.back().out_slot); }
  float* dlogits() const { return activation_grad(layers_.back().out_slot); }

 private:
  void conv_forward(const PassContext& c, const BatchPlan& bp, size_t i, int n) const;
  void conv_backward(const PassContext& c, const BatchPlan& bp, size_t i, int n) const;

  const ModelPlan& plan_;
  Precision precision_;
  std::vector<Layer> layers_;
  std::vector<int64_t> slot_floats_;  // per sample
  std::vector<DeviceBuffer<float>> act_, grad_;
  // bf16: the convolutions' BF16 scratch (raw bits, as kernels/cast.cuh writes them).
  DeviceBuffer<uint16_t> conv_x_, conv_y_, conv_w_, conv_dw_, conv_dx_;
};

}  // namespace gputrain::cuda
