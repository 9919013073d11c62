// Host-side entry points of gputrain's hand-written CUDA kernels (kernels/*.cu), for the CUDA
// engine. A plain C++ header: no CUDA headers needed to include it.
//
// Conventions
// - Every pointer is device memory unless a comment says otherwise; float32, NCHW, row-major.
// - Each op means exactly what its gputrain::cpu counterpart in include/gputrain/ops.hpp means; the
//   kernel tests (tests/kernels/) check each launcher against it under the host emulation.
// - The stream is the last argument. Launchers only enqueue work: they never synchronize, allocate
//   or copy to/from the host, so every one of them can be captured in a CUDA graph. Where a
//   launcher needs scratch space it has a *_workspace_bytes() query: allocate once at plan time.
// - A launch failure throws gputrain::RuntimeFailure naming the kernel; a bad argument (workspace
//   too small, negative size) throws RuntimeFailure too (a programming error, not a user's).
// - Size 0 (no rows, no elements) launches nothing and is not an error.
// - Deterministic: the same inputs give the same bits on every run (no float/double atomics; every
//   reduction has a fixed order that depends only on the shapes).
#pragma once
#define GPUTRAIN_KERNELS_LAUNCHERS_HPP

#include <cstddef>
#include <cstdint>

#include "gputrain/ops.hpp"
#include "gputrain/optimizer.hpp"

// cudaStream_t without <cuda_runtime_api.h> (same typedef, so including both is fine).
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

// The host emulation (tests/emulation/cuda_emulation.hpp) compiles these very launchers for the
// host; its copies live in another inline namespace so they get other symbol names and can share a
// test binary with the real ones. Code that calls gputrain::kernels::launch_* never names it.
#if defined(GPUTRAIN_KERNELS_EMULATED)
#define GPUTRAIN_KERNELS_ABI emulated
#else
#define GPUTRAIN_KERNELS_ABI device
#endif

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// ---- state that lives in device memory (the engine allocates and initializes it)
// ------------------

// SGD hyper-parameters read by the update kernel at run time, so one captured graph serves a new
// learning rate: update this struct (cudaMemcpyAsync on the step's stream) and replay.
struct SgdHyper {
  float lr = 0.01f, momentum = 0.0f, weight_decay = 0.0f;
  int32_t nesterov = 0;  // 0 or 1
};
inline SgdHyper make_sgd_hyper(const cpu::SgdParams& p) {
  return SgdHyper{p.lr, p.momentum, p.weight_decay, p.nesterov ? 1 : 0};
}

// Where the step is in the training order, read by launch_gather_batch and advanced on the device
// by launch_advance_step at the end of each step, so one captured graph serves every step: set it
// (cudaMemcpyAsync) when a new order starts (epoch start, resume) and replay the graph.
struct StepState {
  int64_t first = 0;  // position in `order` of the next batch's first sample
  int64_t step = 0;   // the global step, +1 per forward_backward: the optimizer's table index + 1
  int64_t epoch = 0;  // the order's epoch (set with the order): keys augmentation and dropout
};

// ---- bias + activation (kernels/bias_act.cu) ----------------------------------------------------

// In place: y[n,c,p] = act(y[n,c,p] + bias[c]), y [batch, channels, plane], act = ReLU or identity.
// plane = H*W for a conv output, 1 for a linear output [batch, features].
void launch_bias_act(float* y, const float* bias, int64_t batch, int channels, int64_t plane,
                     bool relu, cudaStream_t stream);

// y[i] = max(x[i], 0) for i < count; may run in place (y == x). (cpu::relu_forward)
void launch_relu_forward(const float* x, float* y, int64_t count, cudaStream_t stream);

// dx[i] = y[i] > 0 ? dy[i] : 0 for i < count (y: the forward output); may run in place (dx == dy).
// (cpu::relu_backward)
void launch_relu_backward(const float* y, const float* dy, float* dx, int64_t count,
                          cudaStream_t stream);

// Bytes of scratch launch_bias_grad needs for this shape (> 0).
size_t bias_grad_workspace_bytes(int64_t batch, int channels, int64_t plane);

// db[c] = Σ_{n,p} g[n,c,p] over dy [batch, channels, plane] (plane = 1 for linear layers), where
// g = dy, or, when relu_y is not null, g = relu_backward(relu_y, dy), which is also written to dx
// [batch, channels, plane] (dx may be dy: in place). That fuses "ReLU backward, then the bias
// gradient" of a conv/linear + ReLU layer into one pass over dy. dx is unused when relu_y is null.
// Two kernels (per-block partial sums into `workspace`, then a fixed-order sum): deterministic.
void launch_bias_grad(const float* dy, const float* relu_y, float* dx, float* db, int64_t batch,
                      int channels, int64_t plane, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream);

