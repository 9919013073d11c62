// Class probabilities for image files, with a weights file: the images decoded and converted as
// the training data were (gputrain/images.hpp), batched through the engine's evaluation.
#pragma once

#include <string>
#include <vector>

#include "gputrain/config.hpp"
#include "gputrain/trainer.hpp"

namespace gputrain {

struct PredictRequest {
  Config config;  // the model, data.resize, data.mean/std, device, train.batch_size
  std::string weights_path;
  std::vector<std::string> images;
  bool use_graph = true;
};

struct PredictReport {
  std::vector<std::string> class_names;  // one per output (the weights' names, else "0"…)
  std::vector<float> logits;             // images × classes
  std::vector<double> probabilities;     // images × classes (softmax of the logits)
  int classes = 0;
  std::string engine;
};

// DataError naming the image for an unreadable file or (without data.resize) a wrong size;
// WeightsError when neither the config nor the weights give the input normalization.
PredictReport predict(const PredictRequest& request, TrainObserver& observer);

}  // namespace gputrain
