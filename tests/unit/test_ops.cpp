// CPU ops: forward against direct definitions, backward against central finite differences,
// SGD against torch.optim.SGD's formulas.
#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>

#include "gputrain/ops.hpp"
#include "gputrain/rng.hpp"
#include "support/gradient_check.hpp"

using namespace gputrain;
using gputrain::testing::check_gradient;
using gputrain::testing::random_vector;

namespace {

ConvGeometry geometry(int n, int c, int h, int w, int o, int k, int s, int p) {
  ConvGeometry g;
  g.batch = n;
  g.in_channels = c;
  g.in_height = h;
  g.in_width = w;
  g.out_channels = o;
  g.kernel = k;
  g.stride = s;
  g.padding = p;
  return g;
}

double weighted_sum(const std::vector<float>& y, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * r[i];
  return s;
}

}  // namespace

TEST_CASE("conv2d forward equals the direct convolution", "[ops][conv]") {
  // tutorial shapes, strided, wide kernels, pointwise, padding larger than needed, batch 1
  const ConvGeometry cases[] = {
      geometry(2, 1, 28, 28, 16, 3, 1, 1), geometry(3, 16, 9, 11, 8, 3, 1, 1),
      geometry(2, 3, 13, 10, 5, 5, 2, 2),  geometry(1, 4, 7, 7, 6, 1, 1, 0),
      geometry(2, 2, 8, 9, 3, 3, 3, 0),    geometry(1, 3, 5, 6, 4, 3, 1, 2),
      geometry(5, 2, 6, 6, 3, 2, 2, 1)};
  for (const auto& g : cases) {
    const size_t xs = size_t(g.batch) * g.in_channels * g.in_height * g.in_width;
    const size_t ys = size_t(g.batch) * g.out_channels * g.out_height() * g.out_width();
    auto x = random_vector(xs, 1), w = random_vector(size_t(g.out_channels) * g.col_rows(), 2),
         b = random_vector(size_t(g.out_channels), 3);
    std::vector<float> want(ys), got1(ys, NAN), got2(ys, NAN);
    std::vector<float> ws(size_t(cpu::conv_workspace_floats(g, 2)));
    cpu::conv2d_forward_direct(g, x.data(), w.data(), b.data(), want.data());
    cpu::conv2d_forward(g, x.data(), w.data(), b.data(), got1.data(), ws.data(), 1);
    cpu::conv2d_forward(g, x.data(), w.data(), b.data(), got2.data(), ws.data(), 2);
    std::vector<float> fused(ys, NAN);
    cpu::conv2d_forward(g, x.data(), w.data(), b.data(), fused.data(), ws.data(), 2, /*relu=*/true);
    for (size_t i = 0; i < ys; ++i) {
      INFO("geometry k=" << g.kernel << " s=" << g.stride << " p=" << g.padding << " index " << i);
      REQUIRE(std::abs(got1[i] - want[i]) <= 1e-5f + 1e-5f * std::abs(want[i]));
      REQUIRE(got1[i] == got2[i]);  // per-sample work: thread count does not change results
      REQUIRE(fused[i] == std::max(got1[i], 0.0f));
    }
  }
}

