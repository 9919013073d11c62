// Shapes of the spatial ops, shared by the plan, the CPU ops, the CUDA kernels and the engines.
// Backend-neutral: what a convolution or pooling window looks like for one batch size.
#pragma once

#include <cstdint>

namespace gputrain {

// A 2-D convolution over x [batch, in_channels, in_height, in_width] with a square kernel,
// producing y [batch, out_channels, out_height(), out_width()] (nn.Conv2d's arithmetic).
struct ConvGeometry {
  int batch = 0;
  int in_channels = 0, in_height = 0, in_width = 0;
  int out_channels = 0, kernel = 0, stride = 1, padding = 0;
  int out_height() const { return (in_height + 2 * padding - kernel) / stride + 1; }
  int out_width() const { return (in_width + 2 * padding - kernel) / stride + 1; }
  // The im2col matrix of one sample: (C·k·k) rows × (Ho·Wo) columns.
  int64_t col_rows() const { return int64_t(in_channels) * kernel * kernel; }
  int64_t col_cols() const { return int64_t(out_height()) * out_width(); }
};

// Max or average pooling over x [batch, channels, in_height, in_width].
struct PoolGeometry {
  int batch = 0, channels = 0, in_height = 0, in_width = 0;
  int kernel = 2,
      stride = 2;  // no padding; floor mode, as nn.MaxPool2d's / nn.AvgPool2d's defaults
  int out_height() const { return (in_height - kernel) / stride + 1; }
  int out_width() const { return (in_width - kernel) / stride + 1; }
};

}  // namespace gputrain
