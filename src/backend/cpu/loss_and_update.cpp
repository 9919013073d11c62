// The CPU ops of a step's end: the softmax cross-entropy loss and its gradient, gradient clipping
// and SGD's update (see include/gputrain/ops.hpp for what each means).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "gputrain/ops.hpp"

namespace gputrain::cpu {

double softmax_cross_entropy(int batch, int classes, const float* logits, const int32_t* labels,
                             float grad_scale, float* dlogits, int32_t* predicted, int64_t* correct,
                             float label_smoothing) {
  const double eps = label_smoothing, off_target = eps / double(classes);
  double loss_sum = 0.0;
  int64_t hits = 0;
  for (int n = 0; n < batch; ++n) {
    const float* z = logits + int64_t(n) * classes;
    int best = 0;
    for (int k = 1; k < classes; ++k)
      if (z[k] > z[best]) best = k;
    const float zmax = z[best];
    double sum = 0.0;
    for (int k = 0; k < classes; ++k) sum += std::exp(double(z[k]) - zmax);
    const double log_sum = std::log(sum);
    const int label = labels[n];
    const double nll = log_sum - (double(z[label]) - zmax);
    if (eps > 0) {
      double shifted_sum = 0.0;  // Σ_k (z_k − zmax)
      for (int k = 0; k < classes; ++k) shifted_sum += double(z[k]) - zmax;
      const double mean_nll = log_sum - shifted_sum / double(classes);  // (1/K)·Σ_k −log p_k
      loss_sum += (1.0 - eps) * nll + eps * mean_nll;
    } else {
      loss_sum += nll;
    }
    hits += (best == label);
    if (predicted) predicted[n] = best;
    if (dlogits) {
      float* d = dlogits + int64_t(n) * classes;
      for (int k = 0; k < classes; ++k) {
        const double softmax = std::exp(double(z[k]) - zmax - log_sum);
        const double target = (k == label ? 1.0 - eps : 0.0) + off_target;
        d[k] = float((softmax - target) / grad_scale);
      }
    }
  }
  if (correct) *correct = hits;
  return loss_sum;
}

double clip_grad_norm(int64_t n, float* g, float max_norm) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += double(g[i]) * double(g[i]);
  const double norm = std::sqrt(sum_sq);
  // As torch: the coefficient in float32 from float32 norm, clamped to 1, always multiplied.
  const float coef = std::min(1.0f, max_norm / (float(norm) + 1e-6f));
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) g[i] *= coef;
  return norm;
}

void sgd_update(int64_t n, float* w, const float* g, float* v, const SgdParams& p,
                const uint8_t* decay) {
  // One loop body per case; `masked` is a compile-time constant, so the unmasked loops are the
  // same code as before masks existed.
  auto run = [&](auto masked) {
    constexpr bool kMasked = decltype(masked)::value;
    const float lr = p.lr, mu = p.momentum, wd = p.weight_decay;
    // g' = g + wd·w, with wd = 0 where the mask exempts the element (as torch's group with wd 0;
    // the same expression either way, so a compiler's FMA contraction treats both alike).
    auto decayed = [&](int64_t i) {
      if constexpr (kMasked) return g[i] + (decay[i] ? wd : 0.0f) * w[i];
      return g[i] + wd * w[i];
    };
    if (mu == 0.0f) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) w[i] -= lr * decayed(i);
      return;
    }
    if (p.nesterov) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) {
        const float gi = decayed(i);
        const float vi = mu * v[i] + gi;
        v[i] = vi;
        w[i] -= lr * (gi + mu * vi);
      }
      return;
    }
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const float vi = mu * v[i] + decayed(i);
      v[i] = vi;
      w[i] -= lr * vi;
    }
  };
  if (decay)
    run(std::true_type{});
  else
    run(std::false_type{});
}

}  // namespace gputrain::cpu