TEST_CASE("conv2d backward matches finite differences", "[ops][conv][gradient]") {
  const ConvGeometry cases[] = {geometry(2, 3, 7, 6, 4, 3, 2, 1), geometry(3, 2, 5, 5, 3, 3, 1, 1),
                                geometry(2, 3, 4, 5, 2, 1, 1, 0)};
  for (const auto& g : cases) {
    const size_t xs = size_t(g.batch) * g.in_channels * g.in_height * g.in_width;
    const size_t ys = size_t(g.batch) * g.out_channels * g.out_height() * g.out_width();
    auto x = random_vector(xs, 4), w = random_vector(size_t(g.out_channels) * g.col_rows(), 5),
         b = random_vector(size_t(g.out_channels), 6), r = random_vector(ys, 7);
    std::vector<float> ws(size_t(cpu::conv_workspace_floats(g, 2))), y(ys);
    std::vector<float> dx(xs, NAN), dw(w.size(), NAN), db(b.size(), NAN);
    cpu::conv2d_backward(g, x.data(), w.data(), r.data(), dx.data(), dw.data(), db.data(),
                         ws.data(), 2);
    auto objective = [&] {
      cpu::conv2d_forward(g, x.data(), w.data(), b.data(), y.data(), ws.data(), 1);
      return weighted_sum(y, r);
    };
    // The objective is linear in each input, so a large eps is exact up to rounding.
    gputrain::testing::GradientCheckOptions opt;
    opt.eps = 0.25;
    check_gradient("conv dx", x, dx, objective, opt);
    check_gradient("conv dw", w, dw, objective, opt);
    check_gradient("conv db", b, db, objective, opt);
    // Same gradients with one thread (the dW reduction is per thread, then summed).
    std::vector<float> dx1(xs), dw1(w.size()), db1(b.size());
    cpu::conv2d_backward(g, x.data(), w.data(), r.data(), dx1.data(), dw1.data(), db1.data(),
                         ws.data(), 1);
    for (size_t i = 0; i < dw.size(); ++i) REQUIRE(std::abs(dw1[i] - dw[i]) <= 1e-5f);
    CHECK(dx1 == dx);
  }
}

TEST_CASE("linear forward and backward", "[ops][linear][gradient]") {
  const int N = 5, I = 13, O = 7;
  auto x = random_vector(N * I, 8), w = random_vector(O * I, 9), b = random_vector(O, 10),
       r = random_vector(N * O, 11);
  std::vector<float> y(N * O);
  cpu::linear_forward(N, I, O, x.data(), w.data(), b.data(), y.data());
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) {
      double want = b[o];
      for (int i = 0; i < I; ++i) want += double(x[n * I + i]) * w[o * I + i];
      REQUIRE(y[n * O + o] == Approx(want).margin(1e-5));
    }
  std::vector<float> fused(N * O);
  cpu::linear_forward(N, I, O, x.data(), w.data(), b.data(), fused.data(), /*relu=*/true);
  for (int i = 0; i < N * O; ++i) REQUIRE(fused[i] == std::max(y[i], 0.0f));
  std::vector<float> dx(x.size(), NAN), dw(w.size(), NAN), db(b.size(), NAN);
  cpu::linear_backward(N, I, O, x.data(), w.data(), r.data(), dx.data(), dw.data(), db.data());
  auto objective = [&] {
    cpu::linear_forward(N, I, O, x.data(), w.data(), b.data(), y.data());
    return weighted_sum(y, r);
  };
  gputrain::testing::GradientCheckOptions opt;
  opt.eps = 0.25;
  check_gradient("linear dx", x, dx, objective, opt);
  check_gradient("linear dw", w, dw, objective, opt);
  check_gradient("linear db", b, db, objective, opt);
}

TEST_CASE("linear ops split across threads match the direct sums", "[ops][linear]") {
  // Several 16-column blocks per thread and a ragged last block: every thread's share is computed.
  const int N = 9, I = 50, O = 37;
  auto x = random_vector(N * I, 21), w = random_vector(O * I, 22), b = random_vector(O, 23),
       dy = random_vector(N * O, 24);
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    CAPTURE(threads);
    omp_set_num_threads(threads);
    std::vector<float> y(N * O, NAN), dx(x.size(), NAN), dw(w.size(), NAN), db(b.size(), NAN);
    cpu::linear_forward(N, I, O, x.data(), w.data(), b.data(), y.data());
    cpu::linear_backward(N, I, O, x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data());
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < O; ++o) {
        double want = b[o];
        for (int i = 0; i < I; ++i) want += double(x[n * I + i]) * w[o * I + i];
        REQUIRE(y[n * O + o] == Approx(want).margin(1e-5));
      }
    for (int o = 0; o < O; ++o) {
      double want_db = 0;
      for (int n = 0; n < N; ++n) want_db += dy[n * O + o];
      REQUIRE(db[o] == Approx(want_db).margin(1e-5));
      for (int i = 0; i < I; ++i) {
        double want = 0;
        for (int n = 0; n < N; ++n) want += double(dy[n * O + o]) * x[n * I + i];
        REQUIRE(dw[o * I + i] == Approx(want).margin(1e-5));
      }
    }
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < I; ++i) {
        double want = 0;
        for (int o = 0; o < O; ++o) want += double(dy[n * O + o]) * w[o * I + i];
        REQUIRE(dx[n * I + i] == Approx(want).margin(1e-5));
      }
  }
  omp_set_num_threads(saved);
}

