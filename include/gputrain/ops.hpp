// The operations of a training step, CPU versions. These define what each op means; the CUDA
// kernels (kernels/*.cu) and cuDNN/cuBLAS paths compute the same and are tested against these.
// Layout: NCHW activations, conv weights O×I×kH×kW, linear weights out×in (PyTorch's).
// Gradients are written (not accumulated) unless a function says otherwise.
#pragma once

#include <cstdint>

#include "gputrain/augment.hpp"
#include "gputrain/geometry.hpp"

namespace gputrain::cpu {

// Scratch space the conv ops need (im2col columns per thread); query, allocate once, pass in.
int64_t conv_workspace_floats(const ConvGeometry& g, int threads);

// y[N,O,Ho,Wo] = conv(x[N,C,H,W], w[O,C,k,k]) + b[O] (cross-correlation, as nn.Conv2d);
// `relu` applies max(y, 0) while each sample's output is still in cache (a fused conv → ReLU).
void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y,
                    float* workspace, int threads, bool relu = false);
// dx (may be null: first layer), dw[O,C,k,k], db[O] from dy[N,O,Ho,Wo].
void conv2d_backward(const ConvGeometry& g, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, float* workspace, int threads);

// Reference direct convolution (seven nested loops), for tests only.
void conv2d_forward_direct(const ConvGeometry& g, const float* x, const float* w, const float* b,
                           float* y);

// y[N,O] = x[N,I] · w[O,I]^T + b[O]; `relu` as for conv2d_forward.
void linear_forward(int batch, int in_features, int out_features, const float* x, const float* w,
                    const float* b, float* y, bool relu = false);
// dx[N,I] (may be null), dw[O,I], db[O] from dy[N,O].
void linear_backward(int batch, int in_features, int out_features, const float* x, const float* w,
                     const float* dy, float* dx, float* dw, float* db);

// y = max(x, 0); may run in place (y == x).
void relu_forward(int64_t n, const float* x, float* y);
// dx = dy where y > 0 else 0 (y is the forward output); may run in place (dx == dy).
void relu_backward(int64_t n, const float* y, const float* dy, float* dx);

// y[N,C,Ho,Wo] = max over each window; argmax[N,C,Ho,Wo] = index of the max within the input plane
// (h*W + w; the first maximum in row-major window order wins, as PyTorch's CPU kernel).
void maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax);
// dx[N,C,H,W] = 0, then dx[argmax] += dy (windows may overlap when stride < kernel).
void maxpool2d_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax, float* dx);

// ---- batchnorm2d, average pooling, dropout (src/backend/cpu/norm_pool_dropout.cpp) ----
// x, y, dx, dy are [n, c, plane] (plane = H·W); w, b, running statistics, saved statistics [c].
// Per-channel sums are accumulated in double in a fixed order (results independent of threads).
//
// Training (torch.nn.BatchNorm2d in train mode): per channel the mean and biased variance over
// N, H, W (M = n·plane values); invstd = 1/sqrt(var + eps); y = x·α + β with α = invstd·w,
// β = b − mean·α (torch's CPU kernel's order); save_mean = mean, save_invstd = invstd (for the
// backward); running_mean = (1 − momentum)·running_mean + momentum·mean and running_var likewise
// with the unbiased variance var·M/(M − 1) (the biased one when M = 1), computed in double.
void batchnorm2d_forward_train(int n, int c, int64_t plane, const float* x, const float* w,
                               const float* b, float eps, float momentum, float* running_mean,
                               float* running_var, float* y, float* save_mean, float* save_invstd);
// Evaluation: y = x·α + β with α = w/sqrt(running_var + eps), β = b − running_mean·α.
void batchnorm2d_forward_eval(int n, int c, int64_t plane, const float* x, const float* w,
                              const float* b, const float* running_mean, const float* running_var,
                              float eps, float* y);
// Backward of the training forward: with x̂ = (x − mean)·invstd, db = Σ dy, dw = Σ dy·x̂ (written,
// not accumulated), dx = w·invstd·(dy − db/M − x̂·dw/M). dx may be null (first layer).
void batchnorm2d_backward(int n, int c, int64_t plane, const float* x, const float* w,
                          const float* save_mean, const float* save_invstd, const float* dy,
                          float* dx, float* dw, float* db);

// y[N,C,Ho,Wo] = the mean of each k×k window (nn.AvgPool2d: no padding, floor mode; the sum in
// float in row-major window order, then divided by k·k).
void avgpool2d_forward(const PoolGeometry& g, const float* x, float* y);
// dx[N,C,H,W] = 0, then each window's dx += dy / (k·k) (windows may overlap when stride < kernel).
void avgpool2d_backward(const PoolGeometry& g, const float* dy, float* dx);

// y[N,C] = the mean of each plane (summed in double); nn.AdaptiveAvgPool2d(1).
void global_avgpool_forward(int n, int c, int64_t plane, const float* x, float* y);
// dx[N,C,plane] = dy[N,C] / plane.
void global_avgpool_backward(int n, int c, int64_t plane, const float* dy, float* dx);

// Dropout in training over `count` units, `per_sample` units per sample: unit i belongs to data
// set sample sample_index[i / per_sample] and is kept when dropout_keep(dropout_sample_key(seed,
// epoch, sample, layer), i % per_sample, dropout_drop_threshold(p)) (include/gputrain/dropout.hpp);
// y = kept ? x·dropout_scale(p) : 0, mask[i] = kept (1) or 0.
void dropout_forward(int64_t count, int64_t per_sample, const int32_t* sample_index, uint64_t seed,
                     int64_t epoch, int layer, float p, const float* x, float* y, uint8_t* mask);
