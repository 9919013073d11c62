// gputrain_kernel_bench: each hand-written CUDA kernel (kernels/launchers.hpp) timed against its
// CPU twin (include/gputrain/ops.hpp, or the kernel test's reference loop where the CPU engine
// fuses the op into a larger one) at the reference sizes: the tutorial CNN (conv 16, conv 32, fc
// 256, fc 10; 3×3 convs, padding 1) at batch 64 on 1×28×28 (MNIST) and 3×32×32 (CIFAR-10) inputs.
// Pooling, which the tutorial net lacks, is timed on its conv1 output (2×2, stride 2).
//
// One line per kernel and size: GPU µs (cudaEvents around --reps back-to-back launches, after a
// warm-up), CPU µs (std::chrono, --cpu-reps calls), their ratio, the GPU's effective bandwidth
// (bytes each launch must read + write / time) and the largest |GPU − CPU| difference of one run
// from the same inputs (a sanity check; tests/kernels holds the real correctness tests).
// Runs in seconds. Exit 0; 4 with "SKIPPED: no CUDA device" where none is usable (ctest label
// `bench`, SKIP_RETURN_CODE 4); 1 on a CUDA error.
//
//   build/tests/gputrain_kernel_bench [--reps N] [--cpu-reps N]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gputrain/geometry.hpp"
#include "gputrain/ops.hpp"
#include "gputrain/optimizer.hpp"
#include "gputrain/rng.hpp"
#include "launchers.hpp"

