// kernels/softmax_xent.cu under the host emulation vs cpu::softmax_cross_entropy.
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "softmax_xent.cu"
// clang-format on
#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using namespace kernel_test;

namespace {

struct Reference {
  std::vector<float> dlogits;
  std::vector<int32_t> predicted;
  double loss = 0;
  int64_t correct = 0;
  std::vector<unsigned long long> confusion;
};

Reference reference(int batch, int classes, const std::vector<float>& logits,
                    const std::vector<int32_t>& labels, float grad_scale,
                    float label_smoothing = 0.0f) {
  Reference r;
  r.dlogits.resize(size_t(batch) * classes);
  r.predicted.resize(size_t(batch));
  r.loss = gputrain::cpu::softmax_cross_entropy(batch, classes, logits.data(), labels.data(),
                                                grad_scale, r.dlogits.data(), r.predicted.data(),
                                                &r.correct, label_smoothing);
  r.confusion.assign(size_t(classes) * classes, 0);
  for (int n = 0; n < batch; ++n)
    ++r.confusion[size_t(labels[size_t(n)]) * classes + size_t(r.predicted[size_t(n)])];
  return r;
}

// logits [batch, classes]: random in ±scale, or small integers (ties for the argmax).
std::vector<float> make_logits(size_t n, uint64_t seed, bool ties, float scale) {
  auto z = random_floats(n, seed, -scale, scale);
  if (ties)
    for (float& v : z) v = std::floor(v / scale * 2.0f);
  return z;
}

}  // namespace

TEST_CASE("softmax_xent matches the CPU and accumulates on the device", "[kernels]") {
  struct Case {
    int batch, classes;
    bool ties;
    float scale;
  };
  const Case cases[] = {{1, 1, false, 3},    {1, 10, false, 3},    {7, 3, true, 3},
                        {64, 10, false, 8},  {33, 37, true, 5},    {5, 100, false, 20},
                        {512, 10, false, 4}, {3, 1000, false, 10}, {100, 33, false, 30}};
  for (const Case& c : cases) {
    INFO("batch " << c.batch << ", classes " << c.classes << ", ties " << c.ties);
    const size_t n = size_t(c.batch) * c.classes;
    const auto logits = make_logits(n, 41 + n, c.ties, c.scale);
    const auto labels = random_ints(size_t(c.batch), 42 + n, c.classes);
    const float grad_scale = float(c.batch);
    const Reference want = reference(c.batch, c.classes, logits, labels, grad_scale);
    auto run = [&] {
      std::vector<float> dlogits = poisoned(n);
      std::vector<int32_t> predicted(size_t(c.batch), -5);
      std::vector<unsigned char> workspace(gk::softmax_xent_workspace_bytes(c.batch), 0xFF);
      std::vector<unsigned long long> confusion(size_t(c.classes) * c.classes, 3);
      double loss = 0.25;  // accumulates onto what is there
      unsigned long long correct = 2;
      gk::launch_softmax_xent(c.batch, c.classes, logits.data(), labels.data(), grad_scale,
                              dlogits.data(), predicted.data(), &loss, &correct, confusion.data(),
                              workspace.data(), workspace.size(), nullptr);
      expect_close(dlogits, want.dlogits, 1e-7, 1e-5, "dlogits");
      expect_equal(predicted, want.predicted, "predicted");
      CHECK(loss - 0.25 == Approx(want.loss).epsilon(1e-6).margin(1e-6 * c.batch));
      CHECK(correct - 2 == uint64_t(want.correct));
      for (auto& v : confusion) v -= 3;
      expect_equal(confusion, want.confusion, "confusion");
      // Again, without dlogits / predicted / confusion (evaluation): the sums accumulate.
      gk::launch_softmax_xent(c.batch, c.classes, logits.data(), labels.data(), grad_scale, nullptr,
                              nullptr, &loss, &correct, nullptr, workspace.data(), workspace.size(),
                              nullptr);
      CHECK(loss - 0.25 == Approx(2 * want.loss).epsilon(1e-6).margin(2e-6 * c.batch));
      CHECK(correct - 2 == uint64_t(2 * want.correct));
    };
    if (n < 4000)
      for_each_schedule(run);
    else
      run();
  }
}

