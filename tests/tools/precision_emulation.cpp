// Test tool (not installed, not a test): the measurements behind the tf32 / bf16 parity bounds of
// tests/parity/test_parity_cuda.py, made without a GPU. It runs the parity "accept" case's setup —
// the tutorial net on the first STEPS × 64 Fashion-MNIST training images in order, SGD with lr
// 0.01 and momentum 0.5, from a uniform fan-in init (initial_parameters) — in FP32 and with the
// CUDA engine's reduced-precision arithmetic emulated by the CPU ops, and prints per mode the
// parity measures against FP32: eval logits of the first 64 test images (max difference over max
// |reference|), and over the parameter tensors the worst weights after the steps and updates
// w − w0, element-wise (max difference over max |reference|) and in relative L2 norm.
//   gputrain_precision_emulation [STEPS [SEED [FASHION_DIR]]]
// (defaults 16, 1 and $GPUTRAIN_FASHION_DIR or /usr/share/datasets/fashion-mnist).
//
// Emulated arithmetic (src/backend/cuda/precision.hpp, cuda_layers.hpp): tf32 rounds every conv
// and GEMM operand to 10 mantissa bits (to nearest, ties to even); bf16 rounds them to BF16
// (cpu::round_to_bf16) and also a convolution's results (y, dw, dx), which cuDNN writes as BF16.
// Bias gradients come from the FP32 output gradient; bias and ReLU run in FP32. Sums are FP32 in
// the CPU ops' order (not the GPU's: this models the roundings, not the summation order).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "gputrain/config.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/model.hpp"
#include "gputrain/ops.hpp"

namespace {

using namespace gputrain;
using Floats = std::vector<float>;
using Round = float (*)(float);

float exact(float v) {
  return v;
}
float to_bf16(float v) {
  return cpu::bf16_to_float(cpu::round_to_bf16(v));
}
float to_tf32(float v) {  // 10 mantissa bits, to nearest, ties to even; Inf and NaN kept
  uint32_t b;
  std::memcpy(&b, &v, 4);
  if ((b & 0x7fffffffu) >= 0x7f800000u) return v;
  b = (b + 0xfffu + ((b >> 13) & 1u)) & ~0x1fffu;
  std::memcpy(&v, &b, 4);
  return v;
}

struct Arithmetic {
  const char* name;
  Round conv_in, conv_out, gemm_in;
};
const Arithmetic kFp32{"fp32", exact, exact, exact};
const Arithmetic kModes[] = {{"tf32", to_tf32, exact, to_tf32},
                             {"bf16", to_bf16, to_bf16, to_bf16}};

Floats rounded(const float* v, size_t n, Round r) {
  Floats out(n);
  for (size_t i = 0; i < n; ++i) out[i] = r(v[i]);
  return out;
}
void round_in_place(float* v, size_t n, Round r) {
  for (size_t i = 0; i < n; ++i) v[i] = r(v[i]);
}

constexpr int kBatch = 64, kHW = 28, kC1 = 16, kC2 = 32, kHidden = 256, kClasses = 10;
constexpr int kFlat = kC2 * kHW * kHW;

struct Tutorial {
  ModelPlan plan;
  size_t w[4], b[4];  // offsets of conv1, conv2, fc1, fc2
  ConvGeometry g1{kBatch, 1, kHW, kHW, kC1, 3, 1, 1}, g2{kBatch, kC1, kHW, kHW, kC2, 3, 1, 1};
  Floats workspace;

  Tutorial() {
    ModelConfig m;
    m.input_channels = 1;
    m.input_height = m.input_width = kHW;
    auto layer = [](LayerKind kind, const std::string& name, int out) {
      LayerConfig l;
      l.kind = kind;
      l.name = name;
      l.out_channels = l.out_features = out;
      l.kernel = 3;
      l.padding = 1;
      return l;
    };
    const LayerConfig relu = layer(LayerKind::Relu, "", 0), flat = layer(LayerKind::Flatten, "", 0);
    m.layers = {layer(LayerKind::Conv2d, "conv1", kC1),
                relu,
                layer(LayerKind::Conv2d, "conv2", kC2),
                relu,
                flat,
                layer(LayerKind::Linear, "fc1", kHidden),
                relu,
                layer(LayerKind::Linear, "fc2", kClasses)};
    plan = plan_model(m, "precision emulation");
    const int at[4] = {0, 2, 5, 7};
    for (int i = 0; i < 4; ++i) {
      w[i] = plan.weight(plan.layers[size_t(at[i])]).offset;
      b[i] = plan.bias(plan.layers[size_t(at[i])]).offset;
    }
    workspace.resize(
        size_t(std::max(cpu::conv_workspace_floats(g1, 2), cpu::conv_workspace_floats(g2, 2))));
  }

