// The CUDA engine's training step and evaluation (the class: cuda_engine_impl.hpp). A full-batch
// forward_backward is captured once as a CUDA graph after one eager warm-up step and replayed for
// every later full batch; the last partial batch of an epoch runs eagerly and leaves the graph as
// it is. A capture that fails makes the engine run every step eagerly from then on (it says why).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/cuda_engine_impl.hpp"
#include "gputrain/errors.hpp"
#include "launchers.hpp"

namespace gputrain::cuda {

namespace k = gputrain::kernels;

// ---- the step ----------------------------------------------------------------------------------

// A training step's first phase on the device: the batch at order[state.first, +n) → forward →
// loss (dlogits, loss and correct accumulated on the device) → backward → state.first += n,
// state.step += 1. Reads nothing from the host, so it can be captured and replayed as is.
void CudaEngineImpl::enqueue_forward_backward(const BatchPlan& bp, int n, float grad_scale) {
  const PassContext c = pass_context(true);
  data_->enqueue_train_batch(n, layers_->input());
  layers_->forward(c, bp, n);
  k::launch_softmax_xent(n, plan_.num_classes, layers_->logits(), data_->batch_labels(), grad_scale,
                         layers_->dlogits(), nullptr, train_loss_.get(), train_correct_.get(),
                         nullptr, workspace_.get(), workspace_.bytes(), stream_,
                         opt_.label_smoothing);
  layers_->backward(c, bp, n);
  // Enqueues (a data-parallel run's NCCL all-reduce of the gradients) on our stream: recorded
  // into the graph when this runs inside a capture.
  if (gradient_hook_) gradient_hook_(gradients());
  data_->enqueue_advance(n);
}

void CudaEngineImpl::set_gradient_hook(GradientHook hook) {
  gradient_hook_ = std::move(hook);
  graph_.reset();  // a step captured before holds the old hook's work
}

// Captures the full step (first time) and replays it. Capture records the step without running
// it; if capture fails, nothing ran and the engine gives up on graphs for good: it notes why
// (describe(), take_warnings()) and runs this and every later step eagerly, with the same results.
void CudaEngineImpl::run_full_step_as_graph(const BatchPlan& bp, int n, float grad_scale) {
  // grad_scale is a launch argument baked into the graph; a new one (rare) needs a new capture.
  if (graph_.ready() && grad_scale != graph_grad_scale_) graph_.reset();
  if (!graph_.ready()) {
    ++graph_captures_;
    const bool sabotage = std::exchange(break_next_capture_, false);
    const std::string failure = graph_.try_capture(stream_, [&] {
      // Test hook: a stream synchronize is refused inside a capture (and invalidates it).
      if (sabotage) GT_CHECK(cudaStreamSynchronize(stream_));
      enqueue_forward_backward(bp, n, grad_scale);
    });
    if (!failure.empty()) {
      capture_failure_ = failure;
      warnings_.push_back("CUDA graph capture of the training step failed (" + failure +
                          "); every step runs eagerly from now on (same results, more host work)");
      enqueue_forward_backward(bp, n, grad_scale);
      return;
    }
    graph_grad_scale_ = grad_scale;
  }
  graph_.launch(stream_);
  ++graph_replays_;
}

void CudaEngineImpl::forward_backward(int64_t first, int count, float grad_scale) {
  const int64_t order_size = int64_t(data_->order_size());
  if (data_->train_count() < 0 || order_size == 0)
    throw RuntimeFailure("forward_backward: set_train_data and set_order come first");
  if (count < 1 || count > batch_ || first < 0 || first + count > order_size)
    throw RuntimeFailure("forward_backward: batch [" + std::to_string(first) + ", +" +
                         std::to_string(count) + ") is outside the planned batch size " +
                         std::to_string(batch_) + " or the order of " + std::to_string(order_size));
  DeviceScope scope(device_);
  const BatchPlan& bp = plan_for(count);  // no-op after the first step of this size

  // The device's step position follows the trainer's `first` exactly: normally each step's
  // advance leaves it where the next step starts, and only a jump (new epoch, resume, a skipped
  // range) costs an explicit (asynchronous) set.
  data_->move_to(first, global_step_);

  if (graph_active() && count == batch_ && warmed_up_) {
    run_full_step_as_graph(bp, count, grad_scale);
  } else {
    // Eager: the last partial batch, --no-graph, after a failed capture, and the one warm-up step
    // before capture (first calls into cuBLAS/cuDNN load kernels and set up state, which must not
    // happen in a capture).
    enqueue_forward_backward(bp, count, grad_scale);
    if (count == batch_) warmed_up_ = true;
  }
  data_->advanced(first, count);
  samples_ += count;
  for (int64_t& tracked : batches_tracked_) ++tracked;  // each batchnorm2d took batch statistics
}

// The second phase: one kernel over the flat buffers, its lr from the step table entry of the
// device's step count (advanced by forward_backward), so it needs nothing from the host either.
// With optimizer.grad_clip, the global norm and the clipping scale are computed first, on the
// complete (all-reduced) gradients, into device memory that the update reads.
void CudaEngineImpl::apply_optimizer() {
  DeviceScope scope(device_);
  optimizer_.enqueue_update(params_.get(), grads_.get(), data_->step_state(), stream_);
  ++global_step_;
}

TrainCounters CudaEngineImpl::read_counters(bool reset) {
  DeviceScope scope(device_);
  GT_CHECK(cudaMemcpyAsync(loss_host_.get(), train_loss_.get(), sizeof(double),
                           cudaMemcpyDeviceToHost, stream_));
  GT_CHECK(cudaMemcpyAsync(count_host_.get(), train_correct_.get(), sizeof(unsigned long long),
                           cudaMemcpyDeviceToHost, stream_));
  TrainCounters c;
  if (optimizer_.clipping()) {
    GT_CHECK(cudaMemcpyAsync(loss_host_.get() + 1, optimizer_.norm_sum(), sizeof(double),
                             cudaMemcpyDeviceToHost, stream_));
    c.grad_norm_steps = optimizer_.norm_steps();
  }
  if (reset) {
    // Queued after the copies: steps enqueued later accumulate into the zeroed counters.
    GT_CHECK(cudaMemsetAsync(train_loss_.get(), 0, sizeof(double), stream_));
    GT_CHECK(cudaMemsetAsync(train_correct_.get(), 0, sizeof(unsigned long long), stream_));
    optimizer_.enqueue_reset_norms(stream_);
  }
  stream_.synchronize();
  c.loss_sum = loss_host_[0];
  c.correct = int64_t(count_host_[0]);
  c.samples = samples_;
  if (optimizer_.clipping()) c.grad_norm_sum = loss_host_[1];
  if (reset) samples_ = 0;
  return c;
}

EvalResult CudaEngineImpl::evaluate(std::vector<float>* out_logits, const std::atomic<bool>* stop) {
  EvalResult r;
  const int K = plan_.num_classes;
  r.classes = K;
  r.confusion.assign(size_t(K) * K, 0);
  const int64_t total = std::max<int64_t>(data_->eval_count(), 0);
  if (out_logits) out_logits->assign(size_t(total) * K, 0.0f);
  if (total == 0) return r;
  DeviceScope scope(device_);
  GT_CHECK(cudaMemsetAsync(eval_loss_.get(), 0, sizeof(double), stream_));
  GT_CHECK(cudaMemsetAsync(eval_correct_.get(), 0, sizeof(unsigned long long), stream_));
  GT_CHECK(cudaMemsetAsync(confusion_.get(), 0, confusion_.bytes(), stream_));
  for (int64_t start = 0; start < total; start += batch_) {
    if (stop && stop->load()) {  // a host-side check only: chunks are queued, not waited for
      r.interrupted = true;
      break;
    }
    const int n = int(std::min<int64_t>(batch_, total - start));
    const BatchPlan& bp = plan_for(n);
    data_->enqueue_eval_chunk(start, n, layers_->input());
    layers_->forward(pass_context(false), bp, n);
    k::launch_softmax_xent(n, K, layers_->logits(), data_->batch_labels(), 1.0f, nullptr, nullptr,
                           eval_loss_.get(), eval_correct_.get(), confusion_.get(),
                           workspace_.get(), workspace_.bytes(), stream_);
    // Stream-ordered before the next chunk overwrites the logits slot.
    if (out_logits)
      GT_CHECK(cudaMemcpyAsync(out_logits->data() + size_t(start) * K, layers_->logits(),
                               size_t(n) * K * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  }
  std::vector<unsigned long long> confusion(size_t(K) * K);
  GT_CHECK(cudaMemcpyAsync(loss_host_.get(), eval_loss_.get(), sizeof(double),
                           cudaMemcpyDeviceToHost, stream_));
  GT_CHECK(cudaMemcpyAsync(count_host_.get(), eval_correct_.get(), sizeof(unsigned long long),
                           cudaMemcpyDeviceToHost, stream_));
  GT_CHECK(cudaMemcpyAsync(confusion.data(), confusion_.get(), confusion_.bytes(),
                           cudaMemcpyDeviceToHost, stream_));
  stream_.synchronize();
  r.loss_sum = loss_host_[0];
  r.correct = int64_t(count_host_[0]);
  r.samples = total;
  for (size_t i = 0; i < confusion.size(); ++i) r.confusion[i] = int64_t(confusion[i]);
  return r;
}

}  // namespace gputrain::cuda