TEST_CASE("relu forward and backward", "[ops][relu][gradient]") {
  auto x = random_vector(257, 12), r = random_vector(257, 13);
  std::vector<float> y(x.size()), dx(x.size(), NAN);
  cpu::relu_forward(int64_t(x.size()), x.data(), y.data());
  for (size_t i = 0; i < x.size(); ++i) REQUIRE(y[i] == std::max(x[i], 0.0f));
  cpu::relu_backward(int64_t(x.size()), y.data(), r.data(), dx.data());
  gputrain::testing::GradientCheckOptions opt;
  opt.eps = 1e-3;
  check_gradient(
      "relu dx", x, dx,
      [&] {
        cpu::relu_forward(int64_t(x.size()), x.data(), y.data());
        return weighted_sum(y, r);
      },
      opt, [&](size_t i) { return std::abs(x[i]) < 2 * opt.eps; });
}

TEST_CASE("maxpool2d forward and backward", "[ops][maxpool][gradient]") {
  for (auto [k, s] : {std::pair{2, 2}, std::pair{3, 2}, std::pair{3, 1}}) {
    PoolGeometry g;
    g.batch = 2;
    g.channels = 3;
    g.in_height = 9;
    g.in_width = 8;
    g.kernel = k;
    g.stride = s;
    const int Ho = g.out_height(), Wo = g.out_width();
    const size_t xs = size_t(2 * 3 * 9 * 8), ys = size_t(2 * 3 * Ho * Wo);
    auto x = random_vector(xs, 14), r = random_vector(ys, 15);
    std::vector<float> y(ys), dx(xs, NAN);
    std::vector<int32_t> arg(ys);
    cpu::maxpool2d_forward(g, x.data(), y.data(), arg.data());
    for (int pl = 0; pl < 6; ++pl)
      for (int oh = 0; oh < Ho; ++oh)
        for (int ow = 0; ow < Wo; ++ow) {
          float m = -INFINITY;
          for (int i = 0; i < k; ++i)
            for (int j = 0; j < k; ++j)
              m = std::max(m, x[size_t(pl * 72 + (oh * s + i) * 8 + ow * s + j)]);
          const size_t o = size_t((pl * Ho + oh) * Wo + ow);
          REQUIRE(y[o] == m);
          REQUIRE(x[size_t(pl * 72 + arg[o])] == m);
        }
    cpu::maxpool2d_backward(g, r.data(), arg.data(), dx.data());
    gputrain::testing::GradientCheckOptions opt;
    opt.eps = 1e-3;
    // Skip elements whose value is within eps of another in the same plane (a near-tie could swap
    // the max under perturbation).
    auto near_tie = [&](size_t i) {
      const size_t base = i / 72 * 72;
      for (size_t j = base; j < base + 72; ++j)
        if (j != i && std::abs(x[j] - x[i]) < 3 * opt.eps) return true;
      return false;
    };
    check_gradient(
        "maxpool dx", x, dx,
        [&] {
          cpu::maxpool2d_forward(g, x.data(), y.data(), arg.data());
          return weighted_sum(y, r);
        },
        opt, near_tie);
  }
}

