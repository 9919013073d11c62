// kernels/data.cu under the host emulation: the batch gather + normalize vs
// cpu::gather_normalize (bit for bit), the augmenting gather vs cpu::gather_augment +
// gather_normalize (bit for bit), the label gather, and the device step counter.
// The emulation header first, then the kernel sources it compiles for the host.
// clang-format off
#include "kernel_test_util.hpp"
#include "data.cu"
// clang-format on
#include <algorithm>
#include <cstdlib>

#include "gputrain/augment.hpp"
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

namespace {

// The CPU's augmented, normalized batch of order[s, s + count) for `epoch`.
std::vector<float> cpu_augmented_batch(const std::vector<uint8_t>& pixels,
                                       const std::vector<int32_t>& order, int64_t s, int count,
                                       int channels, int height, int width, int64_t epoch,
                                       const gputrain::AugmentSpec& spec, const float* mean,
                                       const float* stdv) {
  const size_t image = size_t(channels) * size_t(height) * size_t(width);
  std::vector<uint8_t> raw(size_t(count) * image);
  gputrain::cpu::gather_augment(count, channels, height, width, pixels.data(), order.data() + s,
                                epoch, spec, raw.data());
  std::vector<int32_t> positions(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) positions[size_t(i)] = i;
  std::vector<float> out(size_t(count) * image);
  gputrain::cpu::gather_normalize(count, channels, int64_t(height) * width, raw.data(),
                                  positions.data(), mean, stdv, out.data());
  return out;
}

}  // namespace

TEST_CASE("the augmenting gather equals the CPU's bit for bit, whatever the batch size",
          "[kernels]") {
  struct Case {
    int images, channels, height, width;
  };
  const Case cases[] = {{23, 3, 8, 8}, {17, 1, 5, 7}, {9, 2, 4, 3}};
  for (const Case& c : cases)
    for (uint64_t seed : {0ull, 1ull, 977ull})
      for (int epoch : {0, 1, 6})
        for (int padding : {0, 1, 4})
          for (double flip : {0.0, 0.5, 1.0}) {
            if (padding == 0 && flip == 0.0) continue;  // no augmentation: the plain gather
            const int64_t plane = int64_t(c.height) * c.width;
            const size_t image = size_t(c.channels) * size_t(plane);
            const auto pixels = random_pixels(size_t(c.images) * image, seed + 5);
            const auto labels = random_ints(size_t(c.images), 62, 10);
            const auto order = gputrain::epoch_order(c.images, seed, epoch, true);
            std::vector<float> mean(size_t(c.channels)), stdv(size_t(c.channels));
            for (int ch = 0; ch < c.channels; ++ch) {
              mean[size_t(ch)] = 0.4f - 0.1f * float(ch);
              stdv[size_t(ch)] = 0.25f + 0.05f * float(ch);
            }
            gputrain::AugmentSpec spec;
            spec.crop_padding = padding;
            spec.flip_threshold = gputrain::augment_flip_threshold(flip);
            spec.seed = seed;
            // The whole epoch, CPU, in one batch: any batch size must cut it into the same bits.
            const auto whole = cpu_augmented_batch(pixels, order, 0, c.images, c.channels, c.height,
                                                   c.width, epoch, spec, mean.data(), stdv.data());
            for (int batch : {1, 4, 7, c.images}) {
              INFO("images " << c.images << ", " << c.channels << "x" << c.height << "x" << c.width
                             << ", seed " << seed << ", epoch " << epoch << ", padding " << padding
                             << ", flip " << flip << ", batch " << batch);
              gk::StepState state{0, 3, epoch};
              std::vector<float> gathered;
              for (int64_t s = 0; s < c.images; s += batch) {
                const int count = int(std::min<int64_t>(batch, c.images - s));  // last: partial
                std::vector<float> out = poisoned(size_t(count) * image);
                std::vector<int32_t> batch_labels(size_t(count), -1);
                gk::launch_gather_batch_augmented(pixels.data(), labels.data(), order.data(),
                                                  &state, 0, count, c.channels, c.height, c.width,
                                                  spec, mean.data(), stdv.data(), out.data(),
                                                  batch_labels.data(), nullptr);
                const auto want =
                    cpu_augmented_batch(pixels, order, s, count, c.channels, c.height, c.width,
                                        epoch, spec, mean.data(), stdv.data());
                expect_equal(out, want, "augmented batch");
                for (int i = 0; i < count; ++i)
                  REQUIRE(batch_labels[size_t(i)] == labels[size_t(order[size_t(s + i)])]);
                gathered.insert(gathered.end(), out.begin(), out.end());
                gk::launch_advance_step(&state, count, nullptr);
              }
              expect_equal(gathered, whole, "the epoch's batches");
            }
          }
}

