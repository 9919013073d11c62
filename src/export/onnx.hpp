// A planned model with its weights as an ONNX file, built with the ONNX project's own protobuf
// classes (Debian's libonnx-dev) and checked by its model checker before it is written.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "gputrain/checkpoint.hpp"
#include "gputrain/model.hpp"

namespace gputrain {

struct OnnxExportOptions {
  // false: input `images` float32 [N, C, H, W], already normalized ((pixel/255 − mean) / std);
  // true: input `images` uint8 [N, C, H, W] pixels, the normalization inside the graph.
  bool raw_input = false;
  std::map<std::string, std::string> metadata;  // metadata_props (classes, normalization, …)
};

constexpr int kOnnxOpset = 13;

// Output `logits` float32 [N, classes]. Writes atomically; WeightsError / IoError on failure.
// `buffers`: the plan's (batchnorm2d's running statistics, exported for inference).
void export_onnx(const std::string& path, const ModelPlan& plan, const std::vector<float>& params,
                 const ModelBuffers& buffers, const Normalization& normalization,
                 const OnnxExportOptions& options);

}  // namespace gputrain
