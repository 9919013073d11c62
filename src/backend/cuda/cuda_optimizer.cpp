// See cuda_optimizer.hpp.
#include "backend/cuda/cuda_optimizer.hpp"

#include <string>
#include <utility>

#include "backend/cuda/cuda_check.hpp"
#include "gputrain/errors.hpp"

namespace gputrain::cuda {

namespace k = gputrain::kernels;

CudaOptimizer::CudaOptimizer(const OptimizerSpec& spec, size_t parameter_count,
                             std::vector<uint8_t> decay_mask)
    : spec_(spec), count_(parameter_count), decay_host_(std::move(decay_mask)) {
  if (!decay_host_.empty() && decay_host_.size() != count_)
    throw RuntimeFailure("CUDA engine: a weight decay mask of " +
                         std::to_string(decay_host_.size()) + " entries for " +
                         std::to_string(count_) + " parameters");
  for (const OptimizerStateInfo& info : optimizer_state(spec_))
    state_.emplace_back(info.name, DeviceBuffer<float>());
}

void CudaOptimizer::plan_allocations(AllocationList& list) {
  for (auto& [name, buffer] : state_) list.add(buffer, count_, name);
  if (clipping()) {
    list.add(clip_, 1, "gradient clipping");
    list.add(norm_sum_, 1, "counters");
    list.add(norm_workspace_, k::grad_norm_workspace_bytes(), "gradient norm workspace", false);
  }
  if (!decay_host_.empty()) list.add(decay_, count_, "weight decay mask", false);
}

void CudaOptimizer::initialize(cudaStream_t stream) {
  if (decay_host_.empty()) return;
  GT_CHECK(cudaMemcpyAsync(decay_.get(), decay_host_.data(), decay_.bytes(), cudaMemcpyHostToDevice,
                           stream));
  GT_CHECK(cudaStreamSynchronize(stream));  // the host copy may go away after this
}

DeviceBuffer<float>& CudaOptimizer::state(const std::string& name) {
  for (auto& [n, buffer] : state_)
    if (n == name) return buffer;
  throw RuntimeFailure("CUDA engine: the optimizer has no state named '" + name + "'");
}

void CudaOptimizer::set_step_table(const std::vector<StepHyper>& table, cudaStream_t stream) {
  if (table.empty()) throw RuntimeFailure("set_step_table: empty table");
  GT_CHECK(cudaStreamSynchronize(stream));  // queued steps may still read the old table
  if (table_.size() < table.size()) table_.allocate(table.size(), "step table");
  GT_CHECK(cudaMemcpy(table_.get(), table.data(), table.size() * sizeof(StepHyper),
                      cudaMemcpyHostToDevice));
  table_size_ = table.size();
}

void CudaOptimizer::enqueue_reset_norms(cudaStream_t stream) {
  if (norm_sum_.bytes() > 0)
    GT_CHECK(cudaMemsetAsync(norm_sum_.get(), 0, norm_sum_.bytes(), stream));
  norm_steps_ = 0;
}

void CudaOptimizer::enqueue_update(float* params, float* grads, const kernels::StepState* step,
                                   cudaStream_t stream) {
  if (table_size_ == 0) throw RuntimeFailure("apply_optimizer: set_step_table comes first");
  // The gradients are complete here (the trainer's all-reduce, if any, came before): the norm, the
  // scale and the norm sum go to device memory, which the update reads. No host wait.
  const k::GradClip* clip = nullptr;
  if (clipping()) {
    k::launch_grad_norm(int64_t(count_), grads, spec_.grad_clip, clip_.get(), norm_sum_.get(),
                        norm_workspace_.get(), norm_workspace_.bytes(), stream);
    clip = clip_.get();
    ++norm_steps_;
  }
  switch (spec_.kind) {
    case OptimizerKind::Sgd: {
      // SGD's kernel takes no GradClip: the gradients are scaled in place first (the CPU's order).
      if (clip) k::launch_scale_gradients(int64_t(count_), grads, clip, stream);
      const k::SgdHyper constants{0.0f, spec_.momentum, spec_.weight_decay, spec_.nesterov ? 1 : 0};
      k::launch_sgd_step(int64_t(count_), params, grads, state("momentum").get(), constants,
                         table_.get(), int64_t(table_size_), step, decay_.get(), stream);
      break;
    }
    case OptimizerKind::AdamW:
      k::launch_adamw_step(int64_t(count_), params, grads, state("exp_avg").get(),
                           state("exp_avg_sq").get(), k::make_adamw_constants(spec_), table_.get(),
                           int64_t(table_size_), step, clip, decay_.get(), stream);
      break;
  }
}

}  // namespace gputrain::cuda