TEST_CASE("softmax cross-entropy: loss, accuracy, gradient, stability", "[ops][loss][gradient]") {
  const int N = 6, K = 7;
  auto z = random_vector(N * K, 16, -3, 3);
  std::vector<int32_t> labels = {0, 6, 3, 3, 1, 5};
  std::vector<float> d(z.size(), NAN);
  std::vector<int32_t> pred(N);
  int64_t correct = -1;
  const double loss = cpu::softmax_cross_entropy(N, K, z.data(), labels.data(), float(N), d.data(),
                                                 pred.data(), &correct);
  double want = 0;
  int64_t want_correct = 0;
  for (int n = 0; n < N; ++n) {
    double s = 0;
    for (int k = 0; k < K; ++k) s += std::exp(double(z[n * K + k]));
    want += std::log(s) - z[n * K + labels[n]];
    const int best =
        int(std::max_element(z.begin() + n * K, z.begin() + (n + 1) * K) - z.begin()) - n * K;
    CHECK(pred[n] == best);
    want_correct += best == labels[n];
  }
  CHECK(loss == Approx(want).epsilon(1e-6));
  CHECK(correct == want_correct);
  // d is the gradient of the MEAN loss (grad_scale = N).
  gputrain::testing::GradientCheckOptions opt;
  opt.eps = 1e-2;
  opt.rtol = 1e-3;
  opt.atol = 1e-5;
  check_gradient(
      "softmax dlogits", z, d,
      [&] {
        return cpu::softmax_cross_entropy(N, K, z.data(), labels.data(), 1, nullptr, nullptr,
                                          nullptr) /
               N;
      },
      opt);
  // Huge logits stay finite (log-sum-exp around the row max).
  std::vector<float> big = {1e4f, -1e4f, 5e3f};
  std::vector<int32_t> l1 = {2};
  std::vector<float> dbig(3);
  const double big_loss =
      cpu::softmax_cross_entropy(1, 3, big.data(), l1.data(), 1, dbig.data(), nullptr, nullptr);
  CHECK(big_loss == Approx(5e3));
  CHECK(dbig[0] == Approx(1.0f));
  CHECK(dbig[2] == Approx(-1.0f));
}

TEST_CASE("softmax cross-entropy with label smoothing: F.cross_entropy's loss and gradient",
          "[ops][loss][gradient]") {
  const int N = 5, K = 6;
  auto z = random_vector(N * K, 19, -3, 3);
  std::vector<int32_t> labels = {0, 5, 2, 2, 4};
  for (const float eps : {0.1f, 0.3f}) {
    INFO("label_smoothing " << eps);
    std::vector<float> d(z.size(), NAN);
    int64_t correct = -1, plain_correct = -1;
    const double loss = cpu::softmax_cross_entropy(N, K, z.data(), labels.data(), float(N),
                                                   d.data(), nullptr, &correct, eps);
    // torch: Σ_n [(1 − ε)·(−log p_label) + (ε/K)·Σ_k −log p_k], in double.
    double want = 0;
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += std::exp(double(z[n * K + k]));
      const double lse = std::log(s);
      double all = 0;
      for (int k = 0; k < K; ++k) all += lse - z[n * K + k];
      want += (1 - eps) * (lse - z[n * K + labels[n]]) + eps / K * all;
    }
    CHECK(loss == Approx(want).epsilon(1e-6));
    cpu::softmax_cross_entropy(N, K, z.data(), labels.data(), 1, nullptr, nullptr, &plain_correct);
    CHECK(correct == plain_correct);  // accuracy ignores the smoothing
    gputrain::testing::GradientCheckOptions opt;
    opt.eps = 1e-2;
    opt.rtol = 1e-3;
    opt.atol = 1e-5;
    check_gradient(
        "smoothed softmax dlogits", z, d,
        [&] {
          return cpu::softmax_cross_entropy(N, K, z.data(), labels.data(), 1, nullptr, nullptr,
                                            nullptr, eps) /
                 N;
        },
        opt);
  }
  // Smoothing 0 is the plain loss exactly.
  std::vector<float> d0(z.size()), d1(z.size());
  CHECK(cpu::softmax_cross_entropy(N, K, z.data(), labels.data(), 2, d0.data(), nullptr, nullptr,
                                   0.0f) ==
        cpu::softmax_cross_entropy(N, K, z.data(), labels.data(), 2, d1.data(), nullptr, nullptr));
  CHECK(d0 == d1);
}

