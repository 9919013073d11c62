// Launchers of kernels/sgd.cuh (declared and documented in kernels/launchers.hpp).
#include "sgd.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {

void launch_sgd(int64_t n, float* w, const float* g, float* v, const SgdHyper* hyper,
                const SgdHyper& by_value, bool may_need_v, const StepHyper* table,
                int64_t table_size, const StepState* state, const uint8_t* decay,
                cudaStream_t stream) {
  if (n < 0) detail::bad_argument("sgd_update", "negative size");
  if (n == 0) return;
  // With hyper-parameters in device memory the host cannot know whether momentum is 0: v is needed.
  if (may_need_v && v == nullptr)
    detail::bad_argument("sgd_update", "no momentum buffer (needed unless momentum == 0)");
  const bool vec4 = detail::aligned16(w) && detail::aligned16(g) && (!v || detail::aligned16(v)) &&
                    (reinterpret_cast<uintptr_t>(decay) & 3u) == 0;
  const int64_t n4 = vec4 ? n / 4 : 0;
  constexpr int kThreads = 256;
  detail::launch("sgd_update", sgd_update_kernel,
                 dim3(detail::grid_for(vec4 ? n4 + n % 4 : n, kThreads)), dim3(kThreads), 0, stream,
                 n, n4, w, g, v, hyper, by_value, table, table_size, state, decay);
}

}  // namespace

void launch_sgd_update(int64_t n, float* w, const float* g, float* v, const SgdHyper* hyper,
                       cudaStream_t stream) {
  if (!hyper) detail::bad_argument("sgd_update", "null hyper-parameters");
  launch_sgd(n, w, g, v, hyper, SgdHyper{}, true, nullptr, 0, nullptr, nullptr, stream);
}

void launch_sgd_step(int64_t n, float* w, const float* g, float* v, const SgdHyper& constants,
                     const StepHyper* table, int64_t table_size, const StepState* state,
                     const uint8_t* decay, cudaStream_t stream) {
  if (!table || table_size < 1 || !state)
    detail::bad_argument("sgd_update", "no step table or step state");
  launch_sgd(n, w, g, v, nullptr, constants, constants.momentum != 0.0f, table, table_size, state,
             decay, stream);
}

void launch_sgd_update(int64_t n, float* w, const float* g, float* v, const cpu::SgdParams& p,
                       cudaStream_t stream, const uint8_t* decay) {
  launch_sgd(n, w, g, v, nullptr, make_sgd_hyper(p), p.momentum != 0.0f, nullptr, 0, nullptr, decay,
             stream);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