TEST_CASE("softmax_xent with label smoothing matches the CPU's smoothed loss", "[kernels]") {
  struct Case {
    int batch, classes;
    float smoothing, scale;
  };
  const Case cases[] = {{1, 1, 0.1f, 3},   {7, 3, 0.3f, 3},     {64, 10, 0.1f, 8},
                        {33, 37, 0.2f, 5}, {3, 100, 0.05f, 20}, {5, 1000, 0.1f, 10}};
  for (const Case& c : cases) {
    INFO("batch " << c.batch << ", classes " << c.classes << ", smoothing " << c.smoothing);
    const size_t n = size_t(c.batch) * c.classes;
    const auto logits = make_logits(n, 77 + n, false, c.scale);
    const auto labels = random_ints(size_t(c.batch), 78 + n, c.classes);
    const float grad_scale = float(c.batch);
    const Reference want = reference(c.batch, c.classes, logits, labels, grad_scale, c.smoothing);
    const Reference plain = reference(c.batch, c.classes, logits, labels, grad_scale);
    if (c.classes > 1) CHECK(want.loss != plain.loss);  // the smoothing does something
    auto run = [&] {
      std::vector<float> dlogits = poisoned(n);
      std::vector<int32_t> predicted(size_t(c.batch), -5);
      std::vector<unsigned char> workspace(gk::softmax_xent_workspace_bytes(c.batch), 0xFF);
      double loss = 0;
      unsigned long long correct = 0;
      gk::launch_softmax_xent(c.batch, c.classes, logits.data(), labels.data(), grad_scale,
                              dlogits.data(), predicted.data(), &loss, &correct, nullptr,
                              workspace.data(), workspace.size(), nullptr, c.smoothing);
      expect_close(dlogits, want.dlogits, 1e-7, 1e-5, "dlogits");
      expect_equal(predicted, want.predicted, "predicted");
      CHECK(loss == Approx(want.loss).epsilon(1e-5).margin(1e-5 * c.batch));
      CHECK(correct == uint64_t(want.correct));
    };
    if (n < 4000)
      for_each_schedule(run);
    else
      run();
  }
  std::vector<float> z(4, 0.0f);
  std::vector<int32_t> l(2, 0);
  std::vector<unsigned char> workspace(gk::softmax_xent_workspace_bytes(2));
  double loss = 0;
  CHECK_THROWS_AS(
      gk::launch_softmax_xent(2, 2, z.data(), l.data(), 1.0f, nullptr, nullptr, &loss, nullptr,
                              nullptr, workspace.data(), workspace.size(), nullptr, 1.0f),
      gputrain::RuntimeFailure);
}

TEST_CASE("softmax_xent loss sum is deterministic and a bad label gives a NaN loss", "[kernels]") {
  const int batch = 300, classes = 10;
  const auto logits = make_logits(size_t(batch) * classes, 3, false, 5);
  auto labels = random_ints(size_t(batch), 4, classes);
  std::vector<unsigned char> workspace(gk::softmax_xent_workspace_bytes(batch));
  double a = 0, b = 0;
  gk::launch_softmax_xent(batch, classes, logits.data(), labels.data(), 1.0f, nullptr, nullptr, &a,
                          nullptr, nullptr, workspace.data(), workspace.size(), nullptr);
  emu::set_schedule(emu::Schedule::Shuffled, 5);
  gk::launch_softmax_xent(batch, classes, logits.data(), labels.data(), 1.0f, nullptr, nullptr, &b,
                          nullptr, nullptr, workspace.data(), workspace.size(), nullptr);
  emu::set_schedule(emu::Schedule::Forward);
  CHECK(std::memcmp(&a, &b, sizeof a) == 0);

  labels[17] = classes;  // out of range
  double loss = 0;
  unsigned long long correct = 0;
  std::vector<unsigned long long> confusion(size_t(classes) * classes, 0);
  gk::launch_softmax_xent(batch, classes, logits.data(), labels.data(), 1.0f, nullptr, nullptr,
                          &loss, &correct, confusion.data(), workspace.data(), workspace.size(),
                          nullptr);
  CHECK(std::isnan(loss));
  unsigned long long counted = 0;
  for (auto v : confusion) counted += v;
  CHECK(counted == uint64_t(batch - 1));

  CHECK_THROWS_AS(gk::launch_softmax_xent(batch, classes, logits.data(), labels.data(), 1.0f,
                                          nullptr, nullptr, &loss, nullptr, nullptr,
                                          workspace.data(), workspace.size() - 1, nullptr),
                  gputrain::RuntimeFailure);
}
