// A backend's training engine: owns the flat parameter/gradient/momentum buffers, the data set copy
// and every activation for one model and batch size, all allocated when it is built ("plan, then
// run"). The trainer drives it; nothing in a step allocates or waits for the host.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gputrain/dataset.hpp"
#include "gputrain/model.hpp"
#include "gputrain/ops.hpp"

namespace gputrain {

struct EngineOptions {
  int batch_size = 64;           // largest batch a step or an evaluation chunk will use
  std::vector<float> mean, std;  // input normalization per channel (pixel/255 - mean) / std
  int threads = 0;               // CPU threads; 0 = all cores
  bool deterministic = false;    // CUDA: deterministic algorithms only
  bool use_graph = true;         // CUDA: capture the step as a graph after a warm-up step
  int device_index = 0;          // CUDA device
};

// Loss and accuracy accumulated over training steps since the last reset.
struct TrainCounters {
  double loss_sum = 0;  // sum over samples of the per-sample loss
  int64_t correct = 0;
  int64_t samples = 0;
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

  // Host copies of the flat buffers, in ModelPlan::parameters order.
  virtual void set_parameters(const std::vector<float>& values) = 0;
  virtual std::vector<float> parameters() = 0;
  virtual void set_momentum(const std::vector<float>& values) = 0;
  virtual std::vector<float> momentum() = 0;

  // Copies (uploads) a set once; images must have the model's input shape.
  virtual void set_train_data(const ImageSet& train) = 0;
  virtual void set_eval_data(const ImageSet& eval) = 0;

  // The training order of the coming steps: indices into the training set.
  virtual void set_order(const std::vector<int32_t>& order) = 0;
  // One SGD step on order[first, first + count), count <= batch_size; loss is the batch mean.
  virtual void train_step(int64_t first, int count, const cpu::SgdParams& sgd) = 0;
  // Reads the accumulated counters (a host sync on a device backend); `reset` zeroes them.
  virtual TrainCounters read_counters(bool reset) = 0;
  // Scores the eval set with the current parameters; logits (count × classes) when asked.
  // Checks *stop between chunks and returns early (interrupted = true) once it is set.
  virtual EvalResult evaluate(std::vector<float>* logits = nullptr,
                              const std::atomic<bool>* stop = nullptr) = 0;
  // Mean device busy % (NVML samples) since the last call; negative where it is not measured.
  virtual double take_busy_percent() { return -1.0; }
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
