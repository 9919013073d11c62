// CPU ops of batchnorm2d, average pooling and dropout (include/gputrain/ops.hpp says what each
// computes). They are the twins the CUDA kernels are tested against: per-channel statistics are
// summed in double in one fixed order per channel, so no result depends on the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "gputrain/dropout.hpp"
#include "gputrain/ops.hpp"

namespace gputrain::cpu {
namespace {

// Σ x[0..n) in double, four interleaved partial sums (for instruction-level parallelism) added in
// a fixed order at the end: the same bits on every run.
double sum_double(const float* x, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += x[i];
    s1 += x[i + 1];
    s2 += x[i + 2];
    s3 += x[i + 3];
  }
  for (; i < n; ++i) s0 += x[i];
  return (s0 + s1) + (s2 + s3);
}

// Σ (x − mean)² and Σ (x − mean)·dy likewise.
double centered_square_sum(const float* x, int64_t n, double mean) {
  double s0 = 0, s1 = 0;
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    const double d0 = x[i] - mean, d1 = x[i + 1] - mean;
    s0 += d0 * d0;
    s1 += d1 * d1;
  }
  for (; i < n; ++i) {
    const double d = x[i] - mean;
    s0 += d * d;
  }
  return s0 + s1;
}

double centered_dot(const float* x, const float* dy, int64_t n, double mean) {
  double s0 = 0, s1 = 0;
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    s0 += (x[i] - mean) * double(dy[i]);
    s1 += (x[i + 1] - mean) * double(dy[i + 1]);
  }
  for (; i < n; ++i) s0 += (x[i] - mean) * double(dy[i]);
  return s0 + s1;
}

// y = x·α + β over one channel of every sample.
void scale_shift(int n, int c, int64_t plane, int ch, const float* x, float alpha, float beta,
                 float* y) {
  for (int i = 0; i < n; ++i) {
    const int64_t base = (int64_t(i) * c + ch) * plane;
#pragma omp simd
    for (int64_t p = 0; p < plane; ++p) y[base + p] = x[base + p] * alpha + beta;
  }
}

bool worth_threads(int64_t work) {
  return work > 32768;
}

}  // namespace

void batchnorm2d_forward_train(int n, int c, int64_t plane, const float* x, const float* w,
                               const float* b, float eps, float momentum, float* running_mean,
                               float* running_var, float* y, float* save_mean, float* save_invstd) {
  const int64_t m = int64_t(n) * plane;
#pragma omp parallel for schedule(static) if (worth_threads(m * c))
  for (int ch = 0; ch < c; ++ch) {
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += sum_double(x + (int64_t(i) * c + ch) * plane, plane);
    const double mean = sum / double(m);
    double squares = 0;
    for (int i = 0; i < n; ++i)
      squares += centered_square_sum(x + (int64_t(i) * c + ch) * plane, plane, mean);
    const double var = squares / double(m);
    const double invstd = 1.0 / std::sqrt(var + double(eps));
    save_mean[ch] = float(mean);
    save_invstd[ch] = float(invstd);
    const float alpha = float(invstd) * w[ch];
    const float beta = b[ch] - float(mean) * alpha;
    scale_shift(n, c, plane, ch, x, alpha, beta, y);
    // As torch: momentum·batch + (1 − momentum)·running, in double; the unbiased variance.
    const double unbiased = m > 1 ? var * double(m) / double(m - 1) : var;
    const double mom = momentum;
    running_mean[ch] = float(mom * mean + (1.0 - mom) * double(running_mean[ch]));
    running_var[ch] = float(mom * unbiased + (1.0 - mom) * double(running_var[ch]));
  }
}

void batchnorm2d_forward_eval(int n, int c, int64_t plane, const float* x, const float* w,
                              const float* b, const float* running_mean, const float* running_var,
                              float eps, float* y) {
#pragma omp parallel for schedule(static) if (worth_threads(int64_t(n) * plane * c))
  for (int ch = 0; ch < c; ++ch) {
    const float invstd = float(1.0 / std::sqrt(double(running_var[ch]) + double(eps)));
    const float alpha = invstd * w[ch];
    const float beta = b[ch] - running_mean[ch] * alpha;
    scale_shift(n, c, plane, ch, x, alpha, beta, y);
  }
}

