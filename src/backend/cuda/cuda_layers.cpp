// See cuda_layers.hpp.
#include "backend/cuda/cuda_layers.hpp"

#include <algorithm>

#include "backend/cuda/conv_plans.hpp"
#include "launchers.hpp"

namespace gputrain::cuda {

namespace k = gputrain::kernels;

CudaLayers::CudaLayers(const ModelPlan& plan, Precision precision)
    : plan_(plan), precision_(precision) {
  slot_floats_.assign(1, plan_.input.size());
  int current = 0;
  layers_.resize(plan_.layers.size());
  for (size_t i = 0; i < plan_.layers.size(); ++i) {
    const LayerPlan& lp = plan_.layers[i];
    Layer& l = layers_[i];
    l.kind = lp.config.kind;
    l.in = lp.input;
    l.out = lp.output;
    l.name = !lp.config.name.empty() ? lp.config.name : "layer " + std::to_string(i + 1);
    l.in_slot = current;
    l.ordinal = int(i);
    switch (l.kind) {
      case LayerKind::Relu:
      case LayerKind::Flatten:
      case LayerKind::Dropout:
        l.out_slot = current;  // in place / a view
        break;
      case LayerKind::Conv2d:
      case LayerKind::Linear:
      case LayerKind::MaxPool2d:
      case LayerKind::BatchNorm2d:
      case LayerKind::AvgPool2d:
      case LayerKind::GlobalAvgPool:
        slot_floats_.push_back(l.out.size());
        current = l.out_slot = int(slot_floats_.size()) - 1;
        break;
    }
    if (l.kind == LayerKind::Conv2d || l.kind == LayerKind::Linear ||
        l.kind == LayerKind::BatchNorm2d) {
      l.w_offset = plan_.weight(lp).offset;
      l.w_count = plan_.weight(lp).count;
      l.b_offset = plan_.bias(lp).offset;
    }
    if (l.kind == LayerKind::BatchNorm2d) {
      l.running_mean_offset = plan_.buffers[size_t(lp.running_mean_index)].offset;
      l.running_var_offset = plan_.buffers[size_t(lp.running_var_index)].offset;
      l.eps = float(lp.config.eps);
      l.momentum = float(lp.config.momentum);
    }
    if (l.kind == LayerKind::Dropout) l.p = float(lp.config.p);
    l.fused_relu = lp.fused_relu;  // ReLU folding: decided once in the plan
    l.folded = lp.folded;
    if (l.kind == LayerKind::Conv2d) {
      const int kernel = lp.config.kernel;
      l.filter = filter_desc(precision, l.out.channels, l.in.channels, kernel, kernel);
      l.conv = conv_desc(precision, lp.config.padding, lp.config.stride);
    }
  }
}

void CudaLayers::plan_allocations(int batch, AllocationList& list) {
  act_.resize(slot_floats_.size());
  grad_.resize(slot_floats_.size());
  for (size_t s = 0; s < slot_floats_.size(); ++s) {
    const size_t n = size_t(batch) * size_t(slot_floats_[s]);
    list.add(act_[s], n, "activations");
    list.add(grad_[s], n, "activation gradients");
  }
  for (Layer& l : layers_) {
    if (l.kind == LayerKind::MaxPool2d) list.add(l.argmax, size_t(batch) * l.out.size(), "argmax");
    if (l.kind == LayerKind::BatchNorm2d) {
      list.add(l.save_mean, size_t(l.out.channels), "batch statistics");
      list.add(l.save_invstd, size_t(l.out.channels), "batch statistics");
    }
    if (l.kind == LayerKind::Dropout && l.p > 0.0f)
      list.add(l.mask, size_t(batch) * l.out.size(), "dropout masks");
  }
  if (!bf16_convolutions(precision_)) return;
  // One BF16 scratch set for all conv layers, each buffer sized for the largest layer.
  size_t in = 0, out = 0, weights = 0;
  for (const Layer& l : layers_) {
    if (l.kind != LayerKind::Conv2d) continue;
    in = std::max(in, size_t(batch) * size_t(l.in.size()));
    out = std::max(out, size_t(batch) * size_t(l.out.size()));
    weights = std::max(weights, l.w_count);
  }
  if (weights == 0) return;  // no conv layer
  list.add(conv_x_, in, "bf16 convolution inputs");
  list.add(conv_y_, out, "bf16 convolution outputs / output gradients");
  list.add(conv_w_, weights, "bf16 convolution weights");
  list.add(conv_dw_, weights, "bf16 convolution weight gradients");
  list.add(conv_dx_, in, "bf16 convolution input gradients");
}

ConvOperands CudaLayers::conv_operands(const PassContext& c, const Layer& l) const {
  ConvOperands op;
  if (bf16_convolutions(precision_)) {
    op.x = conv_x_.get();
    op.w = conv_w_.get();
    op.y = conv_y_.get();
    op.dy = conv_y_.get();
    op.dw = conv_dw_.get();
    op.dx = conv_dx_.get();
  } else {
    op.x = activation(l.in_slot);
    op.w = c.params + l.w_offset;
    op.y = activation(l.out_slot);
    op.dy = activation_grad(l.out_slot);
    op.dw = c.grads + l.w_offset;
    op.dx = activation_grad(l.in_slot);
  }
  return op;
}

// y[n,O,Ho,Wo] = conv(x[n,C,H,W], w[O,C,k,k]); then y += b[O] (and ReLU) in place, in FP32.
void CudaLayers::conv_forward(const PassContext& c, const BatchPlan& bp, size_t i, int n) const {
  const float one = 1.0f, zero = 0.0f;  // FP32 scaling factors in both cuDNN configurations
  const Layer& l = layers_[i];
  const ConvShape& s = bp.conv[i];
  const ConvOperands op = conv_operands(c, l);
  const bool bf16 = bf16_convolutions(precision_);
  float* y = activation(l.out_slot);
  if (bf16) {
    k::launch_round_to_bf16(int64_t(n) * l.in.size(), activation(l.in_slot), conv_x_.get(),
                            c.stream);
    k::launch_round_to_bf16(int64_t(l.w_count), c.params + l.w_offset, conv_w_.get(), c.stream);
  }
  GT_CHECK(cudnnConvolutionForward(c.cudnn, &one, s.x, op.x, l.filter, op.w, l.conv, s.fwd_algo(),
                                   c.workspace, c.workspace_bytes, &zero, s.y, op.y));
  if (bf16) k::launch_bf16_to_float(int64_t(n) * l.out.size(), conv_y_.get(), y, c.stream);
  k::launch_bias_act(y, c.params + l.b_offset, n, l.out.channels,
                     int64_t(l.out.height) * l.out.width, l.fused_relu, c.stream);
}

void CudaLayers::conv_backward(const PassContext& c, const BatchPlan& bp, size_t i, int n) const {
  const float one = 1.0f, zero = 0.0f;
  const Layer& l = layers_[i];
  const ConvShape& s = bp.conv[i];
  float* dy = activation_grad(l.out_slot);
  // db[O] = Σ_{n,p} dy; with a folded ReLU, first dy ← dy·(y > 0) in place (y is the post-ReLU
  // output), which is the gradient the conv itself sees (and, in bf16, the one rounded below).
  k::launch_bias_grad(dy, l.fused_relu ? activation(l.out_slot) : nullptr,
                      l.fused_relu ? dy : nullptr, c.grads + l.b_offset, n, l.out.channels,
                      int64_t(l.out.height) * l.out.width, c.workspace, c.workspace_bytes,
                      c.stream);
  const ConvOperands op = conv_operands(c, l);
  const bool bf16 = bf16_convolutions(precision_);
  if (bf16) {
    k::launch_round_to_bf16(int64_t(n) * l.out.size(), dy, conv_y_.get(), c.stream);
    k::launch_round_to_bf16(int64_t(n) * l.in.size(), activation(l.in_slot), conv_x_.get(),
                            c.stream);
    k::launch_round_to_bf16(int64_t(l.w_count), c.params + l.w_offset, conv_w_.get(), c.stream);
  }
  // dw[O,C,k,k] = Σ_n x ⋆ dy (written, beta = 0).
  GT_CHECK(cudnnConvolutionBackwardFilter(c.cudnn, &one, s.x, op.x, s.y, op.dy, l.conv,
                                          s.bwd_filter_algo(), c.workspace, c.workspace_bytes,
                                          &zero, l.filter, op.dw));
  if (bf16)
    k::launch_bf16_to_float(int64_t(l.w_count), conv_dw_.get(), c.grads + l.w_offset, c.stream);
  // No gradient for the input batch (slot 0): it is data.
  if (l.in_slot == 0 || !s.has_bwd_data) return;
  GT_CHECK(cudnnConvolutionBackwardData(c.cudnn, &one, l.filter, op.w, s.y, op.dy, l.conv,
                                        s.bwd_data_algo(), c.workspace, c.workspace_bytes, &zero,
                                        s.x, op.dx));
  if (bf16)
    k::launch_bf16_to_float(int64_t(n) * l.in.size(), conv_dx_.get(), activation_grad(l.in_slot),
                            c.stream);
}

size_t CudaLayers::kernel_workspace_bytes(int n) const {
  size_t ws = k::softmax_xent_workspace_bytes(n);
  for (const Layer& l : layers_) {
    if (l.kind == LayerKind::BatchNorm2d)
      ws = std::max(
          ws, k::batchnorm_workspace_bytes(n, l.out.channels, int64_t(l.out.height) * l.out.width));
    if (l.kind != LayerKind::Conv2d && l.kind != LayerKind::Linear) continue;
    const int64_t plane = l.kind == LayerKind::Conv2d ? int64_t(l.out.height) * l.out.width : 1;
    ws = std::max(ws, k::bias_grad_workspace_bytes(n, l.out.channels, plane));
  }
  return ws;
}

void CudaLayers::forward(const PassContext& c, const BatchPlan& bp, int n) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const float* x = activation(l.in_slot);
    float* y = activation(l.out_slot);
    switch (l.kind) {
      case LayerKind::Conv2d:
        conv_forward(c, bp, i, n);
        break;
      case LayerKind::Linear: {
        // Row-major y[n,O] = x[n,I]·W[O,I]^T. cuBLAS is column-major, where row-major y is
        // y^T [O,n] (ld O), W is W^T [I,O] (ld I) and x is x^T [I,n] (ld I):
        // y^T = op_T(W^T) · x^T, i.e. m=O, n=n, k=I.
        const int I = int(l.in.size()), O = int(l.out.size());
        gemm(c.precision, c.cublas, CUBLAS_OP_T, CUBLAS_OP_N, O, n, I, c.params + l.w_offset, I, x,
             I, y, O);
        k::launch_bias_act(y, c.params + l.b_offset, n, O, 1, l.fused_relu, c.stream);
        break;
      }
      case LayerKind::Relu:
        if (!l.folded) k::launch_relu_forward(x, y, int64_t(n) * l.out.size(), c.stream);
        break;
      case LayerKind::MaxPool2d: {
        const PoolGeometry g = plan_.layers[i].pool_geometry(n);
        k::launch_maxpool2d_forward(g, x, y, l.argmax.get(), c.stream);
        break;
      }
      case LayerKind::Flatten:
        break;  // [n,C,H,W] is already [n, C·H·W] in memory
      case LayerKind::BatchNorm2d: {
        const int64_t plane = int64_t(l.out.height) * l.out.width;
        const float* w = c.params + l.w_offset;
        const float* b = c.params + l.b_offset;
        float* running_mean = c.buffers + l.running_mean_offset;
        float* running_var = c.buffers + l.running_var_offset;
        if (c.training)
          k::launch_batchnorm2d_forward_train(
              n, l.out.channels, plane, x, w, b, l.eps, l.momentum, running_mean, running_var, y,
              l.save_mean.get(), l.save_invstd.get(), c.workspace, c.workspace_bytes, c.stream);
        else
          k::launch_batchnorm2d_forward_eval(n, l.out.channels, plane, x, w, b, running_mean,
                                             running_var, l.eps, y, c.stream);
        break;
      }
      case LayerKind::AvgPool2d:
        k::launch_avgpool2d_forward(plan_.layers[i].pool_geometry(n), x, y, c.stream);
        break;
      case LayerKind::GlobalAvgPool:
        k::launch_global_avgpool_forward(n, l.in.channels, int64_t(l.in.height) * l.in.width, x, y,
                                         c.stream);
        break;
      case LayerKind::Dropout:
        // In place (y == x); the identity in evaluation and at p = 0.
        if (c.training && l.p > 0.0f)
          k::launch_dropout_forward(int64_t(n) * l.out.size(), l.out.size(), c.order, c.step,
                                    c.seed, l.ordinal, l.p, x, y, l.mask.get(), c.stream);
        break;
    }
  }
}

