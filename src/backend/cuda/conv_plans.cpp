// See conv_plans.hpp.
#include "backend/cuda/conv_plans.hpp"

#include <algorithm>
#include <functional>
#include <iterator>
#include <utility>

#include "backend/cuda/cuda_check.hpp"
#include "gputrain/errors.hpp"

namespace gputrain::cuda {
namespace {

std::string shape_string(const ActivationShape& s) {
  return std::to_string(s.channels) + "x" + std::to_string(s.height) + "x" +
         std::to_string(s.width);
}

std::string bytes_text(size_t bytes) {
  if (bytes < (size_t(1) << 20)) return std::to_string((bytes + 1023) / 1024) + " KiB";
  return std::to_string((bytes + (size_t(1) << 20) - 1) >> 20) + " MiB";
}

const char* fwd_algo_name(int a) {
  static const char* const names[] = {
      "IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING",
      "WINOGRAD",      "WINOGRAD_NONFUSED"};
  return a >= 0 && a < int(std::size(names)) ? names[a] : "UNKNOWN";
}
const char* bwd_filter_algo_name(int a) {
  static const char* const names[] = {
      "ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  return a >= 0 && a < int(std::size(names)) ? names[a] : "UNKNOWN";
}
const char* bwd_data_algo_name(int a) {
  static const char* const names[] = {"ALGO_0",     "ALGO_1",   "FFT",
                                      "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < int(std::size(names)) ? names[a] : "UNKNOWN";
}

// cuDNN's ranked results of a *_v7 heuristics query as generic offers.
template <typename Perf, typename MaxCount, typename Query>
std::vector<AlgoOffer> rank_with(MaxCount max_count, Query query) {
  int max = 0, returned = 0;
  GT_CHECK(max_count(&max));
  std::vector<Perf> perf(size_t(std::max(max, 1)));
  GT_CHECK(query(max, &returned, perf.data()));
  std::vector<AlgoOffer> offers;
  for (int i = 0; i < returned; ++i) {
    AlgoOffer o;
    o.algo = int(perf[size_t(i)].algo);
    o.status = perf[size_t(i)].status;
    o.math = perf[size_t(i)].mathType;
    o.determinism = perf[size_t(i)].determinism;
    offers.push_back(o);
  }
  return offers;
}

// The pass's calls for layer l at shape s; `c` (may be null) gives the buffers for run().
PassOps pass_ops(cudnnHandle_t h, const CudaLayers& layers, const Layer& l, const ConvShape& s,
                 ConvPass pass, const PassContext* c) {
  static const float one = 1.0f, zero = 0.0f;
  PassOps ops;
  // The buffers only where a run is asked for: at plan time (c == nullptr) none may exist yet.
  // They are the real passes' own (CudaLayers::conv_operands): in bf16 the BF16 scratch, which is
  // what the BF16 descriptors describe.
  const ConvOperands op = c ? layers.conv_operands(*c, l) : ConvOperands{};
  switch (pass) {
    case ConvPass::Forward:
      ops.what = "forward";
      ops.algo_name = fwd_algo_name;
      ops.rank = [&, h] {
        return rank_with<cudnnConvolutionFwdAlgoPerf_t>(
            [&](int* m) { return cudnnGetConvolutionForwardAlgorithmMaxCount(h, m); },
            [&](int m, int* r, cudnnConvolutionFwdAlgoPerf_t* p) {
              return cudnnGetConvolutionForwardAlgorithm_v7(h, s.x, l.filter, l.conv, s.y, m, r, p);
            });
      };
      ops.workspace = [&, h](int a, size_t* b) {
        return cudnnGetConvolutionForwardWorkspaceSize(h, s.x, l.filter, l.conv, s.y,
                                                       cudnnConvolutionFwdAlgo_t(a), b);
      };
      if (c)
        ops.run = [&, h, op](int a, void* ws, size_t bytes) {
          return cudnnConvolutionForward(h, &one, s.x, op.x, l.filter, op.w, l.conv,
                                         cudnnConvolutionFwdAlgo_t(a), ws, bytes, &zero, s.y, op.y);
        };
      break;
    case ConvPass::WeightGrad:
      ops.what = "weight-gradient";
      ops.algo_name = bwd_filter_algo_name;
      ops.rank = [&, h] {
        return rank_with<cudnnConvolutionBwdFilterAlgoPerf_t>(
            [&](int* m) { return cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, m); },
            [&](int m, int* r, cudnnConvolutionBwdFilterAlgoPerf_t* p) {
              return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, s.x, s.y, l.conv, l.filter, m,
                                                                   r, p);
            });
      };
      ops.workspace = [&, h](int a, size_t* b) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h, s.x, s.y, l.conv, l.filter, cudnnConvolutionBwdFilterAlgo_t(a), b);
      };
      if (c)
        ops.run = [&, h, op](int a, void* ws, size_t bytes) {
          return cudnnConvolutionBackwardFilter(h, &one, s.x, op.x, s.y, op.dy, l.conv,
                                                cudnnConvolutionBwdFilterAlgo_t(a), ws, bytes,
                                                &zero, l.filter, op.dw);
        };
      break;
    case ConvPass::InputGrad:
      ops.what = "input-gradient";
      ops.algo_name = bwd_data_algo_name;
      ops.rank = [&, h] {
        return rank_with<cudnnConvolutionBwdDataAlgoPerf_t>(
            [&](int* m) { return cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, m); },
            [&](int m, int* r, cudnnConvolutionBwdDataAlgoPerf_t* p) {
              return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, l.filter, s.y, l.conv, s.x, m,
                                                                 r, p);
            });
      };
      ops.workspace = [&, h](int a, size_t* b) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(h, l.filter, s.y, l.conv, s.x,
                                                            cudnnConvolutionBwdDataAlgo_t(a), b);
      };
      if (c)
        ops.run = [&, h, op](int a, void* ws, size_t bytes) {
          return cudnnConvolutionBackwardData(h, &one, l.filter, op.w, s.y, op.dy, l.conv,
                                              cudnnConvolutionBwdDataAlgo_t(a), ws, bytes, &zero,
                                              s.x, op.dx);
        };
      break;
  }
  return ops;
}

