// Plans and random data sets for engine tests: make_plan(1, 28, 28, {conv(...), ...}) and
// random_images(plan, count, seed) (uniform pixels and labels, reproducible from the seed).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gputrain/config.hpp"
#include "gputrain/dataset.hpp"
#include "gputrain/model.hpp"

namespace gputrain::testing {

// The plan of a net on C×H×W inputs; `source` names it in plan errors.
inline ModelPlan make_plan(int channels, int height, int width, std::vector<LayerConfig> layers,
                           const std::string& source = "test") {
  ModelConfig m;
  m.input_channels = channels;
  m.input_height = height;
  m.input_width = width;
  m.layers = std::move(layers);
  return plan_model(m, source);
}

// `count` images of the plan's input shape: uniform random pixels and labels in [0, classes).
inline ImageSet random_images(const ModelPlan& plan, int64_t count, uint32_t seed) {
  ImageSet s;
  s.count = count;
  s.channels = plan.input.channels;
  s.height = plan.input.height;
  s.width = plan.input.width;
  std::mt19937 gen(seed);
  s.pixels.resize(size_t(count) * size_t(s.image_size()));
  for (auto& p : s.pixels) p = uint8_t(gen() & 0xFF);
  s.labels.resize(size_t(count));
  for (auto& l : s.labels) l = int32_t(gen() % uint32_t(plan.num_classes));
  return s;
}

}  // namespace gputrain::testing