TEST_CASE("clip_grad_norm follows torch.nn.utils.clip_grad_norm_", "[ops][clip]") {
  const int n = 53;
  const auto g0 = random_vector(n, 41, -1, 1);
  double sum_sq = 0;
  for (float x : g0) sum_sq += double(x) * x;
  const double norm = std::sqrt(sum_sq);
  // Clipping active: the result has norm max_norm (up to the 1e-6 of torch's coefficient).
  auto g = g0;
  const float max_norm = float(norm / 4);
  CHECK(cpu::clip_grad_norm(n, g.data(), max_norm) == Approx(norm).epsilon(1e-12));
  const float coef = max_norm / (float(norm) + 1e-6f);
  double clipped_sq = 0;
  for (int i = 0; i < n; ++i) {
    REQUIRE(g[i] == g0[i] * coef);
    clipped_sq += double(g[i]) * g[i];
  }
  CHECK(std::sqrt(clipped_sq) == Approx(max_norm).epsilon(1e-5));
  // Inactive (norm below max_norm): the coefficient clamps to 1 and nothing changes.
  g = g0;
  cpu::clip_grad_norm(n, g.data(), float(norm * 2));
  CHECK(g == g0);
  // All-zero gradients stay zero (no division by zero).
  std::vector<float> zeros(n, 0.0f);
  CHECK(cpu::clip_grad_norm(n, zeros.data(), 1.0f) == 0.0);
  CHECK(zeros == std::vector<float>(n, 0.0f));
}

TEST_CASE("sgd_update follows torch.optim.SGD", "[ops][sgd]") {
  struct Case {
    float momentum, wd;
    bool nesterov;
  };
  for (const Case c : {Case{0, 0, false}, Case{0, 0.1f, false}, Case{0.9f, 0, false},
                       Case{0.5f, 0.01f, false}, Case{0.9f, 0.01f, true}}) {
    const int n = 37;
    auto w = random_vector(n, 17);
    std::vector<float> v(n, 0.0f);
    std::vector<double> wr(w.begin(), w.end()), vr(n, 0.0);
    cpu::SgdParams p;
    p.lr = 0.1f;
    p.momentum = c.momentum;
    p.weight_decay = c.wd;
    p.nesterov = c.nesterov;
    for (int step = 0; step < 3; ++step) {
      auto g = random_vector(n, 18 + step);
      cpu::sgd_update(n, w.data(), g.data(), v.data(), p);
      // torch/optim/sgd.py (_single_tensor_sgd), dampening 0, in double:
      for (int i = 0; i < n; ++i) {
        double d = g[i] + c.wd * wr[i];
        if (c.momentum != 0) {
          vr[i] = step == 0 ? d : c.momentum * vr[i] + d;
          d = c.nesterov ? d + c.momentum * vr[i] : vr[i];
        }
        wr[i] -= 0.1 * d;
      }
      for (int i = 0; i < n; ++i) REQUIRE(w[i] == Approx(wr[i]).margin(1e-6));
    }
  }
}

