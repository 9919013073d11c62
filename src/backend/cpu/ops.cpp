// CPU versions of the training step's ops (semantics: include/gputrain/ops.hpp).
// Convolutions are im2col + OpenBLAS SGEMM, one sample per OpenMP thread at a time (each GEMM then
// runs single-threaded inside the parallel region, which for these small per-sample shapes is
// faster than threading one GEMM); linear layers split their GEMM into one block of output columns
// per OpenMP thread. Every GEMM is thus called from inside an OpenMP region on one thread, whatever
// OpenBLAS build is loaded (configure_blas_threads keeps a pthread build from adding its own pool).
// Every reduction runs in a fixed order for a given thread count, so runs are bitwise repeatable.
#include "gputrain/ops.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace gputrain::cpu {
namespace {

int resolve_threads(int threads) {
  return threads > 0 ? threads : omp_get_max_threads();
}

// cols[C·k·k, Ho·Wo] from one sample x[C,H,W]; zero where the window reaches into the padding.
void im2col(const ConvGeometry& g, const float* x, float* cols) {
  const int k = g.kernel, s = g.stride, p = g.padding, H = g.in_height, W = g.in_width;
  const int Ho = g.out_height(), Wo = g.out_width();
  for (int c = 0; c < g.in_channels; ++c) {
    const float* plane = x + int64_t(c) * H * W;
    for (int ki = 0; ki < k; ++ki) {
      for (int kj = 0; kj < k; ++kj) {
        float* row = cols + ((int64_t(c) * k + ki) * k + kj) * Ho * Wo;
        for (int oh = 0; oh < Ho; ++oh) {
          float* out = row + int64_t(oh) * Wo;
          const int ih = oh * s - p + ki;
          if (ih < 0 || ih >= H) {
            for (int ow = 0; ow < Wo; ++ow) out[ow] = 0.0f;
            continue;
          }
          const float* in = plane + int64_t(ih) * W;
          if (s == 1) {
            // Valid output columns: 0 <= ow - p + kj < W. Plain loops, not memcpy/fill: the rows
            // are ~30 floats, where call overhead would cost as much as the copy.
            const int shift = kj - p;
            const int lo = std::clamp(-shift, 0, Wo), hi = std::clamp(W - shift, lo, Wo);
            const float* src = in + shift;
            for (int ow = 0; ow < lo; ++ow) out[ow] = 0.0f;
            for (int ow = lo; ow < hi; ++ow) out[ow] = src[ow];
            for (int ow = hi; ow < Wo; ++ow) out[ow] = 0.0f;
          } else {
            for (int ow = 0; ow < Wo; ++ow) {
              const int iw = ow * s - p + kj;
              out[ow] = (iw >= 0 && iw < W) ? in[iw] : 0.0f;
            }
          }
        }
      }
    }
  }
}

// dx[C,H,W] = Σ over window positions of dcols (the adjoint of im2col); dx is overwritten.
void col2im(const ConvGeometry& g, const float* dcols, float* dx) {
  const int k = g.kernel, s = g.stride, p = g.padding, H = g.in_height, W = g.in_width;
  const int Ho = g.out_height(), Wo = g.out_width();
  std::fill(dx, dx + int64_t(g.in_channels) * H * W, 0.0f);
  for (int c = 0; c < g.in_channels; ++c) {
    float* plane = dx + int64_t(c) * H * W;
    for (int ki = 0; ki < k; ++ki) {
      for (int kj = 0; kj < k; ++kj) {
        const float* row = dcols + ((int64_t(c) * k + ki) * k + kj) * Ho * Wo;
        for (int oh = 0; oh < Ho; ++oh) {
          const int ih = oh * s - p + ki;
          if (ih < 0 || ih >= H) continue;
          const float* in = row + int64_t(oh) * Wo;
          float* out = plane + int64_t(ih) * W;
          if (s == 1) {
            const int lo = std::clamp(p - kj, 0, Wo), hi = std::clamp(W + p - kj, lo, Wo);
            float* __restrict__ o = out + lo - p + kj;
            const float* __restrict__ i = in + lo;
            for (int ow = 0; ow < hi - lo; ++ow) o[ow] += i[ow];
          } else {
            for (int ow = 0; ow < Wo; ++ow) {
              const int iw = ow * s - p + kj;
              if (iw >= 0 && iw < W) out[iw] += in[ow];
            }
          }
        }
      }
    }
  }
}

// Σ v[0..n) in a fixed order with 16 independent partial sums: vectorizes (a single running sum is
// a chain of dependent adds, ~4 cycles each) and stays deterministic.
float sum_floats(const float* v, int64_t n) {
  float partial[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) partial[j] += v[i + j];
  for (int j = 0; i < n; ++i, ++j) partial[j] += v[i];
  float sum = 0.0f;
  for (float p : partial) sum += p;
  return sum;
}

// Stride-1 fast paths. The sample is copied once into a zero-padded plane (C × Hp × Wp); then
// every row of the columns is a plain contiguous copy, with no bounds test per element. For the
// tutorial's 16×28×28 input this halves the time of im2col and col2im.
int64_t padded_floats(const ConvGeometry& g) {
  return int64_t(g.in_channels) * (g.in_height + 2 * g.padding) * (g.in_width + 2 * g.padding);
}

void im2col_stride1(const ConvGeometry& g, const float* x, float* cols, float* padded) {
  const int k = g.kernel, p = g.padding, H = g.in_height, W = g.in_width;
  const int Hp = H + 2 * p, Wp = W + 2 * p, Ho = g.out_height(), Wo = g.out_width();
  std::fill(padded, padded + padded_floats(g), 0.0f);
  for (int c = 0; c < g.in_channels; ++c)
    for (int h = 0; h < H; ++h) {
      const float* src = x + (int64_t(c) * H + h) * W;
      float* dst = padded + (int64_t(c) * Hp + h + p) * Wp + p;
      for (int w = 0; w < W; ++w) dst[w] = src[w];
    }
  for (int c = 0; c < g.in_channels; ++c)
    for (int ki = 0; ki < k; ++ki)
      for (int kj = 0; kj < k; ++kj) {
        float* row = cols + ((int64_t(c) * k + ki) * k + kj) * Ho * Wo;
        for (int oh = 0; oh < Ho; ++oh) {
          const float* __restrict__ src = padded + (int64_t(c) * Hp + oh + ki) * Wp + kj;
          float* __restrict__ dst = row + int64_t(oh) * Wo;
          for (int ow = 0; ow < Wo; ++ow) dst[ow] = src[ow];
        }
      }
}

void col2im_stride1(const ConvGeometry& g, const float* dcols, float* dx, float* padded) {
  const int k = g.kernel, p = g.padding, H = g.in_height, W = g.in_width;
  const int Hp = H + 2 * p, Wp = W + 2 * p, Ho = g.out_height(), Wo = g.out_width();
  std::fill(padded, padded + padded_floats(g), 0.0f);
  for (int c = 0; c < g.in_channels; ++c)
    for (int ki = 0; ki < k; ++ki)
      for (int kj = 0; kj < k; ++kj) {
        const float* row = dcols + ((int64_t(c) * k + ki) * k + kj) * Ho * Wo;
        for (int oh = 0; oh < Ho; ++oh) {
          float* __restrict__ dst = padded + (int64_t(c) * Hp + oh + ki) * Wp + kj;
          const float* __restrict__ src = row + int64_t(oh) * Wo;
          for (int ow = 0; ow < Wo; ++ow) dst[ow] += src[ow];
        }
      }
  for (int c = 0; c < g.in_channels; ++c)
    for (int h = 0; h < H; ++h) {
      const float* src = padded + (int64_t(c) * Hp + h + p) * Wp + p;
      float* dst = dx + (int64_t(c) * H + h) * W;
      for (int w = 0; w < W; ++w) dst[w] = src[w];
    }
}

// Thread t's share [begin, end) of n output rows or columns: contiguous, the same for a given
// thread count (so results are bitwise repeatable), with boundaries on multiples of 16 floats so
// that each block starts on a cache line of C.
struct ThreadBlock {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
ThreadBlock thread_block(int64_t n, int t, int nt) {
  constexpr int64_t align = 16;
  const int64_t chunks = (n + align - 1) / align;
  const auto edge = [&](int u) { return std::min(n, chunks * u / nt * align); };
  return {edge(t), edge(t + 1)};
}

bool is_pointwise(const ConvGeometry& g) {
  return g.kernel == 1 && g.stride == 1 && g.padding == 0;
}

int64_t per_thread_floats(const ConvGeometry& g) {
  return 2 * g.col_rows() * g.col_cols() + int64_t(g.out_channels) * g.col_rows() +
         padded_floats(g);
}

// The columns of one sample, through the stride-1 fast path where it applies.
void to_columns(const ConvGeometry& g, const float* x, float* cols, float* padded) {
  if (g.stride == 1)
    im2col_stride1(g, x, cols, padded);
  else
    im2col(g, x, cols);
}
void from_columns(const ConvGeometry& g, const float* dcols, float* dx, float* padded) {
  if (g.stride == 1)
    col2im_stride1(g, dcols, dx, padded);
  else
    col2im(g, dcols, dx);
}

}  // namespace

int64_t conv_workspace_floats(const ConvGeometry& g, int threads) {
  // Per thread: im2col columns, their gradient, a private dW partial sum, a padded input plane.
  return int64_t(resolve_threads(threads)) * per_thread_floats(g);
}

void conv2d_forward(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y,
                    float* workspace, int threads, bool relu) {
  const int T = resolve_threads(threads);
  const int64_t K = g.col_rows(), P = g.col_cols(), O = g.out_channels;
  const int64_t in_size = int64_t(g.in_channels) * g.in_height * g.in_width;
  const int64_t per_thread = per_thread_floats(g);
#pragma omp parallel for num_threads(T) schedule(static)
  for (int n = 0; n < g.batch; ++n) {
    float* cols = workspace + int64_t(omp_get_thread_num()) * per_thread;
    float* padded = cols + 2 * K * P + O * K;
    const float* xn = x + n * in_size;
    if (is_pointwise(g)) {
      cols = const_cast<float*>(xn);  // read only: the columns are the input itself
    } else {
      to_columns(g, xn, cols, padded);
    }
    float* yn = y + n * O * P;
    // The bias goes in first so the GEMM accumulates onto it (beta = 1).
    for (int64_t o = 0; o < O; ++o) std::fill(yn + o * P, yn + (o + 1) * P, b[o]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(O), int(P), int(K), 1.0f, w, int(K),
                cols, int(P), 1.0f, yn, int(P));
    if (relu)
      for (int64_t i = 0; i < O * P; ++i) yn[i] = yn[i] > 0.0f ? yn[i] : 0.0f;
  }
}

void conv2d_backward(const ConvGeometry& g, const float* x, const float* w, const float* dy,
                     float* dx, float* dw, float* db, float* workspace, int threads) {
  const int T = resolve_threads(threads);
  const int64_t K = g.col_rows(), P = g.col_cols(), O = g.out_channels;
  const int64_t in_size = int64_t(g.in_channels) * g.in_height * g.in_width;
  const int64_t per_thread = per_thread_floats(g);
  // Static contiguous sample ranges per thread: thread t's dW partial always sums the same samples
  // in the same order, and the partials are added in thread order — a deterministic reduction.
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* cols = workspace + int64_t(t) * per_thread;
    float* dcols = cols + K * P;
    float* dw_part = dcols + K * P;
    float* padded = dw_part + O * K;
    std::fill(dw_part, dw_part + O * K, 0.0f);
    const int begin = int(int64_t(g.batch) * t / nt), end = int(int64_t(g.batch) * (t + 1) / nt);
    for (int n = begin; n < end; ++n) {
      const float* xn = x + n * in_size;
      const float* cn = xn;
      if (!is_pointwise(g)) {
        to_columns(g, xn, cols, padded);
        cn = cols;
      }
      const float* dyn = dy + n * O * P;
      // dW[O,K] += dy_n[O,P] · cols[K,P]^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(O), int(K), int(P), 1.0f, dyn,
                  int(P), cn, int(P), 1.0f, dw_part, int(K));
      if (dx) {
        float* dxn = dx + n * in_size;
        // dcols[K,P] = W[O,K]^T · dy_n[O,P]; pointwise convs write dx directly.
        float* target = is_pointwise(g) ? dxn : dcols;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(K), int(P), int(O), 1.0f, w,
                    int(K), dyn, int(P), 0.0f, target, int(P));
        if (!is_pointwise(g)) from_columns(g, dcols, dxn, padded);
      }
    }
