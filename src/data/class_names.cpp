// The names of the labels of the built-in formats: CIFAR-10's from its batches.meta.txt (or the
// published list), Fashion-MNIST's published list for an IDX folder whose path says so.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "gputrain/dataset.hpp"

namespace gputrain {

std::vector<std::string> builtin_class_names(const std::string& format, const std::string& dir,
                                             int num_classes) {
  static const std::vector<std::string> kCifar10 = {
      "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  static const std::vector<std::string> kFashionMnist = {
      "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  std::vector<std::string> names;
  if (format == "cifar10") {
    // The binary version ships its label names, one per line.
    std::ifstream meta(std::filesystem::path(dir) / "batches.meta.txt");
    for (std::string line; std::getline(meta, line);) {
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())))
        line.pop_back();
      if (!line.empty()) names.push_back(line);
    }
    if (int(names.size()) != num_classes) names = kCifar10;
  } else if (format == "idx") {
    std::string lower = dir;
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    // IDX files carry no names; MNIST's digits are their own names, Fashion-MNIST's are known.
    if (lower.find("fashion") != std::string::npos) names = kFashionMnist;
  }
  if (int(names.size()) != num_classes) {
    names.clear();
    for (int i = 0; i < num_classes; ++i) names.push_back(std::to_string(i));
  }
  return names;
}

}  // namespace gputrain
