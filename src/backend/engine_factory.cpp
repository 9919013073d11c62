// Backend choice, made once per run: "cpu", "cuda", "cuda:N", or "auto" (CUDA when a usable device
// exists).
#include <sys/stat.h>

#include <climits>

#include "backend/engine_choice.hpp"
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"

#ifdef GPUTRAIN_WITH_CUDA
#include "backend/cuda/cuda_backend.hpp"
#endif

namespace gputrain {

namespace {

// An NVIDIA GPU is on this machine, whether or not this build and driver can use it: the driver's
// device nodes exist.
bool nvidia_device_node_present() {
  struct stat st {};
  return ::stat("/dev/nvidia0", &st) == 0 || ::stat("/dev/nvidiactl", &st) == 0;
}

// "cuda:3" → 3; "cuda" → 0. The config reader has checked the spelling.
int device_index(const std::string& device) {
  if (device.size() <= 5) return 0;
  const long long n = std::stoll(device.substr(5));
  if (n > INT_MAX) throw ConfigError("device: GPU index " + device.substr(5) + " is too large");
  return static_cast<int>(n);
}

std::string visible_list(const std::vector<DeviceInfo>& devices) {
  std::string out;
  for (const DeviceInfo& d : devices)
    out +=
        (out.empty() ? "" : ", ") + std::string("cuda:") + std::to_string(d.index) + " " + d.name;
  return out;
}

}  // namespace

// Engines without layers that have buffers (model.hpp: BufferInfo) hold none.
void Engine::set_buffers(const ModelBuffers& buffers) {
  if (!buffers.values.empty() || !buffers.batches_tracked.empty())
    throw Error("this engine does not support model buffers (batchnorm2d running statistics)");
}
ModelBuffers Engine::buffers() {
  return {};
}

bool cuda_compiled_in() {
#ifdef GPUTRAIN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_build_versions() {
#ifdef GPUTRAIN_WITH_CUDA
  return cuda::build_versions();
#else
  return "CUDA backend not built (configured with GPUTRAIN_CUDA=OFF or without nvcc)";
#endif
}

std::vector<DeviceInfo> cuda_devices(std::string* why_none) {
#ifdef GPUTRAIN_WITH_CUDA
  return cuda::list_devices(why_none);
#else
  if (why_none) *why_none = "this gputrain was built without the CUDA backend";
  return {};
#endif
}

int gpu_index_for(const std::string& device, int local_rank,
                  const std::vector<DeviceInfo>& visible) {
  const bool pinned = device.rfind("cuda:", 0) == 0;
  if (pinned &&
      (device.size() == 5 || device.find_first_not_of("0123456789", 5) != std::string::npos))
    throw ConfigError("device: expected auto, cpu, cuda or cuda:N, got '" + device + "'");
  const int index = pinned ? device_index(device) : local_rank;
  if (index < int(visible.size())) return index;
  // One GPU visible to a rank that is not its node's first: a launcher gave each rank its own
  // (SLURM's --gpus-per-task=1 sets CUDA_VISIBLE_DEVICES per task), so that one is this rank's.
  // (Were it one GPU shared by the node's ranks, NCCL refuses two ranks on one device.)
  if (!pinned && visible.size() == 1) return 0;
  if (pinned)
    throw DeviceError("--device " + device + ": no such GPU: " + std::to_string(visible.size()) +
                      " visible (" + visible_list(visible) +
                      "; CUDA_VISIBLE_DEVICES selects and renumbers them)");
  throw DeviceError("--device " + device + ": this rank is number " + std::to_string(local_rank) +
                    " on its node and takes GPU cuda:" + std::to_string(local_rank) + ", but " +
                    std::to_string(visible.size()) + " are visible (" + visible_list(visible) +
                    "): start at most " + std::to_string(visible.size()) +
                    " ranks per node, or pin each rank's GPU with --device cuda:N");
}

EngineChoice choose_engine(const std::string& device, const ModelPlan& plan,
                           const EngineOptions& options, int local_rank) {
  EngineChoice choice;
  if (device == "cpu") {
    choice.engine = make_cpu_engine(plan, options);
    return choice;
  }
  const bool cuda_n = device.rfind("cuda:", 0) == 0 && device.size() > 5 &&
                      device.find_first_not_of("0123456789", 5) == std::string::npos;
  if (device != "cuda" && device != "auto" && !cuda_n)
    throw ConfigError("device: expected auto, cpu, cuda or cuda:N, got '" + device + "'");
  EngineOptions gpu_options = options;
  std::string why;
  const auto devices = cuda_devices(&why);
  if (devices.empty()) {
    if (device != "auto")
      throw DeviceError("--device " + device + ": no usable CUDA device: " + why);
    if (nvidia_device_node_present())
      choice.warning = "an NVIDIA GPU is present but not usable (" + why +
                       "): training on the CPU, which is far slower";
    else
      choice.info = "no CUDA device (" + why + "), using the CPU";
    choice.engine = make_cpu_engine(plan, options);
    return choice;
  }
  gpu_options.device_index = gpu_index_for(device, local_rank, devices);
#ifdef GPUTRAIN_WITH_CUDA
  if (device != "auto") {
    choice.engine = cuda::make_cuda_engine(plan, gpu_options);
    return choice;
  }
  // "auto": a device this build cannot use (no code for its architecture, too little memory for
  // the model) is no reason to fail when the CPU can do the work, but the user must hear of it.
  try {
    choice.engine = cuda::make_cuda_engine(plan, gpu_options);
  } catch (const DeviceError& e) {
    choice.warning = std::string("CUDA device not usable (") + e.what() +
                     "): training on the CPU, which is far slower";
    choice.engine = make_cpu_engine(plan, options);
  }
#else
  choice.engine = make_cpu_engine(plan, options);
#endif
  return choice;
}

std::unique_ptr<Engine> make_engine(const std::string& device, const ModelPlan& plan,
                                    const EngineOptions& options, std::string* note) {
  EngineChoice choice = choose_engine(device, plan, options);
  if (note) *note = !choice.warning.empty() ? choice.warning : choice.info;
  return std::move(choice.engine);
}

}  // namespace gputrain