void CudaLayers::backward(const PassContext& c, const BatchPlan& bp, int n) const {
  for (size_t i = layers_.size(); i-- > 0;) {
    const Layer& l = layers_[i];
    const float* x = activation(l.in_slot);
    const float* y = activation(l.out_slot);
    float* dy = activation_grad(l.out_slot);
    // No gradient for the input batch (slot 0): it is data.
    float* dx = l.in_slot != 0 ? activation_grad(l.in_slot) : nullptr;
    switch (l.kind) {
      case LayerKind::Conv2d:
        conv_backward(c, bp, i, n);
        break;
      case LayerKind::Linear: {
        const int I = int(l.in.size()), O = int(l.out.size());
        k::launch_bias_grad(dy, l.fused_relu ? y : nullptr, l.fused_relu ? dy : nullptr,
                            c.grads + l.b_offset, n, O, 1, c.workspace, c.workspace_bytes,
                            c.stream);
        // Row-major dW[O,I] = dy[n,O]^T·x[n,I]. Column-major: dW^T [I,O] (ld I) =
        // x^T [I,n] (ld I, op N) · dy [n,O] (stored as dy^T [O,n], ld O, op T); m=I, n=O, k=n.
        gemm(c.precision, c.cublas, CUBLAS_OP_N, CUBLAS_OP_T, I, O, n, x, I, dy, O,
             c.grads + l.w_offset, I);
        // Row-major dx[n,I] = dy[n,O]·W[O,I]. Column-major: dx^T [I,n] (ld I) =
        // W^T [I,O] (ld I, op N) · dy^T [O,n] (ld O, op N); m=I, n=n, k=O.
        if (dx)
          gemm(c.precision, c.cublas, CUBLAS_OP_N, CUBLAS_OP_N, I, n, O, c.params + l.w_offset, I,
               dy, O, dx, I);
        break;
      }
      case LayerKind::Relu:
        // In place (dx == dy: same slot); y is this ReLU's output.
        if (!l.folded && dx)
          k::launch_relu_backward(y, dy, dx, int64_t(n) * l.out.size(), c.stream);
        break;
      case LayerKind::MaxPool2d:
        if (dx) {
          const PoolGeometry g = plan_.layers[i].pool_geometry(n);
          k::launch_maxpool2d_backward(g, dy, l.argmax.get(), dx, c.stream);
        }
        break;
      case LayerKind::Flatten:
        break;
      case LayerKind::BatchNorm2d:
        // dw, db written; dx skipped for the input batch.
        k::launch_batchnorm2d_backward(
            n, l.out.channels, int64_t(l.out.height) * l.out.width, x, c.params + l.w_offset,
            l.save_mean.get(), l.save_invstd.get(), dy, dx, c.grads + l.w_offset,
            c.grads + l.b_offset, c.workspace, c.workspace_bytes, c.stream);
        break;
      case LayerKind::AvgPool2d:
        if (dx) k::launch_avgpool2d_backward(plan_.layers[i].pool_geometry(n), dy, dx, c.stream);
        break;
      case LayerKind::GlobalAvgPool:
        if (dx)
          k::launch_global_avgpool_backward(n, l.in.channels, int64_t(l.in.height) * l.in.width, dy,
                                            dx, c.stream);
        break;
      case LayerKind::Dropout:
        // In place (dx == dy: same slot).
        if (dx && l.p > 0.0f)
          k::launch_dropout_backward(int64_t(n) * l.out.size(), l.p, l.mask.get(), dy, dx,
                                     c.stream);
        break;
    }
  }
}

}  // namespace gputrain::cuda