TEST_CASE("adamw_update follows torch.optim.AdamW", "[ops][adamw]") {
  for (const float wd : {0.0f, 0.05f}) {
    const int n = 41;
    auto w = random_vector(n, 27);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    std::vector<double> wr(w.begin(), w.end()), mr(n, 0.0), vr(n, 0.0);
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (int step = 1; step <= 4; ++step) {
      auto g = random_vector(n, 30 + step);
      if (step == 3) g[5] = 0.0f;  // a zero gradient: the eps region
      cpu::AdamWParams p;
      p.lr = float(lr);
      p.weight_decay = wd;
      p.bias_correction1 = float(1 - std::pow(b1, step));
      p.bias_correction2_sqrt = float(std::sqrt(1 - std::pow(b2, step)));
      cpu::adamw_update(n, w.data(), g.data(), m.data(), v.data(), p);
      // torch/optim/adamw.py (_single_tensor_adamw), in double:
      for (int i = 0; i < n; ++i) {
        wr[i] *= 1 - lr * wd;
        mr[i] = b1 * mr[i] + (1 - b1) * g[i];
        vr[i] = b2 * vr[i] + (1 - b2) * double(g[i]) * g[i];
        const double denom = std::sqrt(vr[i]) / std::sqrt(1 - std::pow(b2, step)) + eps;
        wr[i] -= lr / (1 - std::pow(b1, step)) * mr[i] / denom;
      }
      for (int i = 0; i < n; ++i) {
        INFO("step " << step << ", wd " << wd << ", i " << i);
        REQUIRE(w[i] == Approx(wr[i]).margin(1e-6));
        REQUIRE(m[i] == Approx(mr[i]).margin(1e-7));
        REQUIRE(v[i] == Approx(vr[i]).margin(1e-8));
      }
    }
  }
}

TEST_CASE("gather_normalize picks and normalizes images in order", "[ops][data]") {
  const int C = 3, P = 5, count = 4;
  std::vector<uint8_t> pixels(10 * C * P);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i * 37 % 256);
  std::vector<int32_t> index = {7, 0, 9, 7};
  std::vector<float> mean = {0.1f, 0.5f, 0.9f}, stdv = {0.3f, 0.2f, 0.25f}, out(count * C * P, NAN);
  cpu::gather_normalize(count, C, P, pixels.data(), index.data(), mean.data(), stdv.data(),
                        out.data());
  for (int i = 0; i < count; ++i)
    for (int c = 0; c < C; ++c)
      for (int p = 0; p < P; ++p) {
        const float want =
            (float(pixels[size_t((index[i] * C + c) * P + p)]) / 255.0f - mean[c]) / stdv[c];
        REQUIRE(out[size_t((i * C + c) * P + p)] == want);  // bit for bit
      }
}

namespace {
float from_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}
}  // namespace

