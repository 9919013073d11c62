// Host-side logic of the CUDA engine that needs no device: the generic cuDNN algorithm choice and
// verification (fed with made-up offers, as cuDNN's heuristics would return them), the error that
// lists what cuDNN offered, the precision rules, and the planned-allocation list whose sum is the
// memory check. Built with the CUDA backend; runs on any machine that can load its libraries.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "backend/cuda/allocation_plan.hpp"
#include "backend/cuda/conv_plans.hpp"
#include "backend/cuda/precision.hpp"
#include "gputrain/errors.hpp"

using namespace gputrain;
using namespace gputrain::cuda;

namespace {

constexpr size_t kMiB = size_t(1) << 20;

AlgoOffer offer(int algo, cudnnMathType_t math, bool deterministic, size_t workspace,
                cudnnStatus_t status = CUDNN_STATUS_SUCCESS) {
  AlgoOffer a;
  a.algo = algo;
  a.status = status;
  a.math = math;
  a.determinism = deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
  a.workspace = workspace;  // what the fake workspace query answers
  return a;
}

const char* name_of(int algo) {
  static const char* const names[] = {"A0", "A1", "A2", "A3", "A4", "A5"};
  return algo >= 0 && algo < 6 ? names[algo] : "?";
}

// A pass whose heuristics return `offers` (best first); the workspace query answers each offer's
// workspace (NOT_SUPPORTED for algo 5); run() refuses the algorithms in `refused`.
PassOps fake_pass(const std::vector<AlgoOffer>& offers, std::vector<int> refused = {}) {
  PassOps ops;
  ops.what = "forward";
  ops.algo_name = name_of;
  ops.rank = [offers] {
    std::vector<AlgoOffer> ranked = offers;
    for (AlgoOffer& a : ranked) a.workspace = 0;  // the query fills it in
    return ranked;
  };
  ops.workspace = [offers](int algo, size_t* bytes) {
    for (const AlgoOffer& a : offers)
      if (a.algo == algo) *bytes = a.workspace;
    return algo == 5 ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
  };
  ops.run = [refused](int algo, void*, size_t) {
    for (int r : refused)
      if (r == algo) return CUDNN_STATUS_NOT_SUPPORTED;
    return CUDNN_STATUS_SUCCESS;
  };
  return ops;
}

ConvPlanOptions fp32(bool deterministic, size_t soft, size_t hard = 512 * kMiB) {
  return ConvPlanOptions{Precision::Fp32, deterministic, soft, hard};
}

}  // namespace

TEST_CASE("the algorithm choice keeps FP32 math, determinism and the workspace limits",
          "[cuda_host]") {
  const std::vector<AlgoOffer> offers = {
      offer(0, CUDNN_TENSOR_OP_MATH, true, 0),                        // TF32: not in fp32
      offer(1, CUDNN_FMA_MATH, false, 0),                             // non-deterministic
      offer(2, CUDNN_FMA_MATH, true, 0, CUDNN_STATUS_NOT_SUPPORTED),  // heuristics: unavailable
      offer(5, CUDNN_FMA_MATH, true, 0),                              // workspace query fails
      offer(3, CUDNN_FMA_MATH, true, 64 * kMiB),                      // above the soft limit
      offer(4, CUDNN_DEFAULT_MATH, true, 1 * kMiB)};
  PassChoice pc;
  choose_algorithm(pc, fake_pass(offers), fp32(false, 2 * kMiB), "conv1");
  CHECK(pc.needed);
  CHECK(pc.algo() == 1);  // non-deterministic is fine when not asked for

  PassChoice det;
  choose_algorithm(det, fake_pass(offers), fp32(true, 2 * kMiB), "conv1");
  CHECK(det.algo() == 4);  // the first within the soft limit, though ranked after algo 3
  CHECK(det.workspace() == 1 * kMiB);
  CHECK(det.offers[0].passed_over.find("math type not allowed") != std::string::npos);
  CHECK(det.offers[1].passed_over == "not deterministic");
  CHECK(det.offers[2].passed_over == "not available");
  CHECK(det.offers[3].passed_over == "not supported for these shapes");

  PassChoice soft0;
  choose_algorithm(soft0, fake_pass({offers[4]}), fp32(true, 0), "conv1");
  CHECK(soft0.algo() == 3);  // nothing within the soft limit: the hard limit decides
}

TEST_CASE("no usable algorithm: the error lists everything cuDNN offered", "[cuda_host]") {
  const std::vector<AlgoOffer> offers = {offer(0, CUDNN_TENSOR_OP_MATH, true, 0),
                                         offer(1, CUDNN_FMA_MATH, false, 3 * 1024),
                                         offer(3, CUDNN_FMA_MATH, true, 600 * kMiB)};
  PassChoice pc;
  try {
    choose_algorithm(pc, fake_pass(offers), fp32(true, 0), "conv2 (16x8x8 -> 32x8x8, batch 64)");
    FAIL("expected a RuntimeFailure");
  } catch (const RuntimeFailure& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.rfind("cuDNN offers no usable forward algorithm for conv2 (16x8x8 -> 32x8x8, batch "
                  "64); cuDNN offered: A0 [",
                  0) == 0);
    for (const char* part :
         {"A0 [CUDNN_STATUS_SUCCESS, math TENSOR_OP, deterministic, workspace 0 KiB: math type",
          "A1 [CUDNN_STATUS_SUCCESS, math FMA, non-deterministic, workspace 3 KiB: not "
          "deterministic]",
          "A3 [CUDNN_STATUS_SUCCESS, math FMA, deterministic, workspace 600 MiB: workspace above "
          "the 512 MiB cap]"})
      CHECK(m.find(part) != std::string::npos);
  }
  PassChoice none;
  CHECK_THROWS_WITH(choose_algorithm(none, fake_pass({}), fp32(false, 0), "conv1"),
                    Catch::Contains("cuDNN offered: nothing"));
}

