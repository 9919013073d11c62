// The CUDA engine's lowering of batchnorm2d, avgpool2d, global_avgpool and dropout, which needs no
// device: which activation slot each layer writes (dropout in place, like relu), the per-layer
// buffers it declares in the one allocation list (batch statistics, dropout masks), where the
// running statistics sit in the model buffers, and the kernel workspace the batch statistics
// need. (A net without conv2d: no cuDNN descriptor is made.)
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/cuda_layers.hpp"
#include "gputrain/model.hpp"
#include "launchers.hpp"

using namespace gputrain;
using namespace gputrain::cuda;

namespace {

LayerConfig layer(LayerKind kind) {
  LayerConfig l;
  l.kind = kind;
  return l;
}

ModelPlan norm_pool_dropout_net() {
  ModelConfig m;
  m.input_channels = 3;
  m.input_height = 8;
  m.input_width = 8;
  LayerConfig bn = layer(LayerKind::BatchNorm2d);
  bn.name = "bn";
  bn.momentum = 0.25;
  bn.eps = 1e-3;
  LayerConfig pool = layer(LayerKind::AvgPool2d);
  pool.kernel = pool.stride = 2;
  LayerConfig drop = layer(LayerKind::Dropout);
  drop.p = 0.5;
  LayerConfig no_drop = layer(LayerKind::Dropout);
  no_drop.p = 0.0;
  LayerConfig fc = layer(LayerKind::Linear);
  fc.name = "fc";
  fc.out_features = 10;
  m.layers = {bn,      layer(LayerKind::Relu),    pool, drop, layer(LayerKind::GlobalAvgPool),
              no_drop, layer(LayerKind::Flatten), fc};
  return plan_model(m, "test");
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