TEST_CASE("round_to_bf16 rounds to nearest, ties to even, and keeps Inf, NaN and subnormals",
          "[ops]") {
  using gputrain::cpu::bf16_to_float;
  using gputrain::cpu::round_to_bf16;
  // Exact values pass through.
  CHECK(round_to_bf16(1.0f) == 0x3f80);
  CHECK(round_to_bf16(-2.0f) == 0xc000);
  CHECK(round_to_bf16(0.0f) == 0x0000);
  CHECK(round_to_bf16(-0.0f) == 0x8000);
  // Below / above the halfway point of the dropped 16 bits.
  CHECK(round_to_bf16(from_bits(0x3f807fffu)) == 0x3f80);
  CHECK(round_to_bf16(from_bits(0x3f808001u)) == 0x3f81);
  // Exact ties: to the even neighbour, both ways.
  CHECK(round_to_bf16(from_bits(0x3f808000u)) == 0x3f80);  // 0x3f80 even: down
  CHECK(round_to_bf16(from_bits(0x3f818000u)) == 0x3f82);  // 0x3f81 odd: up
  CHECK(round_to_bf16(from_bits(0xbf818000u)) == 0xbf82);  // sign-symmetric
  // A carry out of the mantissa steps the exponent; the largest floats round to Inf.
  CHECK(round_to_bf16(from_bits(0x3fffffffu)) == 0x4000);
  CHECK(round_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(round_to_bf16(from_bits(0x7f7f7fffu)) == 0x7f7f);  // just below the halfway: largest bf16
  // Inf stays Inf.
  CHECK(round_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(round_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80);
  // NaN stays NaN (even one whose payload is only in the dropped bits), sign kept.
  for (uint32_t nan_bits : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    const uint16_t b = round_to_bf16(from_bits(nan_bits));
    CHECK(std::isnan(bf16_to_float(b)));
    CHECK((b & 0x8000) == ((nan_bits >> 16) & 0x8000));
  }
  // Subnormals round in the mantissa like normals: ties to even, the smallest halfway to zero.
  CHECK(round_to_bf16(from_bits(0x00018000u)) == 0x0002);
  CHECK(round_to_bf16(from_bits(0x00008000u)) == 0x0000);
  CHECK(round_to_bf16(from_bits(0x00008001u)) == 0x0001);
  CHECK(round_to_bf16(from_bits(0x007fffffu)) == 0x0080);  // largest subnormal → smallest normal
  // bf16 → float is exact and round-trips every non-NaN bf16.
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const float f = bf16_to_float(uint16_t(b));
    if (std::isnan(f)) continue;
    if (round_to_bf16(f) != b) FAIL("bf16 0x" << std::hex << b << " does not round-trip");
  }
  // The nearest: the result is within half a bf16 ulp of random values.
  gputrain::Rng rng(7);
  for (int i = 0; i < 10000; ++i) {
    const float x = rng.uniform(-1000.0f, 1000.0f);
    const float r = bf16_to_float(round_to_bf16(x));
    CHECK(std::fabs(double(r) - double(x)) <= std::ldexp(std::fabs(double(x)), -8) * 1.0000001);
  }
}

namespace {
// conv(x, w) in double (no bias), and Σ|x·w| per output: the exact value of a convolution of
// BF16 values (their products are exact, the double sums near enough) and its FP32 error scale.
void conv_double(const ConvGeometry& g, const float* x, const float* w, std::vector<double>& y,
                 std::vector<double>& sum_abs) {
  const int Ho = g.out_height(), Wo = g.out_width();
  y.assign(size_t(g.batch) * g.out_channels * Ho * Wo, 0.0);
  sum_abs.assign(y.size(), 0.0);
  size_t at = 0;
  for (int n = 0; n < g.batch; ++n)
    for (int o = 0; o < g.out_channels; ++o)
      for (int oh = 0; oh < Ho; ++oh)
        for (int ow = 0; ow < Wo; ++ow, ++at)
          for (int c = 0; c < g.in_channels; ++c)
            for (int kh = 0; kh < g.kernel; ++kh)
              for (int kw = 0; kw < g.kernel; ++kw) {
                const int ih = oh * g.stride - g.padding + kh, iw = ow * g.stride - g.padding + kw;
                if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) continue;
                const double t =
                    double(
                        x[((size_t(n) * g.in_channels + c) * g.in_height + ih) * g.in_width + iw]) *
                    double(w[((size_t(o) * g.in_channels + c) * g.kernel + kh) * g.kernel + kw]);
                y[at] += t;
                sum_abs[at] += std::abs(t);
              }
}

std::vector<float> bf16_values(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = cpu::bf16_to_float(cpu::round_to_bf16(v[i]));
  return out;
}
}  // namespace