#pragma omp barrier
    // Sum the partials in thread order, each thread taking a slice of dW.
    const int64_t total = O * K;
    const int64_t lo = total * t / nt, hi = total * (t + 1) / nt;
    for (int64_t i = lo; i < hi; ++i) {
      float sum = 0.0f;
      for (int u = 0; u < nt; ++u) sum += workspace[int64_t(u) * per_thread + 2 * K * P + i];
      dw[i] = sum;
    }
#pragma omp for schedule(static)
    for (int64_t o = 0; o < O; ++o) {
      double sum = 0.0;
      for (int n = 0; n < g.batch; ++n) sum += sum_floats(dy + (n * O + o) * P, P);
      db[o] = float(sum);
    }
  }
}

void conv2d_forward_direct(const ConvGeometry& g, const float* x, const float* w, const float* b,
                           float* y) {
  const int Ho = g.out_height(), Wo = g.out_width(), k = g.kernel;
  for (int n = 0; n < g.batch; ++n)
    for (int o = 0; o < g.out_channels; ++o)
      for (int oh = 0; oh < Ho; ++oh)
        for (int ow = 0; ow < Wo; ++ow) {
          double sum = b[o];
          for (int c = 0; c < g.in_channels; ++c)
            for (int ki = 0; ki < k; ++ki)
              for (int kj = 0; kj < k; ++kj) {
                const int ih = oh * g.stride - g.padding + ki, iw = ow * g.stride - g.padding + kj;
                if (ih < 0 || ih >= g.in_height || iw < 0 || iw >= g.in_width) continue;
                sum += double(x[((int64_t(n) * g.in_channels + c) * g.in_height + ih) * g.in_width +
                                iw]) *
                       w[((int64_t(o) * g.in_channels + c) * k + ki) * k + kj];
              }
          y[((int64_t(n) * g.out_channels + o) * Ho + oh) * Wo + ow] = float(sum);
        }
}