  // y = ReLU(round_out(conv(round_in(x), round_in(w))) + b).
  void conv(const Arithmetic& a, const ConvGeometry& g, const float* x, const float* w,
            const float* b, float* y) {
    const size_t plane = size_t(g.col_cols()), ys = size_t(g.batch) * g.out_channels * plane;
    const Floats xr =
        rounded(x, size_t(g.batch) * g.in_channels * g.in_height * g.in_width, a.conv_in);
    const Floats wr = rounded(w, size_t(g.out_channels) * size_t(g.col_rows()), a.conv_in);
    const Floats zero(size_t(g.out_channels), 0.0f);
    cpu::conv2d_forward(g, xr.data(), wr.data(), zero.data(), y, workspace.data(), 2);
    for (size_t i = 0; i < ys; ++i) {
      const float v = a.conv_out(y[i]) + b[(i / plane) % size_t(g.out_channels)];
      y[i] = v > 0.0f ? v : 0.0f;
    }
  }
  void linear(const Arithmetic& a, int in, int out, const float* x, const float* w, const float* b,
              float* y, bool relu) {
    const Floats xr = rounded(x, size_t(kBatch) * in, a.gemm_in);
    const Floats wr = rounded(w, size_t(out) * in, a.gemm_in);
    cpu::linear_forward(kBatch, in, out, xr.data(), wr.data(), b, y, relu);
  }

  struct Activations {
    Floats a1, a2, h, logits;
  };
  Activations forward(const Arithmetic& a, const Floats& p, const float* x) {
    Activations t{Floats(size_t(kBatch) * kC1 * kHW * kHW), Floats(size_t(kBatch) * kFlat),
                  Floats(size_t(kBatch) * kHidden), Floats(size_t(kBatch) * kClasses)};
    conv(a, g1, x, &p[w[0]], &p[b[0]], t.a1.data());
    conv(a, g2, t.a1.data(), &p[w[1]], &p[b[1]], t.a2.data());
    linear(a, kFlat, kHidden, t.a2.data(), &p[w[2]], &p[b[2]], t.h.data(), true);
    linear(a, kHidden, kClasses, t.h.data(), &p[w[3]], &p[b[3]], t.logits.data(), false);
    return t;
  }

  // db[o] = Σ dy over the batch and plane (from the FP32 dy, as the engine's bias-gradient kernel).
  static void bias_gradient(const Floats& dy, int channels, size_t plane, float* db) {
    for (int o = 0; o < channels; ++o) {
      double s = 0;
      for (int n = 0; n < kBatch; ++n)
        for (size_t q = 0; q < plane; ++q) s += dy[(size_t(n) * channels + size_t(o)) * plane + q];
      db[o] = float(s);
    }
  }

