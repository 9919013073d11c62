// Builders for model configs in tests: conv("conv1", 16, 3, 1, 1), relu(), maxpool(2, 2), ...
#pragma once

#include <string>

#include "gputrain/config.hpp"

namespace gputrain::testing {

inline LayerConfig conv(const std::string& name, int out, int kernel, int stride = 1,
                        int padding = 0) {
  LayerConfig l;
  l.kind = LayerKind::Conv2d;
  l.name = name;
  l.out_channels = out;
  l.kernel = kernel;
  l.stride = stride;
  l.padding = padding;
  return l;
}
inline LayerConfig linear(const std::string& name, int out) {
  LayerConfig l;
  l.kind = LayerKind::Linear;
  l.name = name;
  l.out_features = out;
  return l;
}
inline LayerConfig relu() {
  LayerConfig l;
  l.kind = LayerKind::Relu;
  return l;
}
inline LayerConfig flatten() {
  LayerConfig l;
  l.kind = LayerKind::Flatten;
  return l;
}
inline LayerConfig maxpool(int kernel, int stride) {
  LayerConfig l;
  l.kind = LayerKind::MaxPool2d;
  l.kernel = kernel;
  l.stride = stride;
  return l;
}

inline LayerConfig batchnorm(const std::string& name, double momentum = 0.1, double eps = 1e-5) {
  LayerConfig l;
  l.kind = LayerKind::BatchNorm2d;
  l.name = name;
  l.momentum = momentum;
  l.eps = eps;
  return l;
}
inline LayerConfig avgpool(int kernel, int stride) {
  LayerConfig l;
  l.kind = LayerKind::AvgPool2d;
  l.kernel = kernel;
  l.stride = stride;
  return l;
}
inline LayerConfig global_avgpool() {
  LayerConfig l;
  l.kind = LayerKind::GlobalAvgPool;
  return l;
}
inline LayerConfig dropout(double p) {
  LayerConfig l;
  l.kind = LayerKind::Dropout;
  l.p = p;
  return l;
}

}  // namespace gputrain::testing