void linear_forward(int batch, int in_features, int out_features, const float* x, const float* w,
                    const float* b, float* y, bool relu) {
  const int64_t I = in_features, O = out_features;
  // y[N,O] += x[N,I] · w[O,I]^T, each thread computing a block of y's columns. Always inside a
  // parallel region, even for a small GEMM: outside one, the OpenMP OpenBLAS threads a GEMM above
  // its own threshold (~262k multiply-adds), in its own split, which changes the result's bits.
  for (int n = 0; n < batch; ++n) std::copy(b, b + out_features, y + int64_t(n) * out_features);
#pragma omp parallel
  {
    const ThreadBlock block = thread_block(O, omp_get_thread_num(), omp_get_num_threads());
    if (block.size() > 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, int(block.size()), int(I), 1.0f,
                  x, int(I), w + block.begin * I, int(I), 1.0f, y + block.begin, int(O));
  }
  if (relu) relu_forward(int64_t(batch) * out_features, y, y);
}

void linear_backward(int batch, int in_features, int out_features, const float* x, const float* w,
                     const float* dy, float* dx, float* dw, float* db) {
  const int64_t I = in_features, O = out_features;
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    // dW[o0:o1, I] = dy[N, o0:o1]^T · x[N,I]; db[o0:o1] likewise from dy's columns.
    const ThreadBlock rows = thread_block(O, t, nt);
    if (rows.size() > 0)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(rows.size()), int(I), batch, 1.0f,
                  dy + rows.begin, int(O), x, int(I), 0.0f, dw + rows.begin * I, int(I));
    for (int64_t o = rows.begin; o < rows.end; ++o) {
      double sum = 0.0;
      for (int n = 0; n < batch; ++n) sum += dy[int64_t(n) * O + o];
      db[o] = float(sum);
    }
    if (dx) {
      // dx[N, i0:i1] = dy[N,O] · W[O, i0:i1]
      const ThreadBlock cols = thread_block(I, t, nt);
      if (cols.size() > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, int(cols.size()), int(O),
                    1.0f, dy, int(O), w + cols.begin, int(I), 0.0f, dx + cols.begin, int(I));
    }
  }
}

