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
void sgd_update(int64_t n, float* w, const float* g, float* v, const SgdParams& p);

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
// m, v start at zero.
void adamw_update(int64_t n, float* w, const float* g, float* m, float* v, const AdamWParams& p);

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
// out[i] = the raw image pixels[index[i]] ([channels, height, width] uint8) augmented for `epoch`
// as include/gputrain/augment.hpp defines (crop with zero padding, flip), keyed by index[i]; the
// model's input is then gather_normalize of out. Bit for bit the CUDA gather's augmentation.
void gather_augment(int64_t count, int channels, int height, int width, const uint8_t* pixels,
                    const int32_t* index, int64_t epoch, const AugmentSpec& spec, uint8_t* out);

}  // namespace gputrain::cpu
