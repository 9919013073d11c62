// The optimizer on the device: its per-parameter state buffers by name (optimizer_state(spec):
// SGD's "momentum"), the run's step table, and the update — one kernel over the flat buffers whose
// learning rate comes from the table entry of the device's step count, so it needs nothing from
// the host inside a step. With optimizer.grad_clip, the update is preceded by the global gradient
// norm and the clipping scale, both computed into device memory (GradClip) and read from there by
// the update (AdamW) or a scaling pass (SGD); the norms are summed on the device for the epoch's
// mean and read only with the counters.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/cuda_resources.hpp"
#include "gputrain/optimizer.hpp"
#include "launchers.hpp"

namespace gputrain::cuda {

class CudaOptimizer {
 public:
  // decay_mask: weight_decay_mask(plan, spec), empty when every element decays alike.
  CudaOptimizer(const OptimizerSpec& spec, size_t parameter_count,
                std::vector<uint8_t> decay_mask = {});

  // Declares the state buffers (each parameter_count floats, zeroed) and the decay mask.
  void plan_allocations(AllocationList& list);
  // After allocation: copies the decay mask to the device (synchronously, once).
  void initialize(cudaStream_t stream);

  // The state buffer `name`; RuntimeFailure when the optimizer keeps none of that name.
  DeviceBuffer<float>& state(const std::string& name);

  // Waits for queued updates (they may read the old table), then copies the table.
  void set_step_table(const std::vector<StepHyper>& table, cudaStream_t stream);
  bool has_step_table() const { return table_size_ > 0; }

  // params -= update(grads, state) with the lr of table[state->step − 1]; enqueue only. With
  // clipping, grads are first clipped in place (as torch.nn.utils.clip_grad_norm_ does) and the
  // norm is added to the device's norm sum.
  void enqueue_update(float* params, float* grads, const kernels::StepState* step,
                      cudaStream_t stream);

  bool clipping() const { return spec_.grad_clip > 0.0f; }
  // The sum of the norms of the updates since the last reset (device memory; null without
  // clipping) and how many there were (counted on the host: one per enqueue_update).
  const double* norm_sum() const { return norm_sum_.get(); }
  int64_t norm_steps() const { return norm_steps_; }
  // Zeroes the norm sum after the work queued so far (stream order); enqueue only.
  void enqueue_reset_norms(cudaStream_t stream);

 private:
  OptimizerSpec spec_;
  size_t count_ = 0;
  std::vector<uint8_t> decay_host_;
  DeviceBuffer<uint8_t> decay_;  // [count] or none: every element decays
  std::vector<std::pair<std::string, DeviceBuffer<float>>> state_;  // fixed after construction
  DeviceBuffer<StepHyper> table_;  // [table size], entry = global step (clamped)
  size_t table_size_ = 0;
  DeviceBuffer<kernels::GradClip> clip_;        // [1] this step's norm and scale (clipping only)
  DeviceBuffer<double> norm_sum_;               // [1] Σ norms since the last reset (clipping only)
  DeviceBuffer<unsigned char> norm_workspace_;  // launch_grad_norm's partial sums
  int64_t norm_steps_ = 0;
};

}  // namespace gputrain::cuda