void relu_forward(int64_t n, const float* x, float* y) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void relu_backward(int64_t n, const float* y, const float* dy, float* dx) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void maxpool2d_forward(const PoolGeometry& g, const float* x, float* y, int32_t* argmax) {
  const int Ho = g.out_height(), Wo = g.out_width(), H = g.in_height, W = g.in_width;
  const int64_t planes = int64_t(g.batch) * g.channels;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* in = x + pl * H * W;
    float* out = y + pl * Ho * Wo;
    int32_t* arg = argmax + pl * Ho * Wo;
    for (int oh = 0; oh < Ho; ++oh)
      for (int ow = 0; ow < Wo; ++ow) {
        int best = (oh * g.stride) * W + ow * g.stride;
        float best_value = in[best];
        for (int ki = 0; ki < g.kernel; ++ki)
          for (int kj = 0; kj < g.kernel; ++kj) {
            const int idx = (oh * g.stride + ki) * W + ow * g.stride + kj;
            // NaN propagates as in PyTorch: the first NaN in the window becomes the max.
            const float v = in[idx];
            if (!std::isnan(best_value) && (v > best_value || std::isnan(v))) {
              best_value = v;
              best = idx;
            }
          }
        out[oh * Wo + ow] = best_value;
        arg[oh * Wo + ow] = best;
      }
  }
}

