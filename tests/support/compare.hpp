// Catch2 checks that compare a computed float tensor with a reference, for the engine tests:
// element-wise with a tolerance scaled by the tensor's largest |ref|, or by relative L2 norm where
// a branch flip (a ReLU input or pool tie within rounding) can move single elements.
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstddef>
#include <sstream>
#include <string>
#include <vector>

namespace gputrain::testing {

// |got - ref| <= atol_frac·max|ref| + rtol·|ref| elementwise; reports the first mismatches.
inline void check_close(const std::string& what, const float* got, const float* ref, size_t n,
                        double rtol, double atol_frac) {
  double scale = 0;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, double(std::abs(ref[i])));
  const double atol = atol_frac * scale + 1e-7;
  size_t bad = 0;
  std::ostringstream report;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::abs(double(got[i]) - double(ref[i]));
    if (!(d <= atol + rtol * std::abs(double(ref[i])))) {  // NaN fails too
      if (++bad <= 5) report << "  [" << i << "] got " << got[i] << ", ref " << ref[i] << "\n";
    }
  }
  INFO(what << ": " << bad << " of " << n << " off (atol " << atol << ", rtol " << rtol
            << ", max|ref| " << scale << ")\n"
            << report.str());
  CHECK(bad == 0);
}

inline void check_close(const std::string& what, const std::vector<float>& got,
                        const std::vector<float>& ref, double rtol, double atol_frac) {
  REQUIRE(got.size() == ref.size());
  check_close(what, got.data(), ref.data(), got.size(), rtol, atol_frac);
}

// ||got - ref||₂ <= rel·||ref||₂ (and everything finite).
inline void check_close_l2(const std::string& what, const float* got, const float* ref, size_t n,
                           double rel) {
  double diff = 0, norm = 0;
  bool finite = true;
  for (size_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(got[i]);
    diff += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    norm += double(ref[i]) * ref[i];
  }
  INFO(what << ": relative L2 error " << std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30)
            << " (allowed " << rel << ")");
  CHECK(finite);
  CHECK(std::sqrt(diff) <= rel * std::sqrt(norm) + 1e-12);
}

}  // namespace gputrain::testing
