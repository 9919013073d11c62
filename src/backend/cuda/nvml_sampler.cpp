#include "backend/cuda/nvml_sampler.hpp"

#include <dlfcn.h>

#include <chrono>

namespace gputrain::cuda {

// The few NVML declarations we need (nvml.h is not part of the CUDA toolkit install here). These
// are NVML's stable C ABI: nvmlReturn_t is an enum with NVML_SUCCESS == 0, devices are opaque
// pointers, nvmlUtilization_t is {gpu, memory} in percent.
namespace {
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlUtilization_t {
  unsigned int gpu;
  unsigned int memory;
};
constexpr nvmlReturn_t kNvmlSuccess = 0;
}  // namespace

struct NvmlSampler::Api {
  void* lib = nullptr;
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  nvmlReturn_t (*by_pci)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlDevice_t device = nullptr;
  bool initialized = false;

  ~Api() {
    if (initialized && shutdown) shutdown();
    if (lib) dlclose(lib);
  }
};

NvmlSampler::NvmlSampler(const char* pci_bus_id, int period_ms) : period_ms_(period_ms) {
  try {
    auto api = std::make_unique<Api>();
    api->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!api->lib) return;
    auto sym = [&](const char* name) { return dlsym(api->lib, name); };
    api->init = reinterpret_cast<nvmlReturn_t (*)()>(sym("nvmlInit_v2"));
    api->shutdown = reinterpret_cast<nvmlReturn_t (*)()>(sym("nvmlShutdown"));
    api->by_pci = reinterpret_cast<nvmlReturn_t (*)(const char*, nvmlDevice_t*)>(
        sym("nvmlDeviceGetHandleByPciBusId_v2"));
    api->utilization = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, nvmlUtilization_t*)>(
        sym("nvmlDeviceGetUtilizationRates"));
    if (!api->init || !api->shutdown || !api->by_pci || !api->utilization) return;
    if (api->init() != kNvmlSuccess) return;
    api->initialized = true;  // NVML's init is reference counted: each init has its shutdown
    if (api->by_pci(pci_bus_id, &api->device) != kNvmlSuccess) return;
    nvmlUtilization_t probe{};
    if (api->utilization(api->device, &probe) != kNvmlSuccess) return;  // e.g. not supported (MIG)
    api_ = std::move(api);
    active_ = true;
    thread_ = std::thread([this] { run(); });
  } catch (...) {
    // std::thread or allocation failure: no sampling, as documented.
    active_ = false;
  }
}

NvmlSampler::~NvmlSampler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool NvmlSampler::sample(unsigned* percent) {
  nvmlUtilization_t u{};
  if (api_->utilization(api_->device, &u) != kNvmlSuccess) return false;
  *percent = u.gpu;
  return true;
}

void NvmlSampler::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    lock.unlock();
    unsigned p = 0;
    const bool ok = sample(&p);  // outside the lock: an NVML call can take a millisecond
    lock.lock();
    if (ok) {
      sum_ += p;
      ++count_;
    }
    wake_.wait_for(lock, std::chrono::milliseconds(period_ms_), [this] { return stop_; });
  }
}

double NvmlSampler::take_mean() {
  if (!active_) return -1.0;
  std::lock_guard<std::mutex> lock(mutex_);
  if (count_ == 0) {
    unsigned p = 0;
    return sample(&p) ? double(p) : -1.0;
  }
  const double mean = sum_ / double(count_);
  sum_ = 0;
  count_ = 0;
  return mean;
}

}  // namespace gputrain::cuda