void maxpool2d_backward(const PoolGeometry& g, const float* dy, const int32_t* argmax, float* dx) {
  const int Ho = g.out_height(), Wo = g.out_width(), H = g.in_height, W = g.in_width;
  const int64_t planes = int64_t(g.batch) * g.channels;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* d = dx + pl * H * W;
    std::fill(d, d + int64_t(H) * W, 0.0f);
    const float* dout = dy + pl * Ho * Wo;
    const int32_t* arg = argmax + pl * Ho * Wo;
    for (int64_t i = 0; i < int64_t(Ho) * Wo; ++i) d[arg[i]] += dout[i];
  }
}

void gather_normalize(int64_t count, int channels, int64_t plane, const uint8_t* pixels,
                      const int32_t* index, const float* mean, const float* std, float* out) {
  const int64_t image = int64_t(channels) * plane;
  for (int c = 0; c < channels; ++c) {
    // A 256-entry table computed with the op's exact float expression: the same bits as
    // evaluating it per pixel, at a fraction of the cost (and on the stack: no allocation).
    float table[256];
    for (int v = 0; v < 256; ++v) table[v] = (float(v) / 255.0f - mean[c]) / std[c];
#pragma omp parallel for schedule(static) if (count * plane > 65536)
    for (int64_t i = 0; i < count; ++i) {
      const uint8_t* src = pixels + int64_t(index[i]) * image + c * plane;
      float* dst = out + i * image + c * plane;
      for (int64_t p = 0; p < plane; ++p) dst[p] = table[src[p]];
    }
  }
}

}  // namespace gputrain::cpu
