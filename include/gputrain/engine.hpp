// A backend's training engine: owns the flat parameter and gradient buffers, the optimizer's state
// buffers, the data set copy and every activation for one model and batch size, all allocated when
// it is built ("plan, then run"). The trainer drives it; nothing in a step allocates or waits for
// the host.
//
// A training step is three calls, so that a data-parallel run can all-reduce the gradients between
// the first and the last (the trainer's gradient hook does, inside forward_backward: on a GPU it
// is then part of the step's CUDA graph; an engine never talks to other processes):
//   forward_backward(first, count, grad_scale)   gather + normalize the batch, forward, loss
//                                                (counters), backward: gradients() = ∂(Σ
//                                                loss)/scale
//   gradients()                                   the flat gradient buffer, in place
//   apply_optimizer()                             update with the step table's entry [global_step],
//                                                 then global_step += 1
//
// Training and evaluation modes. forward_backward runs the layers as torch's model.train():
// batchnorm2d normalizes with the batch's statistics and updates its running statistics (and
// num_batches_tracked += 1), dropout drops units (keyed by train.seed, the order's epoch, each
// sample's index in the training set and the layer's index: include/gputrain/dropout.hpp).
// evaluate runs them as model.eval(): running statistics, dropout the identity.
//
// Model buffers (batchnorm2d's running_mean / running_var / num_batches_tracked) are named state
// of the engine beside the parameters, but not in the parameter layout: ModelBuffers (model.hpp)
// holds the float statistics flat in ModelPlan::buffers' layout (ModelPlan::buffer_count floats,
// on the device for CUDA) and num_batches_tracked as host int64 counts, one per batchnorm2d layer
// (no kernel reads them: with a fixed momentum they only count). set_buffers before the first
// step or evaluation (initial_buffers(plan) for a new run; a checkpoint's or weights file's
// values otherwise); buffers() for weights files and checkpoints. They are neither gradients nor
// optimizer state: all-reduce and the optimizer never touch them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gputrain/augment.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/model.hpp"
#include "gputrain/optimizer.hpp"
#include "gputrain/precision.hpp"

namespace gputrain {

struct EngineOptions {
  int batch_size = 64;           // largest batch a step or an evaluation chunk will use
  std::vector<float> mean, std;  // input normalization per channel (pixel/255 - mean) / std
  int threads = 0;               // CPU threads; 0 = all cores
  bool deterministic = false;    // CUDA: deterministic algorithms only
  bool use_graph = true;         // CUDA: capture the step as a graph after a warm-up step
  int device_index = 0;          // CUDA device
  OptimizerSpec optimizer;       // the update rule (its per-step values come from set_step_table)
  float label_smoothing = 0.0f;  // training loss: F.cross_entropy(label_smoothing=…); eval: plain
  Precision precision = Precision::Fp32;  // CUDA: conv/GEMM arithmetic; CPU: FP32 (it warns)
  AugmentSpec augment;                    // training batches only; evaluation never augments
  uint64_t seed = 0;  // train.seed: keys dropout's draws (include/gputrain/dropout.hpp)
  // (The engine derives the weight decay mask itself: weight_decay_mask(plan, optimizer).)
};

// A backend's flat buffer (parameters layout: ModelPlan::parameter_count floats), for in-place work
// by the caller such as an all-reduce. `on_device`: data is device memory of the engine's GPU
// `device`, and work on it is ordered on the engine's `stream` (a cudaStream_t, opaque here so
// that nothing outside the CUDA backend and src/dist needs CUDA's headers).
struct FlatBuffer {
  float* data = nullptr;
  size_t count = 0;
  bool on_device = false;
  void* stream = nullptr;
  int device = -1;
};

// What an engine calls with its gradient buffer at the end of every forward_backward, once the
// backward pass is enqueued: the trainer's data-parallel all-reduce. A device engine calls it on
// the host while enqueuing the step, also while capturing the step as a CUDA graph (the hook's
// work on buffer.stream is then part of the graph and runs at each replay): the hook may only
// enqueue work on that stream, never wait for it. Engines know nothing of what it does.
using GradientHook = std::function<void(const FlatBuffer& gradients)>;

// Loss and accuracy accumulated over training steps since the last reset.
struct TrainCounters {
  double loss_sum = 0;  // sum over samples of the per-sample loss
  int64_t correct = 0;
  int64_t samples = 0;
  // optimizer.grad_clip > 0: the global gradient norms (before clipping) of the steps, summed.
  double grad_norm_sum = 0;
  int64_t grad_norm_steps = 0;
};

struct EvalResult {
  double loss_sum = 0;
  int64_t correct = 0, samples = 0;
  int classes = 0;
  std::vector<int64_t> confusion;  // classes × classes, [true][predicted]
  bool interrupted = false;        // *stop became true: the result covers only part of the set
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string describe() const = 0;  // "cpu, 2 threads" / "cuda:0 NVIDIA H100 ..."