// ---- max pooling (kernels/pool.cu)
// ---------------------------------------------------------------

// y [N,C,Ho,Wo] = max over each kernel×kernel window (stride, no padding, floor mode) of
// x [N,C,H,W]; argmax [N,C,Ho,Wo] = h*W + w of the max within the input plane: the first maximum in
// row-major window order, a NaN wins and propagates (cpu::maxpool2d_forward).
void launch_maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax,
                              cudaStream_t stream);

// dx [N,C,H,W] = 0, then dx[argmax] += dy [N,C,Ho,Wo] (cpu::maxpool2d_backward). Each input element
// gathers from the windows that contain it, in row-major window order: deterministic, no atomics,
// the same sum order as the CPU version.
void launch_maxpool2d_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax,
                               float* dx, cudaStream_t stream);

// ---- average pooling (kernels/avgpool.cu) -------------------------------------------------------

// y [N,C,Ho,Wo] = mean over each kernel×kernel window (stride, no padding, floor mode) of
// x [N,C,H,W] (cpu::avgpool2d_forward): the window summed in row-major order, then / kernel².
void launch_avgpool2d_forward(const PoolGeometry& g, const float* x, float* y, cudaStream_t stream);
// dx [N,C,H,W] = Σ dy/kernel² over the windows containing each input (cpu::avgpool2d_backward).
// Each input element gathers in row-major window order: deterministic, bitwise the CPU's.
void launch_avgpool2d_backward(const PoolGeometry& g, const float* dy, float* dx,
                               cudaStream_t stream);
// y [n, c] = mean of x [n, c, plane] over the plane (cpu::global_avgpool_forward); plane >= 1.
void launch_global_avgpool_forward(int n, int channels, int64_t plane, const float* x, float* y,
                                   cudaStream_t stream);
// dx [n, c, plane] = dy [n, c] / plane (cpu::global_avgpool_backward).
void launch_global_avgpool_backward(int n, int channels, int64_t plane, const float* dy, float* dx,
                                    cudaStream_t stream);

// ---- batch normalization (kernels/batchnorm.cu) -------------------------------------------------

// Bytes of scratch the training forward and the backward need for [n, channels, plane] (> 0).
size_t batchnorm_workspace_bytes(int n, int channels, int64_t plane);

// nn.BatchNorm2d in training (cpu::batchnorm2d_forward_train) over x [n, channels, plane]:
// save_mean [C] = the batch mean, save_invstd [C] = 1/sqrt(biased batch variance + eps),
// y = (x − mean)·invstd·w + b, running_mean/var [C] updated in place with `momentum` (the variance
// unbiased: ·count/(count − 1), count = n·plane). Statistics summed in double in a fixed order
// (two kernels through `workspace`): deterministic, within a few float ulps of the CPU's.
void launch_batchnorm2d_forward_train(int n, int channels, int64_t plane, const float* x,
                                      const float* w, const float* b, float eps, float momentum,
                                      float* running_mean, float* running_var, float* y,
                                      float* save_mean, float* save_invstd, void* workspace,
                                      size_t workspace_bytes, cudaStream_t stream);
// Evaluation (cpu::batchnorm2d_forward_eval): y = (x − running_mean)/sqrt(running_var + eps)·w + b.
void launch_batchnorm2d_forward_eval(int n, int channels, int64_t plane, const float* x,
                                     const float* w, const float* b, const float* running_mean,
                                     const float* running_var, float eps, float* y,
                                     cudaStream_t stream);
// Backward of the training forward (cpu::batchnorm2d_backward): dw, db [C] written (not
// accumulated); dx [n, channels, plane] (may be null: not needed) =
// (dy − Σdy/count − (x − mean)·Σ(dy·(x − mean))·invstd²/count)·invstd·w. Deterministic as the
// forward.
void launch_batchnorm2d_backward(int n, int channels, int64_t plane, const float* x, const float* w,
                                 const float* save_mean, const float* save_invstd, const float* dy,
                                 float* dx, float* dw, float* db, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream);

// ---- dropout (kernels/dropout.cu) ---------------------------------------------------------------

// Training dropout over [count] = [batch, per_sample] (cpu::dropout_forward with sample_index =
// order + state->first and epoch = state->epoch, both read on the device, so one captured graph
// serves every step; order null: the identity): mask[i] = kept (1) or 0, y = kept ?
// x·dropout_scale(p) : 0; bitwise the CPU's y and mask. May run in place (y == x). p in [0, 1).
void launch_dropout_forward(int64_t count, int64_t per_sample, const int32_t* order,
                            const StepState* state, uint64_t seed, int layer, float p,
                            const float* x, float* y, uint8_t* mask, cudaStream_t stream);
