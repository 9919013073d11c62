// Launchers of kernels/adamw.cuh (declared and documented in kernels/launchers.hpp).
#include "adamw.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

AdamWConstants make_adamw_constants(const OptimizerSpec& spec) {
  AdamWConstants c;
  c.beta1 = float(spec.beta1);
  c.beta2 = float(spec.beta2);
  c.one_minus_beta1 = float(1.0 - spec.beta1);
  c.one_minus_beta2 = float(1.0 - spec.beta2);
  c.eps = float(spec.eps);
  c.weight_decay = spec.weight_decay;
  return c;
}

void launch_adamw_step(int64_t n, float* w, const float* g, float* m, float* v,
                       const AdamWConstants& constants, const StepHyper* table, int64_t table_size,
                       const StepState* state, const GradClip* clip, const uint8_t* decay,
                       cudaStream_t stream) {
  if (n < 0) detail::bad_argument("adamw_update", "negative size");
  if (!table || table_size < 1 || !state)
    detail::bad_argument("adamw_update", "no step table or step state");
  if (n == 0) return;
  const bool vec4 = detail::aligned16(w) && detail::aligned16(g) && detail::aligned16(m) &&
                    detail::aligned16(v) && (reinterpret_cast<uintptr_t>(decay) & 3u) == 0;
  const int64_t n4 = vec4 ? n / 4 : 0;
  constexpr int kThreads = 256;
  detail::launch("adamw_update", adamw_step_kernel,
                 dim3(detail::grid_for(vec4 ? n4 + n % 4 : n, kThreads)), dim3(kThreads), 0, stream,
                 n, n4, w, g, m, v, constants, table, table_size, state, clip, decay);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