  // One step's gradients (written into g) on the batch x, labels y.
  void gradients(const Arithmetic& a, const Floats& p, const float* x, const int32_t* y,
                 Floats& g) {
    const Activations t = forward(a, p, x);
    Floats dlogits(t.logits.size()), dh(t.h.size()), da2(t.a2.size()), da1(t.a1.size());
    Floats unused(kHidden);
    int64_t correct = 0;
    cpu::softmax_cross_entropy(kBatch, kClasses, t.logits.data(), y, float(kBatch), dlogits.data(),
                               nullptr, &correct);
    // The GEMMs: every operand rounded, FP32 results.
    auto linear_back = [&](int in, int out, const Floats& x_, int layer, const Floats& dy,
                           Floats& dx) {
      const Floats xr = rounded(x_.data(), x_.size(), a.gemm_in);
      const Floats wr = rounded(&p[w[layer]], size_t(out) * in, a.gemm_in);
      const Floats dyr = rounded(dy.data(), dy.size(), a.gemm_in);
      cpu::linear_backward(kBatch, in, out, xr.data(), wr.data(), dyr.data(), dx.data(),
                           &g[w[layer]], unused.data());
      bias_gradient(dy, out, 1, &g[b[layer]]);
    };
    linear_back(kHidden, kClasses, t.h, 3, dlogits, dh);
    cpu::relu_backward(int64_t(dh.size()), t.h.data(), dh.data(), dh.data());
    linear_back(kFlat, kHidden, t.a2, 2, dh, da2);
    cpu::relu_backward(int64_t(da2.size()), t.a2.data(), da2.data(), da2.data());
    // The convolutions: operands rounded, dw and dx rounded as cuDNN writes them.
    auto conv_back = [&](const ConvGeometry& geo, const float* x_, int layer, const Floats& dy,
                         float* dx) {
      bias_gradient(dy, geo.out_channels, size_t(geo.col_cols()), &g[b[layer]]);
      const size_t xs = size_t(geo.batch) * geo.in_channels * geo.in_height * geo.in_width;
      const size_t ws = size_t(geo.out_channels) * size_t(geo.col_rows());
      const Floats xr = rounded(x_, xs, a.conv_in), wr = rounded(&p[w[layer]], ws, a.conv_in);
      const Floats dyr = rounded(dy.data(), dy.size(), a.conv_in);
      cpu::conv2d_backward(geo, xr.data(), wr.data(), dyr.data(), dx, &g[w[layer]], unused.data(),
                           workspace.data(), 2);
      round_in_place(&g[w[layer]], ws, a.conv_out);
      if (dx) round_in_place(dx, xs, a.conv_out);
    };
    conv_back(g2, t.a1.data(), 1, da2, da1.data());
    cpu::relu_backward(int64_t(da1.size()), t.a1.data(), da1.data(), da1.data());
    conv_back(g1, x, 0, da1, nullptr);
  }
};

struct Difference {
  double max_rel = 0, l2_rel = 0;
  std::string max_where, l2_where;
};

// Worst tensor of got against ref: max|d| / max|ref| and ‖d‖ / ‖ref‖ with d = got − ref, where
// both are taken relative to `base` (updates: base = init; weights: base = 0).
Difference compare(const ModelPlan& plan, const Floats& got, const Floats& ref,
                   const Floats* base) {
  Difference d;
  for (const ParameterInfo& p : plan.parameters) {
    double dmax = 0, rmax = 0, d2 = 0, r2 = 0;
    for (size_t i = p.offset; i < p.offset + p.count; ++i) {
      const double r = double(ref[i]) - (base ? double((*base)[i]) : 0.0);
      const double diff = double(got[i]) - double(ref[i]);
      dmax = std::max(dmax, std::abs(diff));
      rmax = std::max(rmax, std::abs(r));
      d2 += diff * diff;
      r2 += r * r;
    }
    if (dmax / rmax > d.max_rel) d.max_rel = dmax / rmax, d.max_where = p.name;
    if (std::sqrt(d2 / r2) > d.l2_rel) d.l2_rel = std::sqrt(d2 / r2), d.l2_where = p.name;
  }
  return d;
}

// `steps` SGD steps (lr 0.01, momentum 0.5) from init on consecutive batches of x, labels.
Floats train_steps(Tutorial& net, const Arithmetic& a, const Floats& init, const Floats& x,
                   const std::vector<int32_t>& labels, int steps) {
  Floats p(init), momentum, g;
  momentum.assign(init.size(), 0.0f);
  g.assign(init.size(), 0.0f);
  cpu::SgdParams sgd;
  sgd.lr = 0.01f;
  sgd.momentum = 0.5f;
  for (int s = 0; s < steps; ++s) {
    net.gradients(a, p, &x[size_t(s) * kBatch * kHW * kHW], &labels[size_t(s) * kBatch], g);
    cpu::sgd_update(int64_t(p.size()), p.data(), g.data(), momentum.data(), sgd);
  }
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int steps = argc > 1 ? std::atoi(argv[1]) : 16;
    const uint64_t seed = argc > 2 ? uint64_t(std::atoll(argv[2])) : 1;
    const char* env_dir = std::getenv("GPUTRAIN_FASHION_DIR");
    const std::string dir = argc > 3  ? argv[3]
                            : env_dir ? env_dir
                                      : "/usr/share/datasets/fashion-mnist";
    if (steps < 1) {
      std::fprintf(stderr, "usage: %s [STEPS >= 1 [SEED [FASHION_DIR]]]\n", argv[0]);
      return 2;
    }
    const Dataset data = load_idx_dataset(dir, int64_t(steps) * kBatch, kBatch, kClasses);
    auto normalize = [](const ImageSet& s) {
      std::vector<int32_t> index(size_t(s.count));
      for (size_t i = 0; i < index.size(); ++i) index[i] = int32_t(i);
      const float mean = 0.2860f, std = 0.3530f;  // the parity suite's Fashion-MNIST values
      Floats x(size_t(s.count) * kHW * kHW);
      cpu::gather_normalize(s.count, 1, kHW * kHW, s.pixels.data(), index.data(), &mean, &std,
                            x.data());
      return x;
    };
    const Floats train = normalize(data.train), test = normalize(data.test);
    Tutorial net;
    const Floats init = initial_parameters(net.plan, seed);

    auto run = [&](const Arithmetic& a) {
      return train_steps(net, a, init, train, data.train.labels, steps);
    };
    const Floats ref_logits = net.forward(kFp32, init, test.data()).logits;
    const Floats ref = run(kFp32);
    std::printf(
        "tutorial net, Fashion-MNIST, %d steps of %d, lr 0.01, momentum 0.5, init seed %llu\n",
        steps, kBatch, static_cast<unsigned long long>(seed));
    for (const Arithmetic& a : kModes) {
      const Floats logits = net.forward(a, init, test.data()).logits;
      double dmax = 0, rmax = 0;
      for (size_t i = 0; i < logits.size(); ++i) {
        dmax = std::max(dmax, std::abs(double(logits[i]) - ref_logits[i]));
        rmax = std::max(rmax, std::abs(double(ref_logits[i])));
      }
      const Floats p = run(a);
      const Difference w = compare(net.plan, p, ref, nullptr), u = compare(net.plan, p, ref, &init);
      std::printf(
          "%s: forward %.2e | weights: element-wise %.2e (%s), L2 %.2e (%s) | updates: "
          "element-wise %.2e (%s), L2 %.2e (%s)\n",
          a.name, dmax / rmax, w.max_rel, w.max_where.c_str(), w.l2_rel, w.l2_where.c_str(),
          u.max_rel, u.max_where.c_str(), u.l2_rel, u.l2_where.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gputrain_precision_emulation: %s\n", e.what());
    return 1;
  }
}
