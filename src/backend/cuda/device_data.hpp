// What a step reads from device memory besides the model: the data sets (uploaded once), the
// training order (staged through pinned memory), the step state (position in the order and global
// step, advanced on the device so one captured graph serves every step), the batch's labels and
// the normalization constants.
//
// Host → device updates of the step state and the order go through pinned staging memory so that
// the copy is truly asynchronous (no stream sync). The copy reads the staging memory when it
// executes on the stream, which may be after several queued steps; so before the host rewrites a
// staging buffer it waits on the event recorded after the previous copy from it. That wait only
// happens when the position jumps (epoch start, resume) and only blocks when the GPU still has
// that copy queued.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/cuda_resources.hpp"
#include "gputrain/augment.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/model.hpp"
#include "launchers.hpp"

namespace gputrain::cuda {

class DeviceData {
 public:
  // `device`: the engine's description, for out-of-memory messages.
  // `augment`: applied to training batches (never to evaluation chunks) when enabled.
  DeviceData(const ModelPlan& plan, int batch, const AugmentSpec& augment, cudaStream_t stream,
             std::string device);

  // Declares the fixed-size buffers (step state, batch labels, normalization).
  void plan_allocations(AllocationList& list);
  // After allocation: the normalization constants (per channel) and the events. Synchronizes.
  void initialize(const std::vector<float>& mean, const std::vector<float>& std);

  // Checks the set against the plan and uploads it (synchronously). Returns true when the buffers
  // moved: a captured graph holding their addresses must be dropped.
  bool set_train(const ImageSet& set);
  bool set_eval(const ImageSet& set);
  // Checks every index, stages the order behind the queued steps. Returns true when it moved.
  // `epoch` goes to the device with the next step state (the augmentation draws read it there).
  bool set_order(const std::vector<int32_t>& order, int epoch);

  // Makes the device's step state {first, step} before the next step, staging a copy only when
  // the device is not already there (each step's advance leaves it where the next one starts).
  void move_to(int64_t first, int64_t global_step);
  // The queued step advanced the device's position by `count`.
  void advanced(int64_t first, int count) { device_first_ = first + count; }
  // The next move_to stages its position explicitly (a new global step, a new order).
  void forget_position() { device_first_ = -1; }

  int64_t train_count() const { return train_count_; }
  int64_t eval_count() const { return eval_count_; }
  size_t order_size() const { return order_size_; }

  // gather the step's batch (by the device's step state) / an eval chunk (file order, from start)
  // into `out` [n, C, H, W] and the batch labels.
  void enqueue_train_batch(int n, float* out) const;
  void enqueue_eval_chunk(int64_t start, int n, float* out) const;
  void enqueue_advance(int n) const;

  int32_t* batch_labels() const { return batch_labels_.get(); }
  // The training order on the device (moves when set_order returns true).
  const int32_t* order() const { return order_.get(); }
  kernels::StepState* step_state() const { return step_state_.get(); }

 private:
  void check_images(const ImageSet& set, const char* what) const;
  bool upload_images(const ImageSet& set, DeviceBuffer<uint8_t>& pixels,
                     DeviceBuffer<int32_t>& labels, int64_t* count, const char* what);

  const ModelPlan& plan_;
  int batch_ = 0;
  AugmentSpec augment_;
  int64_t epoch_ = 0;  // of the current order: staged into StepState::epoch by move_to
  cudaStream_t stream_ = nullptr;
  std::string device_;

  DeviceBuffer<float> mean_, std_;      // [C]
  DeviceBuffer<int32_t> batch_labels_;  // [B]
  DeviceBuffer<kernels::StepState> step_state_;
  DeviceBuffer<uint8_t> train_pixels_, eval_pixels_;
  DeviceBuffer<int32_t> train_labels_, eval_labels_, order_;
  int64_t train_count_ = -1, eval_count_ = -1;  // -1: not set
  size_t order_size_ = 0;                       // 0: no order set for the current training data

  PinnedBuffer<kernels::StepState> step_staging_;
  PinnedBuffer<int32_t> order_staging_;
  Event step_staging_free_, order_staging_free_;
  int64_t device_first_ = -1;  // StepState::first once the queued work has run; -1 unknown
};

}  // namespace gputrain::cuda