  // Host copies of the flat parameter buffer, in ModelPlan::parameters order.
  virtual void set_parameters(const std::vector<float>& values) = 0;
  virtual std::vector<float> parameters() = 0;
  // The optimizer's state buffers by name (optimizer_state(options.optimizer)), same layout.
  virtual void set_state(const std::string& name, const std::vector<float>& values) = 0;
  virtual std::vector<float> state(const std::string& name) = 0;
  // The model's buffers (host copies; see the top of this file). Throws Error when `buffers`
  // does not have the plan's sizes. The defaults serve an engine that supports no layer with
  // buffers: they accept and return only the empty set.
  virtual void set_buffers(const ModelBuffers& buffers);
  virtual ModelBuffers buffers();

  // Per-step hyper-parameters of the run, indexed by global step (clamped to the last entry). Set
  // once before training (a copy to the device; not inside a step).
  virtual void set_step_table(const std::vector<StepHyper>& table) = 0;
  // Updates applied so far (restored on resume: AdamW's bias correction and the schedule need it).
  virtual void set_global_step(int64_t step) = 0;
  virtual int64_t global_step() const = 0;

  // Copies (uploads) a set once; images must have the model's input shape.
  virtual void set_train_data(const ImageSet& train) = 0;
  virtual void set_eval_data(const ImageSet& eval) = 0;

  // The training order of the coming steps: indices into the training set, and the epoch it
  // belongs to (with options.augment, each sample's draw is keyed by (seed, epoch, index)).
  virtual void set_order(const std::vector<int32_t>& order, int epoch) = 0;
  // The batch order[first, first + count), count <= batch_size: forward, loss, backward. The
  // gradient buffer receives ∂(sum of the batch's per-sample losses)/grad_scale (grad_scale =
  // count: the batch mean). Loss and accuracy accumulate into the counters.
  virtual void forward_backward(int64_t first, int count, float grad_scale) = 0;
  // The flat gradient buffer of the last forward_backward, for in-place work between the phases.
  virtual FlatBuffer gradients() = 0;
  // Installs (or, empty, removes) the hook every later forward_backward ends with. Set before the
  // first step: a CUDA engine captures its step graph with the hook in it.
  virtual void set_gradient_hook(GradientHook hook) = 0;
  // One optimizer update of the parameters from gradients() with the step table's entry
  // [global_step()], then global_step() + 1.
  virtual void apply_optimizer() = 0;
  // Reads the accumulated counters (a host sync on a device backend); `reset` zeroes them.
  virtual TrainCounters read_counters(bool reset) = 0;
  // Scores the eval set with the current parameters; logits (count × classes) when asked.
  // Checks *stop between chunks and returns early (interrupted = true) once it is set.
  virtual EvalResult evaluate(std::vector<float>* logits = nullptr,
                              const std::atomic<bool>* stop = nullptr) = 0;
  // Mean device busy % (NVML samples) since the last call; negative where it is not measured.
  virtual double take_busy_percent() { return -1.0; }
  // Warnings the engine has noted since the last call (it cannot print), oldest first, each once:
  // e.g. a CUDA graph capture that failed, after which steps run eagerly. The caller shows them.
  virtual std::vector<std::string> take_warnings() { return {}; }
  // Backend-specific detail for --verbose (the CUDA engine: its cuDNN algorithm choices, one line
  // per conv layer and pass); empty where there is nothing to add.
  virtual std::string details() const { return {}; }
};

// "cpu", "cuda" or "auto" (CUDA when a usable device is present, else CPU; *note says so).
// Throws DeviceError when "cuda" is asked for and none is usable, or when memory does not suffice.
std::unique_ptr<Engine> make_engine(const std::string& device, const ModelPlan& plan,
                                    const EngineOptions& options, std::string* note = nullptr);

std::unique_ptr<Engine> make_cpu_engine(const ModelPlan& plan, const EngineOptions& options);

// What this build and machine offer, for `gputrain --version` and `gputrain info`.
struct DeviceInfo {
  int index = 0;
  std::string name;
  size_t memory_bytes = 0;
  int cc_major = 0, cc_minor = 0;
};
bool cuda_compiled_in();
std::string
cuda_build_versions();  // "CUDA 13.0, cuDNN 9.x, cuBLAS 13.x" or "CUDA backend not built"
std::vector<DeviceInfo> cuda_devices(std::string* why_none = nullptr);

}  // namespace gputrain
