// CPU ops of batchnorm2d, average pooling and dropout: forwards against direct definitions,
// backwards against central finite differences, dropout's draws against their keys, and the
// weight decay mask of the update ops.
#include <omp.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "gputrain/dropout.hpp"
#include "gputrain/ops.hpp"
#include "support/gradient_check.hpp"

using namespace gputrain;
using gputrain::testing::check_gradient;
using gputrain::testing::random_vector;

namespace {

double weighted_sum(const std::vector<float>& y, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * r[i];
  return s;
}

struct BnCase {
  int n, c;
  int64_t plane;
};

// The batch statistics of channel ch, in double, straight from the definition.
void channel_stats(const BnCase& k, const std::vector<float>& x, int ch, double* mean,
                   double* var) {
  const double m = double(k.n) * double(k.plane);
  double s = 0;
  for (int i = 0; i < k.n; ++i)
    for (int64_t p = 0; p < k.plane; ++p) s += x[size_t((int64_t(i) * k.c + ch) * k.plane + p)];
  *mean = s / m;
  double q = 0;
  for (int i = 0; i < k.n; ++i)
    for (int64_t p = 0; p < k.plane; ++p) {
      const double d = x[size_t((int64_t(i) * k.c + ch) * k.plane + p)] - *mean;
      q += d * d;
    }
  *var = q / m;
}

PoolGeometry pool(int n, int c, int h, int w, int k, int s) {
  PoolGeometry g;
  g.batch = n;
  g.channels = c;
  g.in_height = h;
  g.in_width = w;
  g.kernel = k;
  g.stride = s;
  return g;
}

}  // namespace

TEST_CASE("batchnorm2d training forward: batch statistics, torch's running update",
          "[ops][batchnorm]") {
  for (const BnCase k : {BnCase{4, 3, 25}, BnCase{1, 5, 7}, BnCase{3, 2, 1}, BnCase{2, 17, 33}}) {
    const size_t size = size_t(k.n) * k.c * size_t(k.plane);
    // An offset and a scale per element, so that the statistics are far from 0 and 1.
    auto x = random_vector(size, 1, -2.0f, 5.0f);
    const auto w = random_vector(size_t(k.c), 2, 0.5f, 1.5f), b = random_vector(size_t(k.c), 3);
    auto rm = random_vector(size_t(k.c), 4), rv = random_vector(size_t(k.c), 5, 0.5f, 2.0f);
    const auto rm0 = rm, rv0 = rv;
    std::vector<float> y(size, NAN), mean(size_t(k.c)), invstd(size_t(k.c));
    const float eps = 1e-5f, momentum = 0.1f;
    cpu::batchnorm2d_forward_train(k.n, k.c, k.plane, x.data(), w.data(), b.data(), eps, momentum,
                                   rm.data(), rv.data(), y.data(), mean.data(), invstd.data());
    for (int ch = 0; ch < k.c; ++ch) {
      double m = 0, v = 0;
      channel_stats(k, x, ch, &m, &v);
      const double m_count = double(k.n) * double(k.plane);
      INFO("n " << k.n << " c " << k.c << " plane " << k.plane << " channel " << ch);
      CHECK(mean[size_t(ch)] == Approx(m).epsilon(1e-6));
      CHECK(invstd[size_t(ch)] == Approx(1 / std::sqrt(v + eps)).epsilon(1e-6));
      const double unbiased = m_count > 1 ? v * m_count / (m_count - 1) : v;
      CHECK(rm[size_t(ch)] == Approx(0.1 * m + 0.9 * rm0[size_t(ch)]).epsilon(1e-6));
      CHECK(rv[size_t(ch)] == Approx(0.1 * unbiased + 0.9 * rv0[size_t(ch)]).epsilon(1e-6));
      for (int i = 0; i < k.n; ++i)
        for (int64_t p = 0; p < k.plane; ++p) {
          const size_t at = size_t((int64_t(i) * k.c + ch) * k.plane + p);
          const double want = (x[at] - m) / std::sqrt(v + eps) * w[size_t(ch)] + b[size_t(ch)];
          REQUIRE(y[at] == Approx(want).margin(1e-5).epsilon(1e-5));
        }
    }
  }
}