TEST_CASE("the bf16 conv reference: BF16 operands, FP32 sums, a BF16 result, then bias and ReLU",
          "[ops][conv]") {
  const ConvGeometry cases[] = {geometry(2, 3, 9, 9, 10, 5, 2, 1),
                                geometry(3, 16, 9, 11, 8, 3, 1, 1),
                                geometry(1, 4, 7, 7, 6, 1, 1, 0), geometry(2, 2, 8, 9, 3, 3, 3, 0)};
  for (const ConvGeometry& g : cases) {
    INFO("C " << g.in_channels << ", O " << g.out_channels << ", k " << g.kernel << ", stride "
              << g.stride << ", padding " << g.padding);
    const size_t xs = size_t(g.batch) * g.in_channels * g.in_height * g.in_width;
    const size_t ys = size_t(g.batch) * g.out_channels * g.out_height() * g.out_width();
    const int64_t plane = g.col_cols(), K = g.col_rows();
    const auto x = random_vector(xs, 11, -2.0f, 2.0f);
    const auto w = random_vector(size_t(g.out_channels) * size_t(K), 12);
    const auto b = random_vector(size_t(g.out_channels), 13);
    const std::vector<float> zero(size_t(g.out_channels), 0.0f);
    std::vector<float> y(ys, NAN);
    cpu::conv2d_forward_bf16_reference(g, x.data(), w.data(), zero.data(), y.data(), 2);

    // Only the BF16-rounded operands matter: the same bits from already rounded x and w.
    const std::vector<float> xb = bf16_values(x), wb = bf16_values(w);
    std::vector<float> from_rounded(ys, NAN);
    cpu::conv2d_forward_bf16_reference(g, xb.data(), wb.data(), zero.data(), from_rounded.data(),
                                       2);
    CHECK(std::memcmp(y.data(), from_rounded.data(), ys * sizeof(float)) == 0);

    // Every output is a BF16 value, within BF16 rounding (2^-8 relative) of the exact convolution
    // of the BF16 operands, plus the FP32 sum's error (at most (K + 1)·2^-24·Σ|x·w|).
    std::vector<double> exact, sum_abs;
    conv_double(g, xb.data(), wb.data(), exact, sum_abs);
    size_t not_bf16 = 0, outside = 0;
    for (size_t i = 0; i < ys; ++i) {
      not_bf16 += cpu::bf16_to_float(cpu::round_to_bf16(y[i])) != y[i];
      const double bound =
          std::ldexp(std::abs(exact[i]), -8) + 1.01 * double(K + 1) * std::ldexp(sum_abs[i], -24);
      outside += !(std::abs(double(y[i]) - exact[i]) <= bound);
    }
    CHECK(not_bf16 == 0);
    CHECK(outside == 0);

    // Against the FP32 convolution of the unrounded operands: each product's inputs rounded by at
    // most 2^-8 relative (so the product by 2^-7 + 2^-16), the output by 2^-8 — the bound the
    // README's bf16 parity tolerances are built from; and most outputs do differ from FP32's.
    std::vector<double> exact32, sum_abs32;
    conv_double(g, x.data(), w.data(), exact32, sum_abs32);
    size_t beyond = 0, same_as_fp32 = 0;
    for (size_t i = 0; i < ys; ++i) {
      const double bound = std::ldexp(std::abs(exact32[i]), -8) +
                           (std::ldexp(1.0, -7) + std::ldexp(1.0, -14)) * sum_abs32[i] +
                           2.02 * double(K + 1) * std::ldexp(sum_abs32[i], -24);
      beyond += !(std::abs(double(y[i]) - exact32[i]) <= bound);
      same_as_fp32 += float(exact32[i]) == y[i];
    }
    CHECK(beyond == 0);
    CHECK(same_as_fp32 <= ys / 2);

    // Bias and ReLU come after the rounding, in FP32: bit for bit max(y + b, 0).
    std::vector<float> biased(ys, NAN), fused(ys, NAN);
    cpu::conv2d_forward_bf16_reference(g, x.data(), w.data(), b.data(), biased.data(), 2);
    cpu::conv2d_forward_bf16_reference(g, x.data(), w.data(), b.data(), fused.data(), 2, true);
    size_t bias_wrong = 0, relu_wrong = 0;
    for (size_t i = 0; i < ys; ++i) {
      const float want = y[i] + b[(int64_t(i) / plane) % g.out_channels];
      bias_wrong += biased[i] != want;
      relu_wrong += fused[i] != (want > 0.0f ? want : 0.0f);
    }
    CHECK(bias_wrong == 0);
    CHECK(relu_wrong == 0);
  }
}
