// See device_data.hpp.
#include "backend/cuda/device_data.hpp"

#include <cstring>
#include <utility>

#include "backend/cuda/cuda_check.hpp"
#include "gputrain/errors.hpp"

namespace gputrain::cuda {

namespace k = gputrain::kernels;

DeviceData::DeviceData(const ModelPlan& plan, int batch, const AugmentSpec& augment,
                       cudaStream_t stream, std::string device)
    : plan_(plan), batch_(batch), augment_(augment), stream_(stream), device_(std::move(device)) {}

void DeviceData::plan_allocations(AllocationList& list) {
  list.add(mean_, size_t(plan_.input.channels), "normalization");
  list.add(std_, size_t(plan_.input.channels), "normalization");
  list.add(batch_labels_, size_t(batch_), "labels");
  list.add(step_state_, 1, "step state");
}

void DeviceData::initialize(const std::vector<float>& mean, const std::vector<float>& std) {
  GT_CHECK(
      cudaMemcpyAsync(mean_.get(), mean.data(), mean_.bytes(), cudaMemcpyHostToDevice, stream_));
  GT_CHECK(cudaMemcpyAsync(std_.get(), std.data(), std_.bytes(), cudaMemcpyHostToDevice, stream_));
  step_staging_.allocate(1);
  step_staging_free_ = Event::create();
  order_staging_free_ = Event::create();
  GT_CHECK(cudaStreamSynchronize(stream_));  // the pageable sources go out of scope
}

void DeviceData::check_images(const ImageSet& set, const char* what) const {
  const ActivationShape& in = plan_.input;
  if (set.channels != in.channels || set.height != in.height || set.width != in.width)
    throw DataError(std::string("the ") + what + " images are " + std::to_string(set.channels) +
                    "x" + std::to_string(set.height) + "x" + std::to_string(set.width) +
                    " but model.input is " + std::to_string(in.channels) + "x" +
                    std::to_string(in.height) + "x" + std::to_string(in.width));
  if (set.count < 0 || set.pixels.size() != size_t(set.count) * size_t(set.image_size()) ||
      set.labels.size() != size_t(set.count))
    throw DataError(std::string("the ") + what + " set's pixel or label count does not match its " +
                    std::to_string(set.count) + " images");
  // The softmax kernel would turn a bad label into a NaN loss; say what is wrong instead.
  for (size_t i = 0; i < set.labels.size(); ++i)
    if (set.labels[i] < 0 || set.labels[i] >= plan_.num_classes)
      throw DataError(std::string("the ") + what + " set's label " + std::to_string(set.labels[i]) +
                      " (image " + std::to_string(i) + ") is outside [0, " +
                      std::to_string(plan_.num_classes) + ")");
}

bool DeviceData::upload_images(const ImageSet& set, DeviceBuffer<uint8_t>& pixels,
                               DeviceBuffer<int32_t>& labels, int64_t* count, const char* what) {
  check_images(set, what);
  GT_CHECK(cudaStreamSynchronize(stream_));  // queued steps / evaluations may read the old copy
  bool moved = false;
  if (pixels.size() != set.pixels.size() || labels.size() != set.labels.size()) {
    moved = true;
    pixels.release();
    labels.release();
    const size_t need = set.pixels.size() + set.labels.size() * sizeof(int32_t);
    ensure_fits(need,
                std::string("the ") + what + " set (" + std::to_string(set.count) + " images)",
                device_);
    pixels.allocate(set.pixels.size(), std::string(what) + " images");
    labels.allocate(set.labels.size(), std::string(what) + " labels");
  }
  if (!set.pixels.empty())
    GT_CHECK(cudaMemcpyAsync(pixels.get(), set.pixels.data(), set.pixels.size(),
                             cudaMemcpyHostToDevice, stream_));
  if (!set.labels.empty())
    GT_CHECK(cudaMemcpyAsync(labels.get(), set.labels.data(), set.labels.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  GT_CHECK(cudaStreamSynchronize(stream_));
  *count = set.count;
  return moved;
}

bool DeviceData::set_train(const ImageSet& set) {
  const bool moved = upload_images(set, train_pixels_, train_labels_, &train_count_, "training");
  order_size_ = 0;  // an order refers to a particular training set: set_order again
  device_first_ = -1;
  return moved;
}

bool DeviceData::set_eval(const ImageSet& set) {
  return upload_images(set, eval_pixels_, eval_labels_, &eval_count_, "evaluation");
}

bool DeviceData::set_order(const std::vector<int32_t>& order, int epoch) {
  if (train_count_ < 0) throw RuntimeFailure("set_order: no training data set");
  // Every index is checked on the host: the gather kernel trusts them (out of range = a wild read).
  for (size_t i = 0; i < order.size(); ++i)
    if (order[i] < 0 || order[i] >= train_count_)
      throw RuntimeFailure("set_order: index " + std::to_string(order[i]) + " at position " +
                           std::to_string(i) + " is outside the " + std::to_string(train_count_) +
                           " training images");
  bool moved = false;
  if (order.size() > order_.size()) {
    GT_CHECK(cudaStreamSynchronize(stream_));
    moved = true;
    order_.release();
    order_staging_.release();
    ensure_fits(order.size() * sizeof(int32_t), "the training order", device_);
    order_.allocate(order.size(), "training order");
    order_staging_.allocate(order.size());
  }
  order_size_ = order.size();
  epoch_ = epoch;
  device_first_ = -1;  // a new order (and epoch): the next step sets its state explicitly
  if (order.empty()) return moved;
  // The previous epoch's steps may still be queued and reading order_; the copy below is queued
  // after them on the same stream, so they see the old order and later steps the new one.
  order_staging_free_.synchronize();
  std::memcpy(order_staging_.get(), order.data(), order.size() * sizeof(int32_t));
  GT_CHECK(cudaMemcpyAsync(order_.get(), order_staging_.get(), order.size() * sizeof(int32_t),
                           cudaMemcpyHostToDevice, stream_));
  order_staging_free_.record(stream_);
  device_first_ = -1;  // a new order: the next step sets its position explicitly
  return moved;
}

void DeviceData::move_to(int64_t first, int64_t global_step) {
  if (first == device_first_) return;
  step_staging_free_.synchronize();  // the previous copy from the staging struct has run
  step_staging_[0] = k::StepState{first, global_step, epoch_};
  GT_CHECK(cudaMemcpyAsync(step_state_.get(), step_staging_.get(), sizeof(k::StepState),
                           cudaMemcpyHostToDevice, stream_));
  step_staging_free_.record(stream_);
  device_first_ = first;
}

void DeviceData::enqueue_train_batch(int n, float* out) const {
  const ActivationShape& in = plan_.input;
  if (augment_.enabled()) {
    k::launch_gather_batch_augmented(train_pixels_.get(), train_labels_.get(), order_.get(),
                                     step_state_.get(), 0, n, in.channels, in.height, in.width,
                                     augment_, mean_.get(), std_.get(), out, batch_labels_.get(),
                                     stream_);
    return;
  }
  const int64_t plane = int64_t(in.height) * in.width;
  k::launch_gather_batch(train_pixels_.get(), train_labels_.get(), order_.get(), step_state_.get(),
                         0, n, in.channels, plane, mean_.get(), std_.get(), out,
                         batch_labels_.get(), stream_);
}

void DeviceData::enqueue_eval_chunk(int64_t start, int n, float* out) const {
  // File order: no order buffer, no device step state; the chunk's first index from the host.
  const int64_t plane = int64_t(plan_.input.height) * plan_.input.width;
  k::launch_gather_batch(eval_pixels_.get(), eval_labels_.get(), nullptr, nullptr, start, n,
                         plan_.input.channels, plane, mean_.get(), std_.get(), out,
                         batch_labels_.get(), stream_);
}

void DeviceData::enqueue_advance(int n) const {
  k::launch_advance_step(step_state_.get(), n, stream_);
}

}  // namespace gputrain::cuda