TEST_CASE("batchnorm2d results do not depend on the thread count", "[ops][batchnorm]") {
  const BnCase k{8, 6, 49};
  const size_t size = size_t(k.n) * k.c * size_t(k.plane);
  const auto x = random_vector(size, 7), dy = random_vector(size, 8);
  const auto w = random_vector(size_t(k.c), 9), b = random_vector(size_t(k.c), 10);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<float> rm(size_t(k.c), 0.0f), rv(size_t(k.c), 1.0f), y(size), mean(size_t(k.c)),
        invstd(size_t(k.c)), dx(size), dw(size_t(k.c)), db(size_t(k.c));
    cpu::batchnorm2d_forward_train(k.n, k.c, k.plane, x.data(), w.data(), b.data(), 1e-5f, 0.1f,
                                   rm.data(), rv.data(), y.data(), mean.data(), invstd.data());
    cpu::batchnorm2d_backward(k.n, k.c, k.plane, x.data(), w.data(), mean.data(), invstd.data(),
                              dy.data(), dx.data(), dw.data(), db.data());
    omp_set_num_threads(saved);
    std::vector<float> all = y;
    for (const auto* v : {&rm, &rv, &mean, &invstd, &dx, &dw, &db})
      all.insert(all.end(), v->begin(), v->end());
    return all;
  };
  CHECK(run(1) == run(2));
  CHECK(run(1) == run(3));
}

TEST_CASE("batchnorm2d eval forward uses the running statistics", "[ops][batchnorm]") {
  const BnCase k{3, 4, 10};
  const size_t size = size_t(k.n) * k.c * size_t(k.plane);
  const auto x = random_vector(size, 11, -3.0f, 3.0f);
  const auto w = random_vector(size_t(k.c), 12), b = random_vector(size_t(k.c), 13);
  const auto rm = random_vector(size_t(k.c), 14), rv = random_vector(size_t(k.c), 15, 0.1f, 3.0f);
  std::vector<float> y(size, NAN);
  cpu::batchnorm2d_forward_eval(k.n, k.c, k.plane, x.data(), w.data(), b.data(), rm.data(),
                                rv.data(), 1e-3f, y.data());
  for (size_t at = 0; at < size; ++at) {
    const size_t ch = size_t(int64_t(at) / k.plane % k.c);
    const double want = (x[at] - rm[ch]) / std::sqrt(double(rv[ch]) + 1e-3) * w[ch] + b[ch];
    REQUIRE(y[at] == Approx(want).margin(1e-5).epsilon(1e-5));
  }
}

TEST_CASE("batchnorm2d backward matches finite differences", "[ops][batchnorm][gradient]") {
  for (const BnCase k : {BnCase{3, 2, 12}, BnCase{1, 3, 9}, BnCase{5, 1, 1}}) {
    const size_t size = size_t(k.n) * k.c * size_t(k.plane);
    auto x = random_vector(size, 21, -2.0f, 2.0f);
    auto w = random_vector(size_t(k.c), 22, 0.5f, 1.5f), b = random_vector(size_t(k.c), 23);
    const auto r = random_vector(size, 24);  // objective: Σ y·r
    auto objective = [&]() {
      std::vector<float> rm(size_t(k.c), 0.0f), rv(size_t(k.c), 1.0f), y(size), mean(size_t(k.c)),
          invstd(size_t(k.c));
      cpu::batchnorm2d_forward_train(k.n, k.c, k.plane, x.data(), w.data(), b.data(), 1e-5f, 0.1f,
                                     rm.data(), rv.data(), y.data(), mean.data(), invstd.data());
      return weighted_sum(y, r);
    };
    std::vector<float> rm(size_t(k.c), 0.0f), rv(size_t(k.c), 1.0f), y(size), mean(size_t(k.c)),
        invstd(size_t(k.c)), dx(size, NAN), dw(size_t(k.c), NAN), db(size_t(k.c), NAN);
    cpu::batchnorm2d_forward_train(k.n, k.c, k.plane, x.data(), w.data(), b.data(), 1e-5f, 0.1f,
                                   rm.data(), rv.data(), y.data(), mean.data(), invstd.data());
    cpu::batchnorm2d_backward(k.n, k.c, k.plane, x.data(), w.data(), mean.data(), invstd.data(),
                              r.data(), dx.data(), dw.data(), db.data());
    gputrain::testing::GradientCheckOptions opt;
    opt.eps = 1e-3;
    opt.atol = 2e-3;
    check_gradient("dx", x, dx, objective, opt);
    check_gradient("dw", w, dw, objective, opt);
    check_gradient("db", b, db, objective, opt);
    // The first layer's input gradient is never needed: dx may be null.
    std::vector<float> dw2(size_t(k.c)), db2(size_t(k.c));
    cpu::batchnorm2d_backward(k.n, k.c, k.plane, x.data(), w.data(), mean.data(), invstd.data(),
                              r.data(), nullptr, dw2.data(), db2.data());
    CHECK(dw2 == dw);
    CHECK(db2 == db);
  }
}

