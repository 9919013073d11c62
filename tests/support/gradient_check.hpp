// Central finite differences, in the style of Caffe's GradientChecker: perturb one input element by
// ±eps, take the change of a scalar objective, compare with the analytic gradient as
// |numeric - analytic| <= atol + rtol·max(|numeric|, |analytic|). Points where the objective has a
// kink within eps (ReLU at 0, ties in max-pool) are the caller's to skip via `skip`.
#pragma once

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace gputrain::testing {

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

struct GradientCheckOptions {
  double eps = 1e-2;
  double atol = 1e-3;
  double rtol = 1e-2;
  size_t max_points = 300;  // checked coordinates per tensor (spread evenly), to keep tests fast
};

// `objective()` recomputes the scalar from the current contents of `values`.
inline void check_gradient(const std::string& what, std::vector<float>& values,
                           const std::vector<float>& analytic,
                           const std::function<double()>& objective,
                           const GradientCheckOptions& opt = {},
                           const std::function<bool(size_t)>& skip = nullptr) {
  REQUIRE(values.size() == analytic.size());
  const size_t stride = std::max<size_t>(1, values.size() / opt.max_points);
  size_t checked = 0, failures = 0;
  std::ostringstream report;
  for (size_t i = 0; i < values.size(); i += stride) {
    if (skip && skip(i)) continue;
    const float saved = values[i];
    values[i] = float(saved + opt.eps);
    const double plus = objective();
    values[i] = float(saved - opt.eps);
    const double minus = objective();
    values[i] = saved;
    const double numeric = (plus - minus) / (2 * opt.eps);
    const double a = analytic[i];
    ++checked;
    if (std::abs(numeric - a) > opt.atol + opt.rtol * std::max(std::abs(numeric), std::abs(a))) {
      if (++failures <= 5)
        report << "  " << what << "[" << i << "]: analytic " << a << ", numeric " << numeric
               << "\n";
    }
  }
  INFO(what << ": " << failures << " of " << checked << " coordinates off\n" << report.str());
  CHECK(failures == 0);
  CHECK(checked > 0);
}

}  // namespace gputrain::testing