TEST_CASE("augmentation draws depend on (seed, epoch, sample) only and cover the range",
          "[kernels]") {
  gputrain::AugmentSpec spec;
  spec.crop_padding = 2;
  spec.flip_threshold = gputrain::augment_flip_threshold(0.5);
  spec.seed = 11;
  int seen[5][5] = {};
  int flips = 0, same_next_epoch = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    const auto d = gputrain::augment_draw(spec, 3, i);
    REQUIRE(d.dy >= -2);
    REQUIRE(d.dy <= 2);
    REQUIRE(d.dx >= -2);
    REQUIRE(d.dx <= 2);
    ++seen[d.dy + 2][d.dx + 2];
    flips += d.flip;
    const auto again = gputrain::augment_draw(spec, 3, i);
    REQUIRE((again.dy == d.dy && again.dx == d.dx && again.flip == d.flip));
    const auto next = gputrain::augment_draw(spec, 4, i);
    same_next_epoch += next.dy == d.dy && next.dx == d.dx && next.flip == d.flip;
  }
  // 25 offsets of probability 1/25 each: 160 expected, σ ≈ 12.5; flips: 2000, σ ≈ 32.
  for (auto& row : seen)
    for (int count : row) CHECK(std::abs(count - n / 25) < 5 * 13);
  CHECK(std::abs(flips - n / 2) < 5 * 32);
  CHECK(same_next_epoch < n / 50 + 5 * 9);  // a new epoch draws afresh (1/50 agree by chance)
  spec.flip_threshold = gputrain::augment_flip_threshold(1.0);
  spec.crop_padding = 0;
  for (int i = 0; i < 100; ++i) {
    const auto d = gputrain::augment_draw(spec, 0, i);
    CHECK((d.flip && d.dy == 0 && d.dx == 0));
  }
}

TEST_CASE("cpu::gather_augment pads with zeros, shifts and mirrors", "[kernels]") {
  // A 1×3×4 image with pixels 1..12; an exact expectation from the draw of each sample.
  std::vector<uint8_t> pixels(12);
  for (int i = 0; i < 12; ++i) pixels[size_t(i)] = uint8_t(i + 1);
  gputrain::AugmentSpec spec;
  spec.crop_padding = 2;
  spec.flip_threshold = gputrain::augment_flip_threshold(0.5);
  for (uint64_t seed = 0; seed < 40; ++seed) {
    spec.seed = seed;
    const int32_t index = 0;
    std::vector<uint8_t> out(12, 255);
    gputrain::cpu::gather_augment(1, 1, 3, 4, pixels.data(), &index, 2, spec, out.data());
    const auto d = gputrain::augment_draw(spec, 2, 0);
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 4; ++x) {
        const int sy = y + d.dy, sx = (d.flip ? 3 - x : x) + d.dx;
        const int want = sy < 0 || sy >= 3 || sx < 0 || sx >= 4 ? 0 : 1 + sy * 4 + sx;
        CHECK(int(out[size_t(y * 4 + x)]) == want);
      }
  }
}
