// Launchers of kernels/bias_act.cuh (declared and documented in kernels/launchers.hpp).
#include "bias_act.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {
namespace {

constexpr int kThreads = 256;

template <bool kRelu, bool kVec4, typename Index>
void launch_bias_act_as(float* y, const float* bias, int64_t total, int channels, int64_t plane,
                        cudaStream_t stream) {
  const int64_t items = kVec4 ? total / 4 : total;
  detail::launch("bias_act", bias_act_kernel<kRelu, kVec4, Index>,
                 dim3(detail::grid_for(items, kThreads)), dim3(kThreads), 0, stream, y, bias,
                 Index(total), Index(plane), Index(channels));
}

template <bool kRelu>
void launch_bias_act_relu(float* y, const float* bias, int64_t total, int channels, int64_t plane,
                          cudaStream_t stream) {
  const bool vec4 = plane % 4 == 0 && detail::aligned16(y);
  // uint32_t indices when they cannot overflow, including i + grid stride.
  const bool small = total + detail::kMaxGridStrideBlocks * kThreads < (int64_t(1) << 32);
  if (vec4 && small)
    launch_bias_act_as<kRelu, true, uint32_t>(y, bias, total, channels, plane, stream);
  else if (vec4)
    launch_bias_act_as<kRelu, true, int64_t>(y, bias, total, channels, plane, stream);
  else if (small)
    launch_bias_act_as<kRelu, false, uint32_t>(y, bias, total, channels, plane, stream);
  else
    launch_bias_act_as<kRelu, false, int64_t>(y, bias, total, channels, plane, stream);
}

void check_sizes(const char* kernel, int64_t batch, int channels, int64_t plane) {
  if (batch < 0 || channels < 0 || plane < 0)
    detail::bad_argument(kernel, "negative size (batch " + std::to_string(batch) + ", channels " +
                                     std::to_string(channels) + ", plane " + std::to_string(plane) +
                                     ")");
}

template <bool kBackward>
void launch_relu(const char* name, const float* a, const float* b, float* out, int64_t count,
                 cudaStream_t stream) {
  if (count < 0) detail::bad_argument(name, "negative count");
  if (count == 0) return;
  const bool vec4 =
      detail::aligned16(a) && detail::aligned16(out) && (!kBackward || detail::aligned16(b));
  const int64_t n4 = vec4 ? count / 4 : 0;
  const int64_t items = vec4 ? n4 + count % 4 : count;
  detail::launch(name, relu_kernel<kBackward>, dim3(detail::grid_for(items, kThreads)),
                 dim3(kThreads), 0, stream, a, b, out, count, n4);
}

}  // namespace

void launch_bias_act(float* y, const float* bias, int64_t batch, int channels, int64_t plane,
                     bool relu, cudaStream_t stream) {
  check_sizes("bias_act", batch, channels, plane);
  const int64_t total = batch * channels * plane;
  if (total == 0) return;
  if (relu)
    launch_bias_act_relu<true>(y, bias, total, channels, plane, stream);
  else
    launch_bias_act_relu<false>(y, bias, total, channels, plane, stream);
}

void launch_relu_forward(const float* x, float* y, int64_t count, cudaStream_t stream) {
  launch_relu<false>("relu_forward", x, nullptr, y, count, stream);
}

void launch_relu_backward(const float* y, const float* dy, float* dx, int64_t count,
                          cudaStream_t stream) {
  launch_relu<true>("relu_backward", y, dy, dx, count, stream);
}

size_t bias_grad_workspace_bytes(int64_t batch, int channels, int64_t plane) {
  const int64_t partials = bias_grad_plan(batch, channels, plane).partials;
  return sizeof(float) * size_t(partials > 0 ? partials : 1);
}

void launch_bias_grad(const float* dy, const float* relu_y, float* dx, float* db, int64_t batch,
                      int channels, int64_t plane, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream) {
  check_sizes("bias_grad", batch, channels, plane);
  if (channels == 0) return;
  const BiasGradPlan p = bias_grad_plan(batch, channels, plane);
  if (workspace_bytes < bias_grad_workspace_bytes(batch, channels, plane))
    detail::bad_argument("bias_grad",
                         "workspace of " + std::to_string(workspace_bytes) + " bytes, needs " +
                             std::to_string(bias_grad_workspace_bytes(batch, channels, plane)));
  float* partial = static_cast<float*>(workspace);
  const bool relu = relu_y != nullptr;
  if (relu && dx == nullptr) detail::bad_argument("bias_grad", "relu_y without dx");
  int64_t stride_s = 0, stride_c = 0, finish_plane = 1;
  if (batch == 0 || plane == 0) {
    // Nothing to sum: db = 0 (stage 2 over zero partials).
  } else if (p.planes_path) {
    const bool vec4 = plane % 4 == 0 && detail::aligned16(dy) &&
                      (!relu || (detail::aligned16(relu_y) && detail::aligned16(dx)));
    const dim3 grid(unsigned(p.splits), unsigned(channels));
    auto* kernel =
        relu
            ? (vec4 ? bias_grad_planes_kernel<true, true> : bias_grad_planes_kernel<true, false>)
            : (vec4 ? bias_grad_planes_kernel<false, true> : bias_grad_planes_kernel<false, false>);
    detail::launch("bias_grad_planes", kernel, grid, dim3(kThreads), 0, stream, dy, relu_y, dx,
                   partial, batch, channels, plane, p.rows_per_split);
    stride_s = 1;
    stride_c = p.splits;
  } else {
    const int64_t row = int64_t(channels) * plane;
    const dim3 grid(detail::grid_for(row, kThreads, int64_t(1) << 31), unsigned(p.splits));
    if (p.splits > 65535) detail::bad_argument("bias_grad", "batch too large");
    detail::launch("bias_grad_columns",
                   relu ? bias_grad_columns_kernel<true> : bias_grad_columns_kernel<false>, grid,
                   dim3(kThreads), 0, stream, dy, relu_y, dx, partial, batch, row,
                   p.rows_per_split);
    stride_s = row;
    stride_c = plane;
    finish_plane = plane;
  }
  const int64_t splits = (batch == 0 || plane == 0) ? 0 : p.splits;
  const int64_t warps_per_block = kThreads / detail::kWarp;
  detail::launch("bias_grad_finish", bias_grad_finish_kernel,
                 dim3(unsigned((channels + warps_per_block - 1) / warps_per_block)), dim3(kThreads),
                 0, stream, partial, db, channels, splits, finish_plane, stride_s, stride_c);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
