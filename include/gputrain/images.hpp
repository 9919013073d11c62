// Image files (PNG, JPEG) decoded through libpng and libjpeg-turbo, converted to a model's input
// (channels, size), and ImageFolder data sets (torchvision's layout: <dir>/train/<class>/*.png).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gputrain/dataset.hpp"

namespace gputrain {

// A decoded image: 8-bit RGB, row-major H×W×3 (grey sources are replicated into R, G and B).
struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

// Decodes a PNG or JPEG file (recognized by its first bytes, not its name). DataError naming the
// file and the decoder's reason when it is unreadable or not a valid image.
RgbImage decode_image_file(const std::string& path);

// The model's input from a decoded image: `channels` 1 (grey = PIL's convert("L"):
// (19595·R + 38470·G + 7471·B + 2^15) >> 16) or 3; `height`×`width` as the image's own size, or
// when `resize` bilinear resampling as PIL's Image.resize(BILINEAR) (a triangle filter widened by
// the scale factor when shrinking; computed in float, so a value may differ by 1 from PIL's
// fixed-point result). Writes channels×height×width bytes (CHW) to `out`. DataError naming `path`
// when the size differs and `resize` is false.
void image_to_input(const RgbImage& image, const std::string& path, int channels, int height,
                    int width, bool resize, uint8_t* out);

struct ImageFolderOptions {
  int channels = 0, height = 0, width = 0;  // model.input
  bool resize = false;                      // data.resize
  bool skip_bad_images = false;             // data.skip_bad_images
  int num_classes = 0;                      // the model's outputs: must equal the class folders
  int64_t train_limit = 0, test_limit = 0;
  // Progress lines (loading longer than a second) and warnings (skipped images, no cache written).
  std::function<void(const std::string&)> info, warning;
};

// <dir>/train/<class>/*.{png,jpg,jpeg} and <dir>/test/<class>/*: class names are the sorted
// folder names of train/ (test/ may hold only those). Decoded on all cores; the decoded set is
// cached in <dir>/.gputrain-cache-<hash>.bin, the hash covering the options and every file's
// name, size and modification time, so a changed file rebuilds it. Dataset::class_names is set.
Dataset load_image_folder_dataset(const std::string& dir, const ImageFolderOptions& options);

}  // namespace gputrain
