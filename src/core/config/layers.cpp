// model.layers: a sub-schema per layer type. Each type lists its fields (required or with a
// default, integer range or identifier); reading, the "needs …" and "known for …" messages, --set
// checks and the one-line YAML form all come from that list.
#include "core/config/layers.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <stdexcept>

#include "core/json.hpp"

namespace gputrain::config_tree {

namespace {

struct LayerField {
  std::string key;
  bool is_name = false;  // the parameter prefix (an identifier); otherwise an integer
  int LayerConfig::*member = nullptr;
  int64_t min = 1;
  bool required = true;
  int default_value = 0;                     // when not required and absent …
  int LayerConfig::*default_from = nullptr;  // … or this field's value (maxpool2d stride = kernel)
  // A real-valued field (batchnorm2d momentum/eps, dropout p) instead of an integer: its range in
  // words for messages and as a check; `default_number` when not required and absent.
  double LayerConfig::*number = nullptr;
  const char* expected = nullptr;
  bool (*in_range)(double) = nullptr;
  double default_number = 0;
};

LayerField number_field(std::string key, double LayerConfig::*member, const char* expected,
                        bool (*in_range)(double), bool required, double default_number = 0) {
  LayerField f;
  f.key = std::move(key);
  f.required = required;
  f.number = member;
  f.expected = expected;
  f.in_range = in_range;
  f.default_number = default_number;
  return f;
}

struct LayerType {
  std::string type;
  LayerKind kind;
  std::vector<LayerField> fields;