TEST_CASE("avgpool2d forward and backward", "[ops][avgpool][gradient]") {
  // plain 2×2, overlapping windows (stride < kernel), odd sizes that floor, batch 1
  for (const PoolGeometry g : {pool(2, 3, 6, 8, 2, 2), pool(1, 2, 7, 7, 3, 2),
                               pool(3, 1, 5, 9, 2, 3), pool(1, 1, 4, 4, 4, 4)}) {
    const size_t xs = size_t(g.batch) * g.channels * g.in_height * g.in_width;
    const size_t ys = size_t(g.batch) * g.channels * g.out_height() * g.out_width();
    auto x = random_vector(xs, 31);
    std::vector<float> y(ys, NAN);
    cpu::avgpool2d_forward(g, x.data(), y.data());
    for (int64_t pl = 0; pl < int64_t(g.batch) * g.channels; ++pl)
      for (int oy = 0; oy < g.out_height(); ++oy)
        for (int ox = 0; ox < g.out_width(); ++ox) {
          double s = 0;
          for (int ky = 0; ky < g.kernel; ++ky)
            for (int kx = 0; kx < g.kernel; ++kx)
              s += x[size_t(pl * g.in_height * g.in_width + (oy * g.stride + ky) * g.in_width +
                            ox * g.stride + kx)];
          REQUIRE(y[size_t((pl * g.out_height() + oy) * g.out_width() + ox)] ==
                  Approx(s / (g.kernel * g.kernel)).margin(1e-6));
        }
    const auto r = random_vector(ys, 32);
    std::vector<float> dx(xs, NAN);
    cpu::avgpool2d_backward(g, r.data(), dx.data());
    auto objective = [&]() {
      std::vector<float> out(ys);
      cpu::avgpool2d_forward(g, x.data(), out.data());
      return weighted_sum(out, r);
    };
    check_gradient("avgpool dx", x, dx, objective);
  }
}

TEST_CASE("global_avgpool forward and backward", "[ops][avgpool][gradient]") {
  const int n = 3, c = 4;
  const int64_t plane = 13;
  auto x = random_vector(size_t(n * c * plane), 41);
  std::vector<float> y(size_t(n * c), NAN);
  cpu::global_avgpool_forward(n, c, plane, x.data(), y.data());
  for (int pl = 0; pl < n * c; ++pl) {
    double s = 0;
    for (int64_t p = 0; p < plane; ++p) s += x[size_t(pl * plane + p)];
    CHECK(y[size_t(pl)] == Approx(s / double(plane)).margin(1e-7));
  }
  const auto r = random_vector(size_t(n * c), 42);
  std::vector<float> dx(x.size(), NAN);
  cpu::global_avgpool_backward(n, c, plane, r.data(), dx.data());
  auto objective = [&]() {
    std::vector<float> out(size_t(n * c));
    cpu::global_avgpool_forward(n, c, plane, x.data(), out.data());
    return weighted_sum(out, r);
  };
  check_gradient("global avgpool dx", x, dx, objective);
}

TEST_CASE("dropout drops at rate p, scales the rest, and its backward masks alike",
          "[ops][dropout]") {
  for (const float p : {0.1f, 0.5f, 0.8f}) {
    const int64_t per_sample = 1000, samples = 50, count = per_sample * samples;
    std::vector<int32_t> index(static_cast<size_t>(samples));
    std::iota(index.begin(), index.end(), 100);
    const auto x = random_vector(size_t(count), 51);
    std::vector<float> y(size_t(count), NAN);
    std::vector<uint8_t> mask(size_t(count), 7);
    cpu::dropout_forward(count, per_sample, index.data(), 42, 3, 5, p, x.data(), y.data(),
                         mask.data());
    int64_t dropped = 0;
    const float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < count; ++i) {
      REQUIRE(mask[size_t(i)] <= 1);
      if (mask[size_t(i)]) {
        REQUIRE(y[size_t(i)] == x[size_t(i)] * scale);
      } else {
        REQUIRE(y[size_t(i)] == 0.0f);
        ++dropped;
      }
    }
    // Binomial(count, p): within 3 standard deviations.
    const double sigma = std::sqrt(double(count) * p * (1 - p));
    INFO("p " << p << ": dropped " << dropped << " of " << count);
    CHECK(std::abs(double(dropped) - double(count) * p) < 3 * sigma);
    const auto dy = random_vector(size_t(count), 52);
    std::vector<float> dx(size_t(count), NAN);
    cpu::dropout_backward(count, p, mask.data(), dy.data(), dx.data());
    for (int64_t i = 0; i < count; ++i)
      REQUIRE(dx[size_t(i)] == (mask[size_t(i)] ? dy[size_t(i)] * scale : 0.0f));
  }
}