TEST_CASE("verification replaces an algorithm cuDNN refuses on the real buffers", "[cuda_host]") {
  const std::vector<AlgoOffer> offers = {
      offer(0, CUDNN_FMA_MATH, true, 0), offer(1, CUDNN_FMA_MATH, false, 0),
      offer(2, CUDNN_FMA_MATH, true, 8 * kMiB), offer(3, CUDNN_FMA_MATH, true, 1 * kMiB)};
  PassChoice pc;
  const PassOps ops = fake_pass(offers, {0});
  choose_algorithm(pc, ops, fp32(true, 16 * kMiB), "conv1");
  REQUIRE(pc.algo() == 0);
  // Algo 0 is refused; 1 is not deterministic; 2 needs more than the 4 MiB at hand; 3 runs.
  verify_algorithm(pc, ops, nullptr, 4 * kMiB, "conv1");
  CHECK(pc.algo() == 3);
  CHECK(pc.offers[0].passed_over == "trial run failed: CUDNN_STATUS_NOT_SUPPORTED");

  PassChoice all_refused;
  const PassOps refusing = fake_pass(offers, {0, 2, 3});
  choose_algorithm(all_refused, refusing, fp32(true, 16 * kMiB), "conv1");
  CHECK_THROWS_WITH(verify_algorithm(all_refused, refusing, nullptr, 16 * kMiB, "conv1"),
                    Catch::Contains("A3 [CUDNN_STATUS_SUCCESS, math FMA, deterministic, workspace "
                                    "1 MiB: trial run failed: CUDNN_STATUS_NOT_SUPPORTED]"));
}

TEST_CASE("fp32 precision accepts FMA and default math only", "[cuda_host]") {
  CHECK(accepts_conv_math(Precision::Fp32, CUDNN_FMA_MATH));
  CHECK(accepts_conv_math(Precision::Fp32, CUDNN_DEFAULT_MATH));
  CHECK(!accepts_conv_math(Precision::Fp32, CUDNN_TENSOR_OP_MATH));
  CHECK(!accepts_conv_math(Precision::Fp32, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION));
  CHECK(std::string(math_type_name(CUDNN_TENSOR_OP_MATH)) == "TENSOR_OP");
  CHECK(precision_name(Precision::Fp32).find("no TF32") != std::string::npos);
}

TEST_CASE("tf32 and bf16 accept tensor-op math but not the FP16 conversion", "[cuda_host]") {
  for (Precision p : {Precision::Tf32, Precision::Bf16}) {
    INFO(precision_name(p));
    CHECK(accepts_conv_math(p, CUDNN_TENSOR_OP_MATH));
    CHECK(accepts_conv_math(p, CUDNN_FMA_MATH));
    CHECK(accepts_conv_math(p, CUDNN_DEFAULT_MATH));
    CHECK(!accepts_conv_math(p, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION));
  }
  CHECK(precision_name(Precision::Tf32).rfind("tf32", 0) == 0);
  CHECK(precision_name(Precision::Bf16).rfind("bf16", 0) == 0);
}

TEST_CASE("bf16 runs convolutions on BF16 operands; fp32 and tf32 on FP32 ones", "[cuda_host]") {
  CHECK(bf16_convolutions(Precision::Bf16));
  CHECK(!bf16_convolutions(Precision::Fp32));
  CHECK(!bf16_convolutions(Precision::Tf32));
  CHECK(precision_name(Precision::Bf16).find("BF16 convolution and GEMM inputs") !=
        std::string::npos);
  CHECK(precision_name(Precision::Bf16).find("TF32") == std::string::npos);
}

TEST_CASE("the memory check is the sum of the one list of planned allocations", "[cuda_host]") {
  DeviceBuffer<float> params, grads;
  DeviceBuffer<int32_t> argmax;
  DeviceBuffer<double> loss;
  DeviceBuffer<unsigned char> workspace;
  AllocationList list;
  list.add(params, 1000, "parameters");
  list.add(grads, 1000, "gradients");
  list.add(argmax, 77, "argmax");
  list.add(loss, 1, "counters");
  list.add(workspace, 4097, "workspace", false);
  CHECK(list.total_bytes() == 1000 * 4 + 1000 * 4 + 77 * 4 + 8 + 4097);
  REQUIRE(list.entries().size() == 5);
  CHECK(list.entries()[2].name == "argmax");
  CHECK(list.entries()[2].bytes == 77 * 4);
  CHECK(!list.entries()[4].zeroed);
  CHECK(params.get() == nullptr);  // declared, not allocated: allocate_all walks the list
}