namespace {

namespace k = gputrain::kernels;
namespace cpu = gputrain::cpu;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A device copy of a host vector, freed on scope exit.
template <typename T>
class Dev {
 public:
  explicit Dev(const std::vector<T>& host) : n_(host.size()) {
    check(cudaMalloc(&p_, std::max<size_t>(n_, 1) * sizeof(T)), "cudaMalloc");
    upload(host);
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { cudaFree(p_); }
  void upload(const std::vector<T>& host) {
    check(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> download() const {
    std::vector<T> out(n_);
    check(cudaMemcpy(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return out;
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

std::vector<float> random_floats(size_t n, uint64_t seed) {
  gputrain::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

template <typename A, typename B>
double max_abs_diff(const std::vector<A>& a, const std::vector<B>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
  return worst;
}

// One benchmark case: reset() restores the inputs on both sides; gpu() launches on the stream;
// cpu() runs the twin; diff() compares the outputs of one run of each from the same inputs.
struct Case {
  Case(std::string k, std::string sz, double b)
      : kernel(std::move(k)), size(std::move(sz)), bytes(b) {}
  std::string kernel, size;
  double bytes = 0;  // what one launch must read + write
  std::function<void()> reset = [] {}, gpu, cpu;
  std::function<double()> diff;
};

struct Options {
  int reps = 200, cpu_reps = 20;
};

void run_case(const Case& c, cudaStream_t stream, const Options& o) {
  c.reset();
  c.gpu();
  check(cudaStreamSynchronize(stream), c.kernel.c_str());
  c.cpu();
  const double diff = c.diff();
  for (int i = 0; i < 3; ++i) c.gpu();  // warm-up
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  check(cudaEventRecord(start, stream), "cudaEventRecord");
  for (int i = 0; i < o.reps; ++i) c.gpu();
  check(cudaEventRecord(stop, stream), "cudaEventRecord");
  check(cudaEventSynchronize(stop), c.kernel.c_str());
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  const double gpu_us = 1000.0 * double(ms) / o.reps;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < o.cpu_reps; ++i) c.cpu();
  const double cpu_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
      o.cpu_reps;
  std::printf("%-26s %-22s %10.2f %10.1f %9.1fx %9.1f %10.2e\n", c.kernel.c_str(), c.size.c_str(),
              gpu_us, cpu_us, cpu_us / gpu_us, c.bytes / (gpu_us * 1e3), diff);
  std::fflush(stdout);
}

// The cases at one input shape (the tutorial net at batch B).
// A layer output the bias kernels run on: [B, channels, plane] (plane = 1 for linear layers).
struct Site {
  const char* name;
  int channels;
  bool spatial;
  bool fused;  // bias gradient with the ReLU backward
};

std::vector<Case> cases_for(int C, int H, int W, int B, cudaStream_t s) {
  std::vector<Case> out;
  const std::string in = std::to_string(C) + "x" + std::to_string(H) + "x" + std::to_string(W);
  const int64_t plane = int64_t(H) * W;
  // Owned state lives in shared_ptrs captured by the lambdas.
  auto fl = [](size_t n, uint64_t seed) {
    return std::make_shared<std::vector<float>>(random_floats(n, seed));
  };

  // bias + ReLU (in place) on conv1's output [B,16,H,W] and fc1's [B,256].
  for (const Site& site : {Site{"conv1", 16, true, true}, Site{"fc1", 256, false, true}}) {
    const std::string name = site.name;
    const int ch = site.channels;
    const int64_t pl = site.spatial ? plane : 1;
    const size_t n = size_t(B) * ch * pl;
    auto y0 = fl(n, 1), b = fl(size_t(ch), 2), yc = fl(n, 0);
    auto dy = std::make_shared<Dev<float>>(*y0), db = std::make_shared<Dev<float>>(*b);
    Case c{"bias_act+relu",
           name + " " + std::to_string(B) + "x" + std::to_string(ch) +
               (pl > 1 ? "x" + std::to_string(H) + "x" + std::to_string(W) : ""),
           2.0 * n * 4};
    c.reset = [=] {
      dy->upload(*y0);
      *yc = *y0;
    };
    c.gpu = [=] { k::launch_bias_act(dy->get(), db->get(), B, ch, pl, true, s); };
    c.cpu = [=] {
      for (int64_t i = 0; i < int64_t(n); ++i) (*yc)[size_t(i)] += (*b)[size_t((i / pl) % ch)];
      cpu::relu_forward(int64_t(n), yc->data(), yc->data());
    };
    c.diff = [=] { return max_abs_diff(dy->download(), *yc); };
    out.push_back(c);
  }
  // ReLU forward / backward (a stand-alone ReLU) on conv1's output.
  {
    const size_t n = size_t(B) * 16 * plane;
    auto x = fl(n, 3), g = fl(n, 4), yc = fl(n, 0);
    auto dx = std::make_shared<Dev<float>>(*x), dyv = std::make_shared<Dev<float>>(*x);
    auto dg = std::make_shared<Dev<float>>(*g), dd = std::make_shared<Dev<float>>(*g);
    const std::string size =
        std::to_string(B) + "x16x" + std::to_string(H) + "x" + std::to_string(W);
    Case f{"relu_forward", size, 2.0 * n * 4};
    f.reset = [] {};
    f.gpu = [=] { k::launch_relu_forward(dx->get(), dyv->get(), int64_t(n), s); };
    f.cpu = [=] { cpu::relu_forward(int64_t(n), x->data(), yc->data()); };
    f.diff = [=] { return max_abs_diff(dyv->download(), *yc); };
    out.push_back(f);
    Case b{"relu_backward", size, 3.0 * n * 4};
    b.reset = [] {};
    b.gpu = [=] { k::launch_relu_backward(dx->get(), dg->get(), dd->get(), int64_t(n), s); };
    b.cpu = [=] { cpu::relu_backward(int64_t(n), x->data(), g->data(), yc->data()); };
    b.diff = [=] { return max_abs_diff(dd->download(), *yc); };
    out.push_back(b);
  }
  // BF16 casts (train.precision bf16): conv1's output and fc1's weights [256, 32·H·W].
  for (const auto& [what, count] :
       {std::pair<std::string, size_t>{
            std::to_string(B) + "x16x" + std::to_string(H) + "x" + std::to_string(W),
            size_t(B) * 16 * plane},
        std::pair<std::string, size_t>{"fc1 w 256x" + std::to_string(32 * plane),
                                       size_t(256) * 32 * plane}}) {
    const size_t n = count;
    auto x = fl(n, 9);
    auto dx = std::make_shared<Dev<float>>(*x), dback = std::make_shared<Dev<float>>(*x);
    auto d16 = std::make_shared<Dev<uint16_t>>(std::vector<uint16_t>(n));
    auto c16 = std::make_shared<std::vector<uint16_t>>(n);
    auto cback = fl(n, 0);
    Case r{"round_to_bf16", what, 6.0 * n};
    r.gpu = [=] { k::launch_round_to_bf16(int64_t(n), dx->get(), d16->get(), s); };
    r.cpu = [=] { cpu::round_to_bf16(int64_t(n), x->data(), c16->data()); };
    r.diff = [=] { return max_abs_diff(d16->download(), *c16); };
    out.push_back(r);
    Case w{"bf16_to_float", what, 6.0 * n};
    w.gpu = [=] { k::launch_bf16_to_float(int64_t(n), d16->get(), dback->get(), s); };
    w.cpu = [=] { cpu::bf16_to_float(int64_t(n), c16->data(), cback->data()); };
    w.diff = [=] { return max_abs_diff(dback->download(), *cback); };
    out.push_back(w);
  }
  // Bias gradient fused with the ReLU backward (conv1, conv2, fc1) and plain (fc2).
  for (const Site& site : {Site{"conv1", 16, true, true}, Site{"conv2", 32, true, true},
                           Site{"fc1", 256, false, true}, Site{"fc2", 10, false, false}}) {
    const std::string name = site.name;
    const int ch = site.channels;
    const int64_t pl = site.spatial ? plane : 1;
    const bool fused = site.fused;
    const size_t n = size_t(B) * ch * pl;
    auto g = fl(n, 5), y = fl(n, 6);
    auto dbc = std::make_shared<std::vector<double>>(size_t(ch));
    auto dxc = fl(n, 0);
    auto dg = std::make_shared<Dev<float>>(*g), dy = std::make_shared<Dev<float>>(*y);
    auto ddx = std::make_shared<Dev<float>>(*g),
         ddb = std::make_shared<Dev<float>>(std::vector<float>(size_t(ch)));
    const size_t ws_bytes = k::bias_grad_workspace_bytes(B, ch, pl);
    auto ws = std::make_shared<Dev<unsigned char>>(std::vector<unsigned char>(ws_bytes));
    Case c{fused ? "bias_grad+relu_backward" : "bias_grad",
           name + " " + std::to_string(B) + "x" + std::to_string(ch) +
               (pl > 1 ? "x" + std::to_string(H) + "x" + std::to_string(W) : ""),
           (fused ? 3.0 : 1.0) * n * 4};
    c.reset = [] {};
    c.gpu = [=] {
      k::launch_bias_grad(dg->get(), fused ? dy->get() : nullptr, fused ? ddx->get() : nullptr,
                          ddb->get(), B, ch, pl, ws->get(), ws_bytes, s);
    };
    c.cpu = [=] {
      if (fused) cpu::relu_backward(int64_t(n), y->data(), g->data(), dxc->data());
      const std::vector<float>& src = fused ? *dxc : *g;
      std::fill(dbc->begin(), dbc->end(), 0.0);
      for (int64_t i = 0; i < int64_t(n); ++i) (*dbc)[size_t((i / pl) % ch)] += src[size_t(i)];
    };
    c.diff = [=] { return max_abs_diff(ddb->download(), *dbc); };
    out.push_back(c);
  }
  // Max pooling 2×2/2 on conv1's output.
  {
    const gputrain::PoolGeometry g{B, 16, H, W, 2, 2};
    const size_t nx = size_t(B) * 16 * plane, ny = size_t(B) * 16 * g.out_height() * g.out_width();
    auto x = fl(nx, 7), dy = fl(ny, 8), yc = fl(ny, 0), dxc = fl(nx, 0);
    auto ac = std::make_shared<std::vector<int32_t>>(ny);
    auto dx_dev = std::make_shared<Dev<float>>(*x), dy_dev = std::make_shared<Dev<float>>(*yc);
    auto da = std::make_shared<Dev<int32_t>>(*ac);
    auto dgy = std::make_shared<Dev<float>>(*dy);
    auto dgx = std::make_shared<Dev<float>>(*dxc);
    const std::string size =
        std::to_string(B) + "x16x" + std::to_string(H) + "x" + std::to_string(W);
    Case f{"maxpool2d_forward", size, double(nx) * 4 + double(ny) * 8};
    f.reset = [] {};
    f.gpu = [=] { k::launch_maxpool2d_forward(g, dx_dev->get(), dy_dev->get(), da->get(), s); };
    f.cpu = [=] { cpu::maxpool2d_forward(g, x->data(), yc->data(), ac->data()); };
    f.diff = [=] { return max_abs_diff(dy_dev->download(), *yc); };
    out.push_back(f);
    Case b{"maxpool2d_backward", size, double(ny) * 8 + double(nx) * 4};
    b.reset = [] {};
    b.gpu = [=] { k::launch_maxpool2d_backward(g, dgy->get(), da->get(), dgx->get(), s); };
    b.cpu = [=] { cpu::maxpool2d_backward(g, dy->data(), ac->data(), dxc->data()); };
    b.diff = [=] { return max_abs_diff(dgx->download(), *dxc); };
    out.push_back(b);
  }
  // batchnorm2d (training forward, backward), average pooling 2×2/2 and dropout (p = 0.5) on
  // conv1's output [B,16,H,W]; global average pooling on conv2's [B,32,H,W].
  {
    const int ch = 16;
    const size_t n = size_t(B) * ch * plane;
    const std::string size =
        std::to_string(B) + "x16x" + std::to_string(H) + "x" + std::to_string(W);
    auto x = fl(n, 11), dy = fl(n, 12), yc = fl(n, 0), dxc = fl(n, 0);
    auto w = std::make_shared<std::vector<float>>(size_t(ch), 1.5f), b = fl(size_t(ch), 13);
    auto stats = fl(4 * size_t(ch), 0);  // running mean, var; save mean, invstd
    auto dx_dev = std::make_shared<Dev<float>>(*x), ddy = std::make_shared<Dev<float>>(*dy);
    auto dy_out = std::make_shared<Dev<float>>(*yc), ddx = std::make_shared<Dev<float>>(*dxc);
    auto dw = std::make_shared<Dev<float>>(*w), db = std::make_shared<Dev<float>>(*b);
    auto hgrads = fl(2 * size_t(ch), 0);
    auto dstats = std::make_shared<Dev<float>>(*stats),
         dgrads = std::make_shared<Dev<float>>(*hgrads);
    const size_t ws_bytes = k::batchnorm_workspace_bytes(B, ch, plane);
    auto ws = std::make_shared<Dev<unsigned char>>(std::vector<unsigned char>(ws_bytes));
    // Statistics: [running mean | running var | batch mean | batch invstd], each [16].
    Case f{"batchnorm2d_forward_train", size, double(n) * 12};
    f.reset = [=] { dstats->upload(*stats); };
    f.gpu = [=] {
      float* st = dstats->get();
      k::launch_batchnorm2d_forward_train(B, ch, plane, dx_dev->get(), dw->get(), db->get(), 1e-5f,
                                          0.1f, st, st + ch, dy_out->get(), st + 2 * ch,
                                          st + 3 * ch, ws->get(), ws_bytes, s);
    };
    f.cpu = [=] {
      float* h = stats->data();
      cpu::batchnorm2d_forward_train(B, ch, plane, x->data(), w->data(), b->data(), 1e-5f, 0.1f, h,
                                     h + ch, yc->data(), h + 2 * ch, h + 3 * ch);
    };
    f.diff = [=] { return max_abs_diff(dy_out->download(), *yc); };
    out.push_back(f);
    Case g{"batchnorm2d_backward", size, double(n) * 12};
    g.gpu = [=] {
      float* d = dstats->get();
      float* grads = dgrads->get();
      k::launch_batchnorm2d_backward(B, ch, plane, dx_dev->get(), dw->get(), d + 2 * ch, d + 3 * ch,
                                     ddy->get(), ddx->get(), grads, grads + ch, ws->get(), ws_bytes,
                                     s);
    };
    g.cpu = [=] {
      const float* h = stats->data();
      cpu::batchnorm2d_backward(B, ch, plane, x->data(), w->data(), h + 2 * ch, h + 3 * ch,
                                dy->data(), dxc->data(), hgrads->data(), hgrads->data() + ch);
    };
    g.diff = [=] { return max_abs_diff(ddx->download(), *dxc); };
    out.push_back(g);

    const gputrain::PoolGeometry pg{B, ch, H, W, 2, 2};
    const size_t ny = size_t(B) * ch * pg.out_height() * pg.out_width();
    auto pyc = fl(ny, 0), pdy = fl(ny, 14);
    auto dpy = std::make_shared<Dev<float>>(*pyc), dpdy = std::make_shared<Dev<float>>(*pdy);
    Case af{"avgpool2d_forward", size, double(n + ny) * 4};
    af.gpu = [=] { k::launch_avgpool2d_forward(pg, dx_dev->get(), dpy->get(), s); };
    af.cpu = [=] { cpu::avgpool2d_forward(pg, x->data(), pyc->data()); };
    af.diff = [=] { return max_abs_diff(dpy->download(), *pyc); };
    out.push_back(af);
    Case ab{"avgpool2d_backward", size, double(n + ny) * 4};
    ab.gpu = [=] { k::launch_avgpool2d_backward(pg, dpdy->get(), ddx->get(), s); };
    ab.cpu = [=] { cpu::avgpool2d_backward(pg, pdy->data(), dxc->data()); };
    ab.diff = [=] { return max_abs_diff(ddx->download(), *dxc); };
    out.push_back(ab);

    // Samples 0..B-1 of epoch 1, layer 3.
    std::vector<int32_t> order(static_cast<size_t>(B));
    for (int i = 0; i < B; ++i) order[size_t(i)] = 7 * i;
    auto ho = std::make_shared<std::vector<int32_t>>(order);
    auto dord = std::make_shared<Dev<int32_t>>(order);
    auto dstate = std::make_shared<Dev<k::StepState>>(std::vector<k::StepState>{{0, 0, 1}});
    auto mc = std::make_shared<std::vector<uint8_t>>(n);
    auto dm = std::make_shared<Dev<uint8_t>>(*mc);
    Case d{"dropout_forward", size, double(n) * 9};
    d.gpu = [=] {
      k::launch_dropout_forward(int64_t(n), int64_t(ch) * plane, dord->get(), dstate->get(), 42, 3,
                                0.5f, dx_dev->get(), dy_out->get(), dm->get(), s);
    };
    d.cpu = [=] {
      cpu::dropout_forward(int64_t(n), int64_t(ch) * plane, ho->data(), 42, 1, 3, 0.5f, x->data(),
                           yc->data(), mc->data());
    };
    d.diff = [=] { return max_abs_diff(dy_out->download(), *yc); };
    out.push_back(d);

    const int ch2 = 32;
    const size_t n2 = size_t(B) * ch2 * plane;
    auto x2 = fl(n2, 15), y2 = fl(size_t(B) * ch2, 0);
    auto dx2 = std::make_shared<Dev<float>>(*x2), dy2 = std::make_shared<Dev<float>>(*y2);
    Case gp{"global_avgpool_forward",
            std::to_string(B) + "x32x" + std::to_string(H) + "x" + std::to_string(W),
            double(n2) * 4};
    gp.gpu = [=] { k::launch_global_avgpool_forward(B, ch2, plane, dx2->get(), dy2->get(), s); };
    gp.cpu = [=] { cpu::global_avgpool_forward(B, ch2, plane, x2->data(), y2->data()); };
    gp.diff = [=] { return max_abs_diff(dy2->download(), *y2); };
    out.push_back(gp);
  }
  // Softmax cross-entropy (fused forward + backward, loss and correct accumulated) on fc2's [B,10].
  {
    const int K = 10;
    auto logits = fl(size_t(B) * K, 9), dlc = fl(size_t(B) * K, 0);
    gputrain::Rng rng(10);
    std::vector<int32_t> labels(static_cast<size_t>(B));
    for (int32_t& l : labels) l = int32_t(rng.below(K));
    auto dl = std::make_shared<Dev<float>>(*logits), dd = std::make_shared<Dev<float>>(*dlc);
    auto dlab = std::make_shared<Dev<int32_t>>(labels);
    auto loss = std::make_shared<Dev<double>>(std::vector<double>(1));
    auto correct = std::make_shared<Dev<unsigned long long>>(std::vector<unsigned long long>(1));
    const size_t ws_bytes = k::softmax_xent_workspace_bytes(B);
    auto ws = std::make_shared<Dev<unsigned char>>(std::vector<unsigned char>(ws_bytes));
    auto lab = std::make_shared<std::vector<int32_t>>(labels);
    Case c{"softmax_xent", "fc2 " + std::to_string(B) + "x10", double(B) * K * 8 + B * 4};
    c.reset = [] {};
    c.gpu = [=] {
      k::launch_softmax_xent(B, K, dl->get(), dlab->get(), float(B), dd->get(), nullptr,
                             loss->get(), correct->get(), nullptr, ws->get(), ws_bytes, s);
    };
    c.cpu = [=] {
      int64_t right = 0;
      cpu::softmax_cross_entropy(B, K, logits->data(), lab->data(), float(B), dlc->data(), nullptr,
                                 &right);
    };
    c.diff = [=] { return max_abs_diff(dd->download(), *dlc); };
    out.push_back(c);
  }
  // SGD (momentum 0.9, weight decay, Nesterov) over the tutorial net's flat parameters.
  {
    const int64_t P = int64_t(16) * C * 9 + 16 + 32 * 16 * 9 + 32 + int64_t(256) * 32 * plane +
                      256 + 10 * 256 + 10;
    auto w = fl(size_t(P), 11), g = fl(size_t(P), 12), v = fl(size_t(P), 13);
    auto wc = std::make_shared<std::vector<float>>(*w),
         vc = std::make_shared<std::vector<float>>(*v);
    auto dw = std::make_shared<Dev<float>>(*w), dg = std::make_shared<Dev<float>>(*g);
    auto dv = std::make_shared<Dev<float>>(*v);
    auto table = std::make_shared<Dev<gputrain::StepHyper>>(
        std::vector<gputrain::StepHyper>{{0.01f, 1.0f, 1.0f}});
    auto state = std::make_shared<Dev<k::StepState>>(std::vector<k::StepState>{{0, 1}});
    const k::SgdHyper constants{0.0f, 0.9f, 5e-4f, 1};
    const cpu::SgdParams p{0.01f, 0.9f, 5e-4f, true};
    Case c{"sgd_step", "params " + std::to_string(P), double(P) * 5 * 4};
    c.reset = [=] {
      dw->upload(*w);
      dv->upload(*v);
      *wc = *w;
      *vc = *v;
    };
    c.gpu = [=] {
      k::launch_sgd_step(P, dw->get(), dg->get(), dv->get(), constants, table->get(), 1,
                         state->get(), nullptr, s);
    };
    c.cpu = [=] { cpu::sgd_update(P, wc->data(), g->data(), vc->data(), p); };
    c.diff = [=] { return max_abs_diff(dw->download(), *wc); };
    out.push_back(c);
  }
  // Batch gather + normalize from a resident data set of 4096 images, in a shuffled order.
  {
    const int64_t images = 4096;
    gputrain::Rng rng(14);
    std::vector<uint8_t> pixels(size_t(images) * C * plane);
    for (uint8_t& p : pixels) p = uint8_t(rng.below(256));
    std::vector<int32_t> labels(static_cast<size_t>(images)), order(static_cast<size_t>(B));
    for (int32_t& l : labels) l = int32_t(rng.below(10));
    for (int32_t& o : order) o = int32_t(rng.below(uint64_t(images)));
    std::vector<float> mean(size_t(C), 0.45f), stdv(size_t(C), 0.27f);
    auto dp = std::make_shared<Dev<uint8_t>>(pixels);
    auto dlab = std::make_shared<Dev<int32_t>>(labels);
    auto dord = std::make_shared<Dev<int32_t>>(order);
    auto dm = std::make_shared<Dev<float>>(mean), ds = std::make_shared<Dev<float>>(stdv);
    auto dout = std::make_shared<Dev<float>>(std::vector<float>(size_t(B) * C * plane));
    auto dbl = std::make_shared<Dev<int32_t>>(std::vector<int32_t>(size_t(B)));
    auto hp = std::make_shared<std::vector<uint8_t>>(pixels);
    auto ho = std::make_shared<std::vector<int32_t>>(order);
    auto hm = std::make_shared<std::vector<float>>(mean),
         hs = std::make_shared<std::vector<float>>(stdv);
    auto hout = fl(size_t(B) * C * plane, 0);
    Case c{"gather_batch", std::to_string(B) + "x" + in, double(B) * C * plane * 5 + B * 8};
    c.reset = [] {};
    c.gpu = [=] {
      k::launch_gather_batch(dp->get(), dlab->get(), dord->get(), nullptr, 0, B, C, plane,
                             dm->get(), ds->get(), dout->get(), dbl->get(), s);
    };
    c.cpu = [=] {
      cpu::gather_normalize(B, C, plane, hp->data(), ho->data(), hm->data(), hs->data(),
                            hout->data());
    };
    c.diff = [=] { return max_abs_diff(dout->download(), *hout); };
    out.push_back(c);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      o.reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--cpu-reps" && i + 1 < argc) {
      o.cpu_reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: gputrain_kernel_bench [--reps N] [--cpu-reps N]\n");
      return 2;
    }
  }
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none");
    return 4;
  }
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    cudaStream_t stream = nullptr;
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    std::printf("gputrain kernel bench on %s (sm_%d%d): GPU %d launches, CPU %d calls\n", prop.name,
                prop.major, prop.minor, o.reps, o.cpu_reps);
    std::printf("%-26s %-22s %10s %10s %10s %9s %10s\n", "kernel", "size", "GPU us", "CPU us",
                "CPU/GPU", "GB/s", "max|d|");
    for (auto [c, hw] : {std::pair<int, int>{1, 28}, std::pair<int, int>{3, 32}}) {
      std::printf("-- tutorial net, batch 64, input %dx%dx%d\n", c, hw, hw);
      for (const Case& bench : cases_for(c, hw, hw, 64, stream)) run_case(bench, stream, o);
    }
    cudaStreamDestroy(stream);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "FAILED: %s\n", ex.what());
    return 1;
  }
  return 0;
}
