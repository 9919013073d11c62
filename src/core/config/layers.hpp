// model.layers: the per-layer-type sub-schema of the config (layers.cpp).
#pragma once

#include <string>
#include <vector>

#include "core/config/yaml_tree.hpp"
#include "gputrain/config.hpp"

namespace gputrain::config_tree {

// Reads the model.layers list (present and not null) into `out`: every entry checked against its
// type's fields, names unique.
void read_layer_list(const Context& ctx, const Node& list, std::vector<LayerConfig>& out);

// One layer as a YAML flow mapping: {type: conv2d, name: "conv1", out_channels: 16, …}.
std::string write_layer(const LayerConfig& layer);

// Every key some layer type knows (type first), for --set path checks.
std::vector<std::string> all_layer_keys();

}  // namespace gputrain::config_tree
