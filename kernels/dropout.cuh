// Dropout in training: the keep decision of each unit is include/gputrain/dropout.hpp's hash of
// (seed, epoch, the sample's index in the training set, layer, unit), evaluated here exactly as
// cpu::dropout_forward evaluates it, so both drop the same units (integer arithmetic only), and a
// kept unit is scaled by the same float multiplication. Launchers: kernels/dropout.cu; semantics:
// kernels/launchers.hpp.
#pragma once

#include "common.cuh"
#include "gputrain/dropout.hpp"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

// One thread per unit of [count] = [batch, per_sample]. Sample i of the batch is
// order[state->first + i] (order null: the identity), the epoch state->epoch; both are read on
// the device so that one captured graph serves every step. May run in place (y == x).
template <typename Index>
__global__ void __launch_bounds__(256)
    dropout_forward_kernel(Index count, Index per_sample, const int32_t* __restrict__ order,
                           const StepState* __restrict__ state, uint64_t seed, int layer,
                           uint64_t drop_threshold, float scale, const float* x, float* y,
                           uint8_t* __restrict__ mask) {
  const int64_t first = state->first, epoch = state->epoch;
  for (Index i = Index(detail::global_thread_index()); i < count;
       i += Index(detail::grid_threads())) {
    const Index sample = i / per_sample, unit = i - sample * per_sample;
    const int64_t position = first + int64_t(sample);
    const int64_t index = order ? int64_t(__ldg(order + position)) : position;
    const bool keep =
        dropout_keep(dropout_sample_key(seed, epoch, index, layer), int64_t(unit), drop_threshold);
    const float v = x[i];
    y[i] = keep ? v * scale : 0.0f;
    mask[i] = keep ? 1 : 0;
  }
}

// dx = mask ? dy·scale : 0; may run in place (dx == dy).
template <typename Index>
__global__ void __launch_bounds__(256)
    dropout_backward_kernel(Index count, float scale, const uint8_t* __restrict__ mask,
                            const float* dy, float* dx) {
  for (Index i = Index(detail::global_thread_index()); i < count;
       i += Index(detail::grid_threads())) {
    const float g = dy[i];
    dx[i] = __ldg(mask + i) ? g * scale : 0.0f;
  }
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