  std::vector<std::string> keys() const {
    std::vector<std::string> k = {"type"};
    for (const auto& f : fields) k.push_back(f.key);
    return k;
  }
};

const std::vector<LayerType>& layer_types() {
  static const std::vector<LayerType> types = {
      {"conv2d",
       LayerKind::Conv2d,
       {{"name", true},
        {"out_channels", false, &LayerConfig::out_channels},
        {"kernel", false, &LayerConfig::kernel},
        {"stride", false, &LayerConfig::stride, 1, false, 1},
        {"padding", false, &LayerConfig::padding, 0, false, 0}}},
      {"relu", LayerKind::Relu, {}},
      {"maxpool2d",
       LayerKind::MaxPool2d,
       {{"kernel", false, &LayerConfig::kernel},
        {"stride", false, &LayerConfig::stride, 1, false, 0, &LayerConfig::kernel}}},
      {"flatten", LayerKind::Flatten, {}},
      {"linear",
       LayerKind::Linear,
       {{"name", true}, {"out_features", false, &LayerConfig::out_features}}},
      {"batchnorm2d",
       LayerKind::BatchNorm2d,
       {{"name", true},
        number_field(
            "momentum", &LayerConfig::momentum, "a number in [0, 1]",
            [](double x) { return x >= 0 && x <= 1; }, false, 0.1),
        number_field(
            "eps", &LayerConfig::eps, "a number > 0", [](double x) { return x > 0; }, false,
            1e-5)}},
      {"avgpool2d",
       LayerKind::AvgPool2d,
       {{"kernel", false, &LayerConfig::kernel},
        {"stride", false, &LayerConfig::stride, 1, false, 0, &LayerConfig::kernel}}},
      {"global_avgpool", LayerKind::GlobalAvgPool, {}},
      {"dropout",
       LayerKind::Dropout,
       {number_field(
           "p", &LayerConfig::p, "a probability in [0, 1)",
           [](double x) { return x >= 0 && x < 1; }, true)}},
  };
  return types;
}

std::vector<std::string> layer_type_names() {
  std::vector<std::string> names;
  for (const auto& t : layer_types()) names.push_back(t.type);
  return names;
}

const LayerType& layer_type(LayerKind kind) {
  for (const auto& t : layer_types())
    if (t.kind == kind) return t;
  throw std::logic_error("layer kind missing from the schema");
}

std::string read_layer_name(const Context& ctx, const Node& v, const std::string& path) {
  std::string name = read_string(ctx, v, path + ".name", "a name (letters, digits, _)");
  bool ok = !std::isdigit(static_cast<unsigned char>(name[0]));
  for (char c : name)
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_') &&
         static_cast<unsigned char>(c) < 0x80;
  if (!ok)
    ctx.fail(v, path +
                    ".name: expected an identifier (letters, digits and _, not starting with "
                    "a digit), got " +
                    got(v));
  return name;
}

void read_layer(const Context& ctx, const Node& n, const std::string& path, LayerConfig& layer) {
  if (n.kind != Node::Kind::Map)
    ctx.fail(n, path + ": expected a mapping like {type: relu}, got " + got(n));
  layer.source_line = n.from_set < 0 ? n.line : 0;
  const MapEntry* type = find_entry(n, "type");
  if (!type)
    ctx.fail(ctx.where_missing(n),
             "missing required key '" + path + ".type' (one of " + join(layer_type_names()) + ")");
  const std::string t = read_choice(ctx, type->value, path + ".type", layer_type_names());
  const LayerType& spec = *std::find_if(layer_types().begin(), layer_types().end(),
                                        [&](const LayerType& x) { return x.type == t; });
  layer.kind = spec.kind;
  check_keys(ctx, n, path, spec.keys(), "known for " + t);
  for (const LayerField& f : spec.fields) {
    const MapEntry* e = find_entry(n, f.key);
    if (!e && f.required) {
      std::vector<std::string> needed;
      for (const auto& g : spec.fields)
        if (g.required) needed.push_back(g.key);
      ctx.fail(ctx.where_missing(n), "missing required key '" + path + "." + f.key + "' (" + t +
                                         " needs " + join(needed) + ")");
    }
    if (f.is_name) {
      layer.name = read_layer_name(ctx, e->value, path);
    } else if (f.number) {
      layer.*f.number = e ? read_double(ctx, e->value, path + "." + f.key, f.expected, f.in_range)
                          : f.default_number;
    } else if (e) {
      layer.*f.member =
          static_cast<int>(read_int(ctx, e->value, path + "." + f.key, f.min, INT_MAX));
    } else {
      layer.*f.member = f.default_from ? layer.*f.default_from : f.default_value;
    }
  }
}

}  // namespace

// Every key some layer type knows, for --set path checks.
std::vector<std::string> all_layer_keys() {
  std::vector<std::string> keys;
  for (const auto& t : layer_types())
    for (const auto& k : t.keys())
      if (!contains(keys, k)) keys.push_back(k);
  return keys;
}

std::string write_layer(const LayerConfig& l) {
  const LayerType& spec = layer_type(l.kind);
  std::string out = "{type: " + spec.type;
  for (const LayerField& f : spec.fields)
    out += ", " + f.key + ": " +
           (f.is_name  ? json_quote(l.name)
            : f.number ? json_number(l.*f.number)
                       : std::to_string(l.*f.member));
  return out + "}";
}

void read_layer_list(const Context& ctx, const Node& list, std::vector<LayerConfig>& out) {
  const Node* layers = &list;
  if (layers->kind != Node::Kind::Seq || layers->seq.empty())
    ctx.fail(*layers,
             "model.layers: expected a non-empty list of layers, got " +
                 (layers->kind == Node::Kind::Seq ? std::string("an empty list") : got(*layers)));
  out.clear();
  std::vector<std::pair<std::string, size_t>> names;
  for (size_t i = 0; i < layers->seq.size(); ++i) {
    std::string path = index_path("model.layers", i);
    LayerConfig layer;
    read_layer(ctx, layers->seq[i], path, layer);
    if (!layer.name.empty()) {
      for (const auto& [other, j] : names)
        if (other == layer.name)
          ctx.fail(find_entry(layers->seq[i], "name")->value, path + ".name: '" + layer.name +
                                                                  "' is already the name of " +
                                                                  index_path("model.layers", j));
      names.emplace_back(layer.name, i);
    }
    out.push_back(layer);
  }
}

}  // namespace gputrain::config_tree