// dx = mask ? dy·dropout_scale(p) : 0 (cpu::dropout_backward); may run in place (dx == dy).
void launch_dropout_backward(int64_t count, float p, const uint8_t* mask, const float* dy,
                             float* dx, cudaStream_t stream);

// ---- softmax cross-entropy (kernels/softmax_xent.cu) --------------------------------------------

// Bytes of scratch launch_softmax_xent needs for `batch` rows (> 0).
size_t softmax_xent_workspace_bytes(int batch);

// Fused forward + backward over logits [batch, classes] and labels [batch] (each in [0, classes)):
// - dlogits [batch, classes] = (softmax - onehot(label)) / grad_scale (may be null: evaluation;
//   may not alias logits);
// - predicted [batch] = argmax of the row, the first max wins (may be null);
// - ACCUMULATES on the device, without any host sync: *loss_sum += Σ_rows (logsumexp -
// logit[label])
//   (double; may be null), *correct += rows whose argmax == label (may be null), and, when
//   confusion is not null, confusion[label * classes + predicted] += 1 ([classes][classes],
//   [true][predicted]).
// The loss sum is deterministic (per-row losses in `workspace`, then one fixed-order double sum);
// integer counts use atomics (exact). A label outside [0, classes) makes that row's loss NaN (so
// the trainer's non-finite loss check reports it) and it is neither counted correct nor in
// `confusion`. Zero the accumulators with cudaMemsetAsync where they should restart
// (read-and-reset).
// label_smoothing ε (F.cross_entropy(label_smoothing=ε), in [0, 1)): the target becomes
// (1 − ε)·onehot + ε/classes in dlogits and the row loss (1 − ε)·(−log p_label) + ε·mean_k(−log
// p_k); ε = 0 is the plain loss, bit for bit.
void launch_softmax_xent(int batch, int classes, const float* logits, const int32_t* labels,
                         float grad_scale, float* dlogits, int32_t* predicted, double* loss_sum,
                         unsigned long long* correct, unsigned long long* confusion,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream,
                         float label_smoothing = 0.0f);

// ---- SGD (kernels/sgd.cu)
// ------------------------------------------------------------------------

// torch.optim.SGD over the whole flat parameter buffer in one launch (cpu::sgd_update):
//   g' = g + wd·w;  v = μ·v + g';  w -= lr · (nesterov ? g' + μ·v : v);  v untouched when μ == 0.
// w, g, v: [n]. Hyper-parameters read from device memory (`hyper`) when the kernel runs; v must not
// be null here (the host cannot know μ).
void launch_sgd_update(int64_t n, float* w, const float* g, float* v, const SgdHyper* hyper,
                       cudaStream_t stream);
// The engine's update: momentum, weight decay and Nesterov from `constants` (fixed for the run),
// lr from the step table entry [state->step − 1] (clamped to [0, table_size)): state->step counts
// the forward_backward passes, so after a step's forward_backward it names that step. One launch
// serves every step of a schedule inside or outside a graph. v may be null when momentum == 0.
// decay (may be null: every element decays): the weight decay mask (cpu::sgd_update's `decay`,
// weight_decay_mask), one byte per element; where it is 0, g' = g.
void launch_sgd_step(int64_t n, float* w, const float* g, float* v, const SgdHyper& constants,
                     const StepHyper* table, int64_t table_size, const StepState* state,
                     const uint8_t* decay, cudaStream_t stream);
// Same with the hyper-parameters baked into the launch (not for a graph that changes lr); v may be
// null when p.momentum == 0; decay as for launch_sgd_step.
void launch_sgd_update(int64_t n, float* w, const float* g, float* v, const cpu::SgdParams& p,
                       cudaStream_t stream, const uint8_t* decay = nullptr);

// ---- AdamW (kernels/adamw.cu) -------------------------------------------------------------------

// The run's constants of torch.optim.AdamW (1 − β in double, then rounded, as cpu::AdamWParams).
struct AdamWConstants {
  float beta1 = 0.9f, beta2 = 0.999f, one_minus_beta1 = 0.1f, one_minus_beta2 = 0.001f;
  float eps = 1e-8f, weight_decay = 0.01f;
};
AdamWConstants make_adamw_constants(const OptimizerSpec& spec);

// Gradient clipping state in device memory (launch_grad_norm writes it, the updates read it).
struct GradClip {
  float norm = 0.0f;   // the global L2 norm of the gradients
  float scale = 1.0f;  // min(1, max_norm / (norm + 1e-6))
};

