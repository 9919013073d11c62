// Launchers of kernels/softmax_xent.cuh (declared and documented in kernels/launchers.hpp).
#include "softmax_xent.cuh"

namespace gputrain::kernels {
inline namespace GPUTRAIN_KERNELS_ABI {

size_t softmax_xent_workspace_bytes(int batch) {
  return sizeof(XentRow) * size_t(batch > 0 ? batch : 1);
}

void launch_softmax_xent(int batch, int classes, const float* logits, const int32_t* labels,
                         float grad_scale, float* dlogits, int32_t* predicted, double* loss_sum,
                         unsigned long long* correct, unsigned long long* confusion,
                         void* workspace, size_t workspace_bytes, cudaStream_t stream,
                         float label_smoothing) {
  if (batch < 0 || classes < 1)
    detail::bad_argument("softmax_xent", "bad shape (batch " + std::to_string(batch) +
                                             ", classes " + std::to_string(classes) + ")");
  if (!(label_smoothing >= 0.0f && label_smoothing < 1.0f))
    detail::bad_argument("softmax_xent",
                         "label_smoothing " + std::to_string(label_smoothing) + " outside [0, 1)");
  if (batch == 0) return;
  if (workspace_bytes < softmax_xent_workspace_bytes(batch))
    detail::bad_argument("softmax_xent", "workspace of " + std::to_string(workspace_bytes) +
                                             " bytes, needs " +
                                             std::to_string(softmax_xent_workspace_bytes(batch)));
  auto* rows = static_cast<XentRow*>(workspace);
  constexpr int kThreads = 256, kRowsPerBlock = kThreads / detail::kWarp;
  detail::launch("softmax_xent_rows", softmax_xent_rows_kernel,
                 dim3(detail::grid_for(batch, kRowsPerBlock)), dim3(kThreads), 0, stream, batch,
                 classes, logits, labels, grad_scale, dlogits, predicted, confusion, rows,
                 label_smoothing);
  if (loss_sum || correct)
    detail::launch("softmax_xent_reduce", softmax_xent_reduce_kernel, dim3(1), dim3(kThreads), 0,
                   stream, batch, static_cast<const XentRow*>(rows), loss_sum, correct);
}

}  // namespace GPUTRAIN_KERNELS_ABI
}  // namespace gputrain::kernels