std::string subject(const Layer& l, int n, bool deterministic) {
  return l.name + " (" + shape_string(l.in) + " -> " + shape_string(l.out) + ", batch " +
         std::to_string(n) + (deterministic ? ", deterministic" : "") + ")";
}

std::string describe_offer(const AlgoOffer& a, const PassOps& ops) {
  std::string s = std::string(ops.algo_name(a.algo)) + " [" + cudnnGetErrorString(a.status) +
                  ", math " + math_type_name(a.math) + ", " +
                  (a.determinism == CUDNN_DETERMINISTIC ? "deterministic" : "non-deterministic");
  if (a.workspace_status == CUDNN_STATUS_SUCCESS)
    s += ", workspace " + bytes_text(a.workspace);
  else
    s += std::string(", workspace query ") + cudnnGetErrorString(a.workspace_status);
  if (!a.passed_over.empty()) s += ": " + a.passed_over;
  return s + "]";
}

[[noreturn]] void throw_no_algorithm(const PassChoice& pc, const PassOps& ops,
                                     const std::string& what) {
  std::string offered;
  for (const AlgoOffer& a : pc.offers)
    offered += (offered.empty() ? "" : "; ") + describe_offer(a, ops);
  throw RuntimeFailure("cuDNN offers no usable " + std::string(ops.what) + " algorithm for " +
                       what + "; cuDNN offered: " + (offered.empty() ? "nothing" : offered));
}

std::string report_line(const BatchPlan& bp, const Layer& l, const ConvShape& s,
                        const CudaLayers& layers, cudnnHandle_t h, bool deterministic) {
  std::string line = subject(l, bp.n, deterministic) + ":";
  for (ConvPass pass : {ConvPass::Forward, ConvPass::WeightGrad, ConvPass::InputGrad}) {
    const PassChoice& pc = s.pass[int(pass)];
    const PassOps ops = pass_ops(h, layers, l, s, pass, nullptr);
    line += std::string(pass == ConvPass::Forward ? " " : "; ") + ops.what + " ";
    if (!pc.needed) {
      line += "none (its input is data)";
      continue;
    }
    const AlgoOffer& a = pc.offers[size_t(pc.chosen)];
    line += std::string(ops.algo_name(a.algo)) + " (math " + math_type_name(a.math) + ", " +
            (a.determinism == CUDNN_DETERMINISTIC ? "deterministic" : "non-deterministic") +
            ", workspace " + bytes_text(a.workspace) + ", rank " + std::to_string(pc.chosen + 1) +
            " of " + std::to_string(pc.offers.size()) + ")";
  }
  return line;
}

}  // namespace

