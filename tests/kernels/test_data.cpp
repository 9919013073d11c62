// kernels/data.cu under the host emulation: the batch gather + normalize vs
// cpu::gather_normalize (bit for bit), the label gather, and the device step counter.
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "data.cu"
// clang-format on
#include "gputrain/ops.hpp"

namespace gk = gputrain::kernels;
using namespace kernel_test;

namespace {

std::vector<uint8_t> random_pixels(size_t n, uint64_t seed) {
  gputrain::Rng rng(seed);
  std::vector<uint8_t> p(n);
  for (auto& v : p) v = uint8_t(rng.below(256));
  return p;
}

}  // namespace

TEST_CASE("gather_batch normalizes exactly as the CPU from a device step state", "[kernels]") {
  struct Case {
    int images, channels, height, width, count;
  };
  const Case cases[] = {{10, 1, 28, 28, 1},
                        {50, 3, 32, 32, 17},
                        {40, 1, 5, 5, 40},
                        {30, 2, 3, 7, 9},
                        {300, 3, 32, 32, 256}};
  for (const Case& c : cases)
    for (bool use_state : {false, true})
      for (bool use_order : {true, false})
        for (int misalign : {0, 1}) {  // 1: pixels one byte and out one float off alignment
          INFO("images " << c.images << ", " << c.channels << "x" << c.height << "x" << c.width
                         << ", count " << c.count << ", state " << use_state << ", order "
                         << use_order << ", misaligned " << misalign);
          const int64_t plane = int64_t(c.height) * c.width;
          // The large case once: state, order, aligned.
          if (c.count > 100 && (!use_state || !use_order || misalign)) continue;
          const size_t image = size_t(c.channels) * size_t(plane);
          const auto pixel_data = random_pixels(size_t(c.images) * image + 1, 61 + image);
          const uint8_t* pixels = pixel_data.data() + misalign;
          const auto labels = random_ints(size_t(c.images), 62, 10);
          const auto order = gputrain::epoch_order(c.images, 63, 0, true);
          std::vector<float> mean(size_t(c.channels)), stdv(size_t(c.channels));
          for (int ch = 0; ch < c.channels; ++ch) {
            mean[size_t(ch)] = 0.2f + 0.1f * float(ch);
            stdv[size_t(ch)] = 0.3f + 0.07f * float(ch);
          }
          // The batch starts at position s of the order: state->first + first.
          const int64_t s = c.images - c.count;
          gk::StepState state{use_state ? s - s / 2 : 0, 5};
          const int64_t first = use_state ? s / 2 : s;
          std::vector<int32_t> index(size_t(c.count));
          std::vector<int32_t> want_labels(size_t(c.count));
          for (int i = 0; i < c.count; ++i) {
            index[size_t(i)] = use_order ? order[size_t(s + i)] : int32_t(s + i);
            want_labels[size_t(i)] = labels[size_t(index[size_t(i)])];
          }
          std::vector<float> want(size_t(c.count) * image);
          gputrain::cpu::gather_normalize(c.count, c.channels, plane, pixels, index.data(),
                                          mean.data(), stdv.data(), want.data());
          auto run = [&] {
            std::vector<float> out = poisoned(want.size() + 1);
            std::vector<int32_t> batch_labels(size_t(c.count), -1);
            gk::launch_gather_batch(pixels, labels.data(), use_order ? order.data() : nullptr,
                                    use_state ? &state : nullptr, first, c.count, c.channels, plane,
                                    mean.data(), stdv.data(), out.data() + misalign,
                                    batch_labels.data(), nullptr);
            expect_equal(std::vector<float>(out.begin() + misalign,
                                            out.begin() + misalign + std::ptrdiff_t(want.size())),
                         want, "normalized batch");
            expect_equal(batch_labels, want_labels, "batch labels");
          };
          if (want.size() < 20000)
            for_each_schedule(run);
          else
            run();
        }
}

TEST_CASE("advance_step moves the batch window and the gather follows it", "[kernels]") {
  const int images = 20, count = 6;
  const auto pixels = random_pixels(size_t(images) * 4, 7);
  std::vector<int32_t> labels(static_cast<size_t>(images));
  for (int i = 0; i < images; ++i) labels[size_t(i)] = i;
  const auto order = gputrain::epoch_order(images, 8, 0, true);
  const float mean = 0.5f, stdv = 0.25f;
  gk::StepState state{0, 0};
  for (int step = 0; step < 3; ++step) {
    std::vector<float> out(size_t(count) * 4);
    std::vector<int32_t> batch_labels(size_t(count), -1);
    gk::launch_gather_batch(pixels.data(), labels.data(), order.data(), &state, 0, count, 1, 4,
                            &mean, &stdv, out.data(), batch_labels.data(), nullptr);
    for (int i = 0; i < count; ++i)
      CHECK(batch_labels[size_t(i)] == order[size_t(step * count + i)]);
    gk::launch_advance_step(&state, count, nullptr);
  }
  CHECK(state.first == 3 * count);
  CHECK(state.step == 3);
  // Labels are optional.
  std::vector<float> out(4);
  CHECK_NOTHROW(gk::launch_gather_batch(pixels.data(), nullptr, nullptr, nullptr, 0, 1, 1, 4, &mean,
                                        &stdv, out.data(), nullptr, nullptr));
}