// dx = mask ? dy·dropout_scale(p) : 0; may run in place (dx == dy).
void dropout_backward(int64_t n, float p, const uint8_t* mask, const float* dy, float* dx);

// Softmax cross-entropy over logits[N,K] (numerically stable: log-sum-exp around the row max).
// Writes dlogits = (softmax - onehot(label)) / grad_scale (grad_scale = batch for the mean loss;
// dlogits may be null for evaluation) and predicted[N] = argmax (first max wins; may be null).
// Returns the summed (not averaged) loss; *correct gets the number of rows whose argmax == label.
// label_smoothing ε as F.cross_entropy(label_smoothing=ε): the target is (1 − ε)·onehot + ε/K, so
// the loss is (1 − ε)·(−log p_label) + ε/K·Σ_k(−log p_k) and dlogits = (softmax − target) / scale.
double softmax_cross_entropy(int batch, int classes, const float* logits, const int32_t* labels,
                             float grad_scale, float* dlogits, int32_t* predicted, int64_t* correct,
                             float label_smoothing = 0.0f);

// torch.nn.utils.clip_grad_norm_(max_norm) over one flat buffer of all gradients: the global L2
// norm ‖g‖ (accumulated in double in a fixed order), then g *= min(1, max_norm / (‖g‖ + 1e-6)).
// Returns ‖g‖ before clipping.
double clip_grad_norm(int64_t n, float* g, float max_norm);

struct SgdParams {
  float lr = 0.01f, momentum = 0.0f, weight_decay = 0.0f;
  bool nesterov = false;
};
// torch.optim.SGD, element-wise over the flat buffers (v is untouched when momentum == 0):
//   g' = g + wd·w;  v = μ·v + g';  w -= lr · (nesterov ? g' + μ·v : v)
// v starts at zero, which gives torch's first step (its buffer starts as a copy of g').
// `decay` (may be null: every element decays): wd applies to element i only where decay[i] != 0
// (optimizer.hpp: weight_decay_mask); elsewhere g' = g exactly.
void sgd_update(int64_t n, float* w, const float* g, float* v, const SgdParams& p,
                const uint8_t* decay = nullptr);

struct AdamWParams {
  float lr = 0.001f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.01f;
  // 1 − β computed in double from the configured β (as torch does in Python), then rounded: 1.0f −
  // 0.999f would be 1.3e-5 off.
  float one_minus_beta1 = 0.1f, one_minus_beta2 = 0.001f;
  // Of step t (1-based): 1 − β1^t and sqrt(1 − β2^t), computed by the caller in double.
  float bias_correction1 = 1.0f, bias_correction2_sqrt = 1.0f;
};
// torch.optim.AdamW (decoupled weight decay), element-wise, in torch's order of float operations:
//   w *= 1 − lr·wd;  m = β1·m + (1 − β1)·g;  v = β2·v + (1 − β2)·g²;
//   w -= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
// m, v start at zero. `decay` as for sgd_update (w is left unscaled where decay[i] == 0).
void adamw_update(int64_t n, float* w, const float* g, float* m, float* v, const AdamWParams& p,
                  const uint8_t* decay = nullptr);

// out[i, c, :, :] = (pixels[index[i], c, :, :] / 255 - mean[c]) / std[c] for i < count.
void gather_normalize(int64_t count, int channels, int64_t plane, const uint8_t* pixels,
                      const int32_t* index, const float* mean, const float* std, float* out);

// ---- BF16 (bfloat16: the top 16 bits of an IEEE float32) ----
// The CUDA engine's bf16 mode feeds convolutions and GEMMs BF16 copies of FP32 values; these are
// the exact meaning of its cast kernels (kernels/cast.cuh).
// float → bf16, round to nearest, ties to even (as __float2bfloat16_rn): finite values round in
// the mantissa (subnormals too: same exponent range), values past the largest bf16 become ±Inf,
// ±Inf stay, a NaN stays a NaN with its sign (made quiet: quiet bit set, payload's top bits kept).
uint16_t round_to_bf16(float x);
// bf16 → float: exact (the 16 bits become the float's top half).
float bf16_to_float(uint16_t b);
// Element-wise over n values.
void round_to_bf16(int64_t n, const float* x, uint16_t* out);
void bf16_to_float(int64_t n, const uint16_t* x, float* out);
// The CUDA engine's bf16 convolution forward (src/backend/cuda/cuda_layers.hpp), on the CPU, for
// tests: x and w rounded to BF16, their convolution accumulated in FP32 (conv2d_forward: the
// products of two BF16 values are exact in FP32, only the sums round), the result rounded to BF16
// (cuDNN writes y as BF16), widened to FP32; then b added in FP32 and `relu` applied, as
// conv2d_forward does. With b all zero and no ReLU every output is a BF16 value. Allocates its own
// scratch (rounded copies, conv2d_forward's workspace).
void conv2d_forward_bf16_reference(const ConvGeometry& g, const float* x, const float* w,
                                   const float* b, float* y, int threads, bool relu = false);
// out[i] = the raw image pixels[index[i]] ([channels, height, width] uint8) augmented for `epoch`
// as include/gputrain/augment.hpp defines (crop with zero padding, flip), keyed by index[i]; the
// model's input is then gather_normalize of out. Bit for bit the CUDA gather's augmentation.
void gather_augment(int64_t count, int channels, int height, int width, const uint8_t* pixels,
                    const int32_t* index, int64_t epoch, const AugmentSpec& spec, uint8_t* out);

}  // namespace gputrain::cpu
