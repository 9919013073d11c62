// The CUDA engine's lowering of batchnorm2d, avgpool2d, global_avgpool and dropout, which needs no
// device: which activation slot each layer writes (dropout in place, like relu), the per-layer
// buffers it declares in the one allocation list (batch statistics, dropout masks), where the
// running statistics sit in the model buffers, and the kernel workspace the batch statistics
// need; and in bf16 the convolutions' one BF16 scratch set (cuDNN descriptors are host objects:
// creating them needs the library, not a device).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/cuda_layers.hpp"
#include "gputrain/model.hpp"
#include "launchers.hpp"
#include "support/layers.hpp"
#include "support/model_data.hpp"

using namespace gputrain;
using namespace gputrain::cuda;
using namespace gputrain::testing;

namespace {

ModelPlan norm_pool_dropout_net() {
  return make_plan(3, 8, 8,
                   {batchnorm("bn", 0.25, 1e-3), relu(), avgpool(2, 2), dropout(0.5),
                    global_avgpool(), dropout(0.0), flatten(), linear("fc", 10)});
}

}  // namespace

TEST_CASE("batchnorm2d, average pools and dropout are lowered to slots and planned buffers",
          "[cuda_host]") {
  const ModelPlan plan = norm_pool_dropout_net();
  CudaLayers lowered(plan, Precision::Fp32);
  const std::vector<Layer>& l = lowered.layers();
  REQUIRE(l.size() == 8);
  // Slots: bn writes a new one, relu and dropout work in place, the pools write new ones.
  const int in_slots[] = {0, 1, 1, 2, 2, 3, 3, 3}, out_slots[] = {1, 1, 2, 2, 3, 3, 3, 4};
  for (size_t i = 0; i < l.size(); ++i) {
    INFO("layer " << i);
    CHECK(l[i].in_slot == in_slots[i]);
    CHECK(l[i].out_slot == out_slots[i]);
    CHECK(l[i].ordinal == int(i));  // dropout's draws are keyed by it, as on the CPU
  }
  const LayerPlan& bn = plan.layers[0];
  CHECK(l[0].w_offset == plan.weight(bn).offset);
  CHECK(l[0].b_offset == plan.bias(bn).offset);
  CHECK(l[0].running_mean_offset == plan.buffers[size_t(bn.running_mean_index)].offset);
  CHECK(l[0].running_var_offset == plan.buffers[size_t(bn.running_var_index)].offset);
  CHECK(l[0].momentum == 0.25f);
  CHECK(l[0].eps == 1e-3f);
  CHECK(l[3].p == 0.5f);
  CHECK(l[5].p == 0.0f);

  const int batch = 32;
  AllocationList list;
  lowered.plan_allocations(batch, list);
  size_t statistics = 0, masks = 0, activations = 0;
  for (const AllocationList::Entry& e : list.entries()) {
    if (e.name == "batch statistics") statistics += e.bytes;
    if (e.name == "dropout masks") masks += e.bytes;
    if (e.name == "activations") activations += e.bytes;
  }
  CHECK(statistics == 2 * 3 * sizeof(float));  // mean and invstd [C]
  CHECK(masks == size_t(batch) * 3 * 4 * 4);   // p = 0.5 only: [B, 3, 4, 4] bytes
  CHECK(activations == sizeof(float) * batch * (192 + 192 + 48 + 3 + 10));  // slots 0..4
  CHECK(lowered.kernel_workspace_bytes(batch) >= kernels::batchnorm_workspace_bytes(batch, 3, 64));
}

// conv 3→8 (3×3, padding 1) on 3×8×8, max-pool, conv 8→16 (3×3) on 8×4×4 → 16×2×2, linear.
ModelPlan two_conv_net() {
  return make_plan(3, 8, 8,
                   {conv("c1", 8, 3, 1, 1), relu(), maxpool(2, 2), conv("c2", 16, 3), flatten(),
                    linear("fc", 10)});
}

TEST_CASE("bf16 declares one BF16 conv scratch set, sized for the largest conv layer",
          "[cuda_host]") {
  const ModelPlan plan = two_conv_net();
  const int batch = 16;
  auto scratch_bytes = [&](Precision p, size_t* total, size_t* entries) {
    CudaLayers lowered(plan, p);
    AllocationList list;
    lowered.plan_allocations(batch, list);
    *total = *entries = 0;
    for (const AllocationList::Entry& e : list.entries())
      if (e.name.rfind("bf16 convolution", 0) == 0) {
        *total += e.bytes;
        ++*entries;
      }
    return list.entries();
  };
  size_t total = 0, entries = 0;
  const auto bf16 = scratch_bytes(Precision::Bf16, &total, &entries);
  // x and dx: max(B·3·8·8, B·8·4·4) = B·192; y / dy: max(B·8·8·8, B·16·2·2) = B·512; w and dw:
  // max(8·3·9, 16·8·9) = 1152 — two bytes each.
  CHECK(entries == 5);
  CHECK(total == 2 * (2 * size_t(batch) * 192 + size_t(batch) * 512 + 2 * 1152));
  for (const AllocationList::Entry& e : bf16) {
    if (e.name == "bf16 convolution inputs" || e.name == "bf16 convolution input gradients")
      CHECK(e.bytes == 2 * size_t(batch) * 192);
    if (e.name == "bf16 convolution outputs / output gradients")
      CHECK(e.bytes == 2 * size_t(batch) * 512);
    if (e.name == "bf16 convolution weights" || e.name == "bf16 convolution weight gradients")
      CHECK(e.bytes == 2 * 1152);
  }
  for (Precision p : {Precision::Fp32, Precision::Tf32}) {
    scratch_bytes(p, &total, &entries);
    CHECK(entries == 0);  // FP32 convolutions work on the FP32 buffers themselves
  }
  // A bf16 net without convolutions has no scratch either.
  size_t none = 0;
  const ModelPlan no_conv_plan = norm_pool_dropout_net();  // CudaLayers keeps a reference
  CudaLayers no_conv(no_conv_plan, Precision::Bf16);
  AllocationList list;
  no_conv.plan_allocations(batch, list);
  for (const AllocationList::Entry& e : list.entries()) none += e.name.rfind("bf16", 0) == 0;
  CHECK(none == 0);
  CHECK(no_conv.precision() == Precision::Bf16);
}
