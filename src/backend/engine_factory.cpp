// Backend choice, made once per run: "cpu", "cuda", or "auto" (CUDA when a usable device exists).
#include "gputrain/engine.hpp"
#include "gputrain/errors.hpp"

#ifdef GPUTRAIN_WITH_CUDA
#include "backend/cuda/cuda_backend.hpp"
#endif

namespace gputrain {

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

std::unique_ptr<Engine> make_engine(const std::string& device, const ModelPlan& plan,
                                    const EngineOptions& options, std::string* note) {
  if (device == "cpu") return make_cpu_engine(plan, options);
  if (device != "cuda" && device != "auto")
    throw ConfigError("device: expected auto, cpu or cuda, got '" + device + "'");
  std::string why;
  const auto devices = cuda_devices(&why);
  if (devices.empty()) {
    if (device == "cuda") throw DeviceError("--device cuda: no usable CUDA device: " + why);
    if (note) *note = "no CUDA device (" + why + "), using the CPU";
    return make_cpu_engine(plan, options);
  }
#ifdef GPUTRAIN_WITH_CUDA
  if (device == "cuda") return cuda::make_cuda_engine(plan, options);
  // "auto": a device this build cannot use (no code for its architecture, too little memory for
  // the model) is no reason to fail when the CPU can do the work.
  try {
    return cuda::make_cuda_engine(plan, options);
  } catch (const DeviceError& e) {
    if (note) *note = std::string("CUDA device not usable (") + e.what() + "), using the CPU";
    return make_cpu_engine(plan, options);
  }
#else
  return make_cpu_engine(plan, options);
#endif
}

}  // namespace gputrain