TEST_CASE("dropout's mask is a function of its keys, not of the batch", "[ops][dropout]") {
  const int64_t per_sample = 37;
  const float p = 0.5f;
  // Sample 9's units, alone in a batch of 1 and at position 2 of a batch of 4.
  const std::vector<int32_t> alone = {9}, batch = {3, 0, 9, 12};
  const auto x = random_vector(size_t(per_sample * 4), 61, 0.5f, 1.0f);
  std::vector<float> y1(static_cast<size_t>(per_sample)), y4(static_cast<size_t>(per_sample * 4));
  std::vector<uint8_t> m1(y1.size()), m4(y4.size());
  cpu::dropout_forward(per_sample, per_sample, alone.data(), 7, 2, 4, p, x.data() + 2 * per_sample,
                       y1.data(), m1.data());
  cpu::dropout_forward(4 * per_sample, per_sample, batch.data(), 7, 2, 4, p, x.data(), y4.data(),
                       m4.data());
  CHECK(std::vector<uint8_t>(m4.begin() + 2 * per_sample, m4.begin() + 3 * per_sample) == m1);
  // The same units as dropout_keep says, and other keys give other masks.
  const uint64_t key = dropout_sample_key(7, 2, 9, 4);
  for (int64_t u = 0; u < per_sample; ++u)
    REQUIRE(m1[size_t(u)] == (dropout_keep(key, u, dropout_drop_threshold(p)) ? 1 : 0));
  auto mask_of = [&](uint64_t seed, int64_t epoch, int32_t sample, int layer) {
    std::vector<float> y(static_cast<size_t>(per_sample));
    std::vector<uint8_t> m(static_cast<size_t>(per_sample));
    cpu::dropout_forward(per_sample, per_sample, &sample, seed, epoch, layer, p, x.data(), y.data(),
                         m.data());
    return m;
  };
  CHECK(mask_of(7, 2, 9, 4) == m1);
  CHECK(mask_of(8, 2, 9, 4) != m1);
  CHECK(mask_of(7, 3, 9, 4) != m1);
  CHECK(mask_of(7, 2, 10, 4) != m1);
  CHECK(mask_of(7, 2, 9, 5) != m1);
  // p = 0 keeps everything unscaled.
  std::vector<float> y0(static_cast<size_t>(per_sample));
  std::vector<uint8_t> m0(static_cast<size_t>(per_sample));
  cpu::dropout_forward(per_sample, per_sample, alone.data(), 7, 2, 4, 0.0f, x.data(), y0.data(),
                       m0.data());
  CHECK(y0 == std::vector<float>(x.begin(), x.begin() + per_sample));
}

TEST_CASE("the weight decay mask exempts elements exactly as weight_decay 0 would",
          "[ops][sgd][adamw]") {
  const int64_t n = 300;
  const auto w0 = random_vector(size_t(n), 71), g = random_vector(size_t(n), 72);
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) mask[size_t(i)] = uint8_t(i % 3 != 0);
  // Decay must make a visible difference for the test to mean anything.
  const float lr = 0.1f;
  REQUIRE(std::abs(lr * 0.05f * w0[1]) > 1e-4f);
  for (const bool nesterov : {false, true}) {
    cpu::SgdParams with{0.1f, 0.9f, 0.05f, nesterov}, without{0.1f, 0.9f, 0.0f, nesterov};
    auto w = w0;
    std::vector<float> v(static_cast<size_t>(n), 0.0f);
    auto w_decay = w0, v_decay = v, w_free = w0, v_free = v;
    for (int step = 0; step < 3; ++step) {
      cpu::sgd_update(n, w.data(), g.data(), v.data(), with, mask.data());
      cpu::sgd_update(n, w_decay.data(), g.data(), v_decay.data(), with);
      cpu::sgd_update(n, w_free.data(), g.data(), v_free.data(), without);
    }
    for (int64_t i = 0; i < n; ++i) {
      const auto& want = mask[size_t(i)] ? w_decay : w_free;
      INFO("nesterov " << nesterov << " i " << i << " mask " << int(mask[size_t(i)]));
      // Equal up to the FMA contraction the compiler chose for each loop (one rounding).
      REQUIRE(w[size_t(i)] == Approx(want[size_t(i)]).epsilon(1e-6).margin(1e-6));
    }
  }
  cpu::AdamWParams with, without;
  with.lr = without.lr = 0.01f;
  with.weight_decay = 0.1f;
  without.weight_decay = 0.0f;
  auto w = w0, w_decay = w0, w_free = w0;
  std::vector<float> m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
  auto md = m, vd = v, mf = m, vf = v;
  cpu::adamw_update(n, w.data(), g.data(), m.data(), v.data(), with, mask.data());
  cpu::adamw_update(n, w_decay.data(), g.data(), md.data(), vd.data(), with);
  cpu::adamw_update(n, w_free.data(), g.data(), mf.data(), vf.data(), without);
  for (int64_t i = 0; i < n; ++i)
    REQUIRE(w[size_t(i)] == Approx((mask[size_t(i)] ? w_decay : w_free)[size_t(i)]).margin(1e-6));
}