void choose_algorithm(PassChoice& pc, const PassOps& ops, const ConvPlanOptions& o,
                      const std::string& what) {
  pc.needed = true;
  pc.offers = ops.rank();
  for (AlgoOffer& a : pc.offers) {
    a.workspace_status = ops.workspace(a.algo, &a.workspace);
    if (a.status != CUDNN_STATUS_SUCCESS)
      a.passed_over = "not available";
    else if (!accepts_conv_math(o.precision, a.math))
      a.passed_over = "math type not allowed in " + precision_name(o.precision);
    else if (o.deterministic && a.determinism != CUDNN_DETERMINISTIC)
      a.passed_over = "not deterministic";
    else if (a.workspace_status != CUDNN_STATUS_SUCCESS)
      a.passed_over = "not supported for these shapes";
  }
  for (size_t limit : {o.soft_limit, o.hard_limit})
    for (size_t i = 0; i < pc.offers.size(); ++i)
      if (pc.offers[i].passed_over.empty() && pc.offers[i].workspace <= limit) {
        pc.chosen = int(i);
        return;
      }
  for (AlgoOffer& a : pc.offers)
    if (a.passed_over.empty())
      a.passed_over = "workspace above the " + bytes_text(o.hard_limit) + " cap";
  throw_no_algorithm(pc, ops, what);
}

void verify_algorithm(PassChoice& pc, const PassOps& ops, void* workspace, size_t workspace_bytes,
                      const std::string& what) {
  for (size_t i = size_t(pc.chosen); i < pc.offers.size(); ++i) {
    AlgoOffer& a = pc.offers[i];
    if (!a.passed_over.empty() || a.workspace > workspace_bytes) continue;
    const cudnnStatus_t st = ops.run(a.algo, workspace, workspace_bytes);
    if (st == CUDNN_STATUS_SUCCESS) {
      pc.chosen = int(i);
      return;
    }
    a.passed_over = std::string("trial run failed: ") + cudnnGetErrorString(st);
  }
  throw_no_algorithm(pc, ops, what);
}

BatchPlan plan_convolutions(cudnnHandle_t h, const CudaLayers& layers, int n,
                            const ConvPlanOptions& o) {
  BatchPlan bp;
  bp.n = n;
  bp.conv.resize(layers.layers().size());
  size_t ws = layers.kernel_workspace_bytes(n);
  for (size_t i = 0; i < layers.layers().size(); ++i) {
    const Layer& l = layers.layers()[i];
    if (l.kind != LayerKind::Conv2d) continue;
    ConvShape& s = bp.conv[i];
    s.x = activation_desc(o.precision, n, l.in.channels, l.in.height, l.in.width);
    s.y = activation_desc(o.precision, n, l.out.channels, l.out.height, l.out.width);
    int dn = 0, dc = 0, dh = 0, dw = 0;
    GT_CHECK(cudnnGetConvolution2dForwardOutputDim(l.conv, s.x, l.filter, &dn, &dc, &dh, &dw));
    if (dn != n || dc != l.out.channels || dh != l.out.height || dw != l.out.width)
      throw RuntimeFailure("cuDNN's output shape for " + l.name + " (" + std::to_string(dc) + "x" +
                           std::to_string(dh) + "x" + std::to_string(dw) +
                           ") differs from the planned " + shape_string(l.out));
    s.has_bwd_data = l.in_slot != 0;  // the first parameter layer's input is data: no gradient
    const std::string what = subject(l, n, o.deterministic);
    for (ConvPass pass : {ConvPass::Forward, ConvPass::WeightGrad, ConvPass::InputGrad}) {
      if (pass == ConvPass::InputGrad && !s.has_bwd_data) continue;
      PassChoice& pc = s.pass[int(pass)];
      choose_algorithm(pc, pass_ops(h, layers, l, s, pass, nullptr), o, what);
      ws = std::max(ws, pc.workspace());
    }
  }
  bp.workspace_bytes = ws;
  return bp;
}

void verify_convolutions(BatchPlan& bp, const CudaLayers& layers, const PassContext& c,
                         bool deterministic) {
  bp.report.clear();
  for (size_t i = 0; i < layers.layers().size(); ++i) {
    const Layer& l = layers.layers()[i];
    if (l.kind != LayerKind::Conv2d) continue;
    ConvShape& s = bp.conv[i];
    const std::string what = subject(l, bp.n, deterministic);
    for (ConvPass pass : {ConvPass::Forward, ConvPass::WeightGrad, ConvPass::InputGrad}) {
      PassChoice& pc = s.pass[int(pass)];
      if (pc.needed)
        verify_algorithm(pc, pass_ops(c.cudnn, layers, l, s, pass, &c), c.workspace,
                         c.workspace_bytes, what);
    }
    bp.report.push_back(report_line(bp, l, s, layers, c.cudnn, deterministic));
  }
  // An asynchronous failure of a trial run shows here, at plan time, not in the first step.
  GT_CHECK(cudaStreamSynchronize(c.stream));
}

}  // namespace gputrain::cuda
