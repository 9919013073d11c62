// GPU busy % from NVML, sampled in the background while an engine lives.
// NVML (libnvidia-ml.so.1) ships with the driver, not the toolkit, so it is opened at run time with
// dlopen: a machine without it (or a container without the driver's NVML) simply reports "not
// measured" (-1) instead of failing to start.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace gputrain::cuda {

class NvmlSampler {
 public:
  // `pci_bus_id` as cudaDeviceGetPCIBusId gives it ("0000:65:00.0"): NVML's device order can differ
  // from CUDA's (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER), the PCI id is the same device in both.
  // Never throws: any failure leaves the sampler inactive.
  explicit NvmlSampler(const char* pci_bus_id, int period_ms = 75);
  ~NvmlSampler();
  NvmlSampler(const NvmlSampler&) = delete;
  NvmlSampler& operator=(const NvmlSampler&) = delete;

  bool active() const { return active_; }
  // Mean utilization.gpu (% of time a kernel ran) over the samples since the last call; -1 when
  // NVML is unavailable. With no sample taken yet since the last call, one is taken now.
  double take_mean();

 private:
  void run();
  bool sample(unsigned* percent);

  struct Api;
  std::unique_ptr<Api> api_;
  bool active_ = false;
  int period_ms_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  double sum_ = 0;
  long count_ = 0;
  std::thread thread_;
};

}  // namespace gputrain::cuda
