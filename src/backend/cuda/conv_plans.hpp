// cuDNN convolution plans per batch size: descriptors, the algorithm of each pass (forward,
// weight gradient, input gradient) and the workspace they need.
//
// Choice: cuDNN's heuristics rank the algorithms (no timing runs: plans are made quickly, also for
// the odd batch sizes of an epoch's last batch and an evaluation's last chunk); we take the first
// that keeps the precision's numerics (precision.cpp), is deterministic when asked for, is
// supported for our descriptors and fits the workspace. Verification: each chosen algorithm then
// runs once on the engine's real buffers; one cuDNN refuses there is replaced by the next
// acceptable one. When none works, the error lists everything cuDNN offered (algorithm, status,
// math type, determinism, workspace) and why each was passed over. The choices are kept as one
// human-readable line per conv layer and batch size (CudaEngine::algorithm_report).
//
// The three passes have differently typed cuDNN calls; one generic path (PassOps: rank, workspace
// query, run) serves all three.
#pragma once

#include <cudnn.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_layers.hpp"
#include "backend/cuda/cuda_resources.hpp"
#include "backend/cuda/precision.hpp"

namespace gputrain::cuda {

enum class ConvPass { Forward = 0, WeightGrad = 1, InputGrad = 2 };

// One algorithm as cuDNN's heuristics offered it, with our workspace query for it.
struct AlgoOffer {
  int algo = 0;  // the pass's cudnnConvolution*Algo_t
  cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  cudnnDeterminism_t determinism = CUDNN_NON_DETERMINISTIC;
  cudnnStatus_t workspace_status = CUDNN_STATUS_NOT_SUPPORTED;
  size_t workspace = 0;
  std::string passed_over;  // why it was not chosen; "" while acceptable
};

struct PassChoice {
  bool needed = false;
  std::vector<AlgoOffer> offers;  // cuDNN's ranking, best first
  int chosen = -1;                // index into offers
  int algo() const { return offers[size_t(chosen)].algo; }
  size_t workspace() const { return offers[size_t(chosen)].workspace; }
};

// Descriptors and algorithms of one conv layer for one batch size n.
struct ConvShape {
  TensorDesc x, y;  // [n, C, H, W], [n, O, Ho, Wo]
  PassChoice pass[3];
  bool has_bwd_data = false;  // false for a conv on slot 0: the input needs no gradient
  cudnnConvolutionFwdAlgo_t fwd_algo() const {
    return cudnnConvolutionFwdAlgo_t(pass[int(ConvPass::Forward)].algo());
  }
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo() const {
    return cudnnConvolutionBwdFilterAlgo_t(pass[int(ConvPass::WeightGrad)].algo());
  }
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo() const {
    return cudnnConvolutionBwdDataAlgo_t(pass[int(ConvPass::InputGrad)].algo());
  }
};

// Everything that depends on the batch size n: the conv shapes and the workspace they and the
// kernels need. Made for the planned batch when the engine is built, and for each smaller n that
// occurs (the last batch of an epoch, the last eval chunk) when it first occurs.
struct BatchPlan {
  int n = 0;
  std::vector<ConvShape> conv;  // indexed like layers; default (empty) for non-conv layers
  size_t workspace_bytes = 0;
  std::vector<std::string> report;  // one line per conv layer, filled by verify_convolutions
};

struct ConvPlanOptions {
  Precision precision = Precision::Fp32;
  bool deterministic = false;
  // Prefer algorithms whose workspace is at most soft_limit; never take one above hard_limit.
  size_t soft_limit = 0, hard_limit = 0;
};

// One pass of one conv layer behind one interface (the typed cuDNN calls of the three passes are in
// conv_plans.cpp only): its name, its algorithm names, cuDNN's ranked offers, the workspace query
// for our descriptors and, for verification, one run on the real buffers.
struct PassOps {
  const char* what = "";  // "forward", "weight-gradient", "input-gradient"
  const char* (*algo_name)(int) = nullptr;
  std::function<std::vector<AlgoOffer>()> rank;
  std::function<cudnnStatus_t(int algo, size_t* bytes)> workspace;
  std::function<cudnnStatus_t(int algo, void* workspace, size_t bytes)> run;
};

// The generic choice: cuDNN's ranking, our workspace query for each offer, then the first one that
// is available, keeps the precision's math, is deterministic when asked for and is supported for
// the shapes, within soft_limit, or failing that within hard_limit. Each offer passed over says
// why. Throws RuntimeFailure "cuDNN offers no usable <pass> algorithm for <what>; cuDNN offered:
// <algo [status, math, determinism, workspace: why]>; ..." when none qualifies.
void choose_algorithm(PassChoice& pc, const PassOps& ops, const ConvPlanOptions& options,
                      const std::string& what);
// Runs the chosen offer once (ops.run); when cuDNN refuses, the next acceptable offer that fits
// workspace_bytes, and so on. Throws as choose_algorithm when none runs.
void verify_algorithm(PassChoice& pc, const PassOps& ops, void* workspace, size_t workspace_bytes,
                      const std::string& what);

// Descriptors and the heuristics' choice for every conv layer at batch n (no device work).
// Throws RuntimeFailure listing cuDNN's offers when a pass has no acceptable algorithm.
BatchPlan plan_convolutions(cudnnHandle_t cudnn, const CudaLayers& layers, int n,
                            const ConvPlanOptions& options);

// Runs every chosen algorithm once on the real buffers of `c` (the operands the passes themselves
// use, CudaLayers::conv_operands: activation slots of `layers` and the flat parameter and gradient
// buffers, or in bf16 the BF16 conv scratch; c.workspace of c.workspace_bytes >=
// bp.workspace_bytes), replacing one that fails by the next acceptable offer that fits; then waits
// for the stream. Writes only scratch: activation slots, their gradients and the parameter
// gradients (which every forward_backward rewrites whole), or the BF16 conv scratch. Fills
// bp.report. Throws RuntimeFailure listing the offers.
void verify_convolutions(BatchPlan& bp, const CudaLayers& layers, const PassContext& c,
                         bool deterministic);

}  // namespace gputrain::cuda