void batchnorm2d_backward(int n, int c, int64_t plane, const float* x, const float* w,
                          const float* save_mean, const float* save_invstd, const float* dy,
                          float* dx, float* dw, float* db) {
  const int64_t m = int64_t(n) * plane;
#pragma omp parallel for schedule(static) if (worth_threads(m * c))
  for (int ch = 0; ch < c; ++ch) {
    const double mean = save_mean[ch];
    double sum_dy = 0, dot = 0;  // Σ dy, Σ (x − mean)·dy
    for (int i = 0; i < n; ++i) {
      const int64_t base = (int64_t(i) * c + ch) * plane;
      sum_dy += sum_double(dy + base, plane);
      dot += centered_dot(x + base, dy + base, plane, mean);
    }
    const double invstd = save_invstd[ch];
    db[ch] = float(sum_dy);
    dw[ch] = float(dot * invstd);
    if (!dx) continue;
    // torch's CPU form: dx = (dy − mean(dy) − (x − mean)·k)·invstd·w, k = Σ(x − mean)dy·invstd²/M.
    const float grad_mean = float(sum_dy / double(m));
    const float k = float(dot * invstd * invstd / double(m));
    const float mean_f = save_mean[ch], scale = save_invstd[ch] * w[ch];
    for (int i = 0; i < n; ++i) {
      const int64_t base = (int64_t(i) * c + ch) * plane;
#pragma omp simd
      for (int64_t p = 0; p < plane; ++p)
        dx[base + p] = (dy[base + p] - grad_mean - (x[base + p] - mean_f) * k) * scale;
    }
  }
}

void avgpool2d_forward(const PoolGeometry& g, const float* x, float* y) {
  const int Ho = g.out_height(), Wo = g.out_width(), k = g.kernel, s = g.stride;
  const int64_t in_plane = int64_t(g.in_height) * g.in_width, out_plane = int64_t(Ho) * Wo;
  const int64_t planes = int64_t(g.batch) * g.channels;
  const float area = float(k * k);
#pragma omp parallel for schedule(static) if (worth_threads(planes * in_plane))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * in_plane;
    float* yp = y + pl * out_plane;
    for (int oy = 0; oy < Ho; ++oy)
      for (int ox = 0; ox < Wo; ++ox) {
        float sum = 0.0f;
        for (int ky = 0; ky < k; ++ky) {
          const float* row = xp + int64_t(oy * s + ky) * g.in_width + ox * s;
          for (int kx = 0; kx < k; ++kx) sum += row[kx];
        }
        yp[int64_t(oy) * Wo + ox] = sum / area;
      }
  }
}

void avgpool2d_backward(const PoolGeometry& g, const float* dy, float* dx) {
  const int Ho = g.out_height(), Wo = g.out_width(), k = g.kernel, s = g.stride;
  const int64_t in_plane = int64_t(g.in_height) * g.in_width, out_plane = int64_t(Ho) * Wo;
  const int64_t planes = int64_t(g.batch) * g.channels;
  const float area = float(k * k);
#pragma omp parallel for schedule(static) if (worth_threads(planes * in_plane))
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* dxp = dx + pl * in_plane;
    const float* dyp = dy + pl * out_plane;
    std::fill(dxp, dxp + in_plane, 0.0f);
    for (int oy = 0; oy < Ho; ++oy)
      for (int ox = 0; ox < Wo; ++ox) {
        const float share = dyp[int64_t(oy) * Wo + ox] / area;
        for (int ky = 0; ky < k; ++ky) {
          float* row = dxp + int64_t(oy * s + ky) * g.in_width + ox * s;
          for (int kx = 0; kx < k; ++kx) row[kx] += share;
        }
      }
  }
}

void global_avgpool_forward(int n, int c, int64_t plane, const float* x, float* y) {
  const int64_t planes = int64_t(n) * c;
#pragma omp parallel for schedule(static) if (worth_threads(planes * plane))
  for (int64_t pl = 0; pl < planes; ++pl)
    y[pl] = float(sum_double(x + pl * plane, plane) / double(plane));
}

void global_avgpool_backward(int n, int c, int64_t plane, const float* dy, float* dx) {
  const int64_t planes = int64_t(n) * c;
  const float count = float(plane);
#pragma omp parallel for schedule(static) if (worth_threads(planes * plane))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float share = dy[pl] / count;
    std::fill(dx + pl * plane, dx + (pl + 1) * plane, share);
  }
}

void dropout_forward(int64_t count, int64_t per_sample, const int32_t* sample_index, uint64_t seed,
                     int64_t epoch, int layer, float p, const float* x, float* y, uint8_t* mask) {
  const uint64_t threshold = dropout_drop_threshold(p);
  const float scale = dropout_scale(p);
  const int64_t samples = (count + per_sample - 1) / per_sample;
#pragma omp parallel for schedule(static) if (worth_threads(count))
  for (int64_t s = 0; s < samples; ++s) {
    const uint64_t key = dropout_sample_key(seed, epoch, sample_index[s], layer);
    const int64_t first = s * per_sample, last = std::min(count, first + per_sample);
    for (int64_t i = first; i < last; ++i) {
      const bool keep = dropout_keep(key, i - first, threshold);
      mask[i] = keep ? 1 : 0;
      y[i] = keep ? x[i] * scale : 0.0f;
    }
  }
}

void dropout_backward(int64_t n, float p, const uint8_t* mask, const float* dy, float* dx) {
  const float scale = dropout_scale(p);
#pragma omp parallel for simd schedule(static) if (worth_threads(n))
  for (int64_t i = 0; i < n; ++i) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

}  // namespace gputrain::cpu