// The engine's AdamW update over the flat buffers (cpu::adamw_update with lr, bias_correction1 and
// bias_correction2_sqrt from the step table entry [state->step − 1], clamped, as launch_sgd_step):
//   g *= clip->scale (clip may be null: no clipping);  w *= 1 − lr·wd;  m = β1·m + (1 − β1)·g;
//   v = β2·v + (1 − β2)·g²;  w -= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
// Nothing from the host per step: one launch serves every step inside or outside a graph.
// decay (may be null: every element decays): the weight decay mask; where it is 0, w is not scaled
// (cpu::adamw_update's `decay`).
void launch_adamw_step(int64_t n, float* w, const float* g, float* m, float* v,
                       const AdamWConstants& constants, const StepHyper* table, int64_t table_size,
                       const StepState* state, const GradClip* clip, const uint8_t* decay,
                       cudaStream_t stream);

// ---- gradient clipping (kernels/grad_norm.cu) ---------------------------------------------------

// Number of partial sums of the norm's first stage, fixed so the reduction order is the same on
// every device.
constexpr int kGradNormBlocks = 160;
// Bytes of scratch launch_grad_norm needs.
size_t grad_norm_workspace_bytes();
// torch.nn.utils.clip_grad_norm_'s first half (cpu::clip_grad_norm): clip->norm = ‖g‖₂ (squares
// summed in double, fixed order), clip->scale = min(1, max_norm / (‖g‖ + 1e-6)) (float), and
// *norm_sum += ‖g‖ (double; may be null). max_norm > 0. No host sync.
void launch_grad_norm(int64_t n, const float* g, float max_norm, GradClip* clip, double* norm_sum,
                      void* workspace, size_t workspace_bytes, cudaStream_t stream);
// The second half for updates that do not take a GradClip (SGD): g *= clip->scale.
void launch_scale_gradients(int64_t n, float* g, const GradClip* clip, cudaStream_t stream);

// ---- batch assembly and step bookkeeping (kernels/data.cu) --------------------------------------

// The batch of `count` samples starting at position s = first + (state ? state->first : 0) of the
// order (state: device memory, may be null; first: a host value, e.g. 0 when state is used):
//   out [count, channels, plane] = (float(pixels[order[s+i], c, p]) / 255.0f - mean[c]) / std[c]
//   batch_labels [count] = labels[order[s+i]]                  (skipped when labels or batch_labels
//   is null)
// pixels: uint8 [images, channels, plane] (the data set, resident on the device); labels [images];
// order [>= s + count] (null: identity, the eval set in file order); mean, std [channels].
// Bit for bit cpu::gather_normalize with index = order + s (the same float expression: divisions,
// not reciprocal multiplications).
void launch_gather_batch(const uint8_t* pixels, const int32_t* labels, const int32_t* order,
                         const StepState* state, int64_t first, int count, int channels,
                         int64_t plane, const float* mean, const float* std, float* out,
                         int32_t* batch_labels, cudaStream_t stream);

// The same batch with each training image augmented first (include/gputrain/augment.hpp: crop
// with zero padding, flip; keyed by (augment.seed, state->epoch, order[s + i])), then normalized:
// bit for bit cpu::gather_augment followed by cpu::gather_normalize. `state` is required (the
// epoch comes from the device, so a captured graph serves every epoch).
void launch_gather_batch_augmented(const uint8_t* pixels, const int32_t* labels,
                                   const int32_t* order, const StepState* state, int64_t first,
                                   int count, int channels, int height, int width,
                                   const AugmentSpec& augment, const float* mean, const float* std,
                                   float* out, int32_t* batch_labels, cudaStream_t stream);

// The step's last node: state->first += count; state->step += 1 (one thread).
void launch_advance_step(StepState* state, int64_t count, cudaStream_t stream);

// ---- BF16 casts (kernels/cast.cu), for the engine's bf16 precision mode
// --------------------------
//
// bf16 values are stored as uint16_t (the top half of a float32's bits; cuDNN's CUDNN_DATA_BFLOAT16
// and cuBLAS's CUDA_R_16BF read the same layout).
// out[i] = cpu::round_to_bf16(x[i]) for i < n: round to nearest, ties to even; Inf, NaN kept.
void launch_round_to_bf16(int64_t n, const float* x, uint16_t* out, cudaStream_t stream);
// out[i] = cpu::bf16_to_float(x[i]) for i < n (exact).
void launch_bf16_to_float(int64_t n, const uint16_t* x, float* out, cudaStream_t stream);

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
