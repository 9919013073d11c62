#include "gputrain/checkpoint.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "core/json.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/safetensors.hpp"

namespace gputrain {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string float_list(const std::vector<float>& values) {
  JsonValue list = JsonValue::array();
  for (float v : values) list.push_back(JsonValue(v));
  return list.dump();
}

std::vector<float> parse_float_list(const std::string& path, const std::string& key,
                                    const std::string& text) {
  try {
    JsonValue v = parse_json(text);
    std::vector<float> out;
    if (!v.is_array()) throw JsonParseError("not an array", 0);
    for (const JsonValue& x : v.as_array()) {
      if (!x.is_number()) throw JsonParseError("not a number", 0);
      out.push_back(float(x.as_number()));
    }
    return out;
  } catch (const JsonParseError& e) {
    throw WeightsError(path + ": __metadata__." + key + " must be a JSON array of numbers (" +
                       e.what() + ")");
  }
}

void add_normalization(TensorFile& file, const Normalization& n) {
  file.metadata["normalize_mean"] = float_list(n.mean);
  file.metadata["normalize_std"] = float_list(n.std);
}

bool read_normalization(const std::string& path, const TensorFile& file, Normalization& n) {
  auto mean = file.metadata.find("normalize_mean"), std = file.metadata.find("normalize_std");
  if (mean == file.metadata.end() || std == file.metadata.end()) return false;
  n.mean = parse_float_list(path, "normalize_mean", mean->second);
  n.std = parse_float_list(path, "normalize_std", std->second);
  if (n.mean.size() != n.std.size() || n.mean.empty())
    throw WeightsError(path +
                       ": __metadata__ normalize_mean and normalize_std must have one value "
                       "per channel");
  for (float s : n.std)
    if (!(s > 0)) throw WeightsError(path + ": __metadata__.normalize_std values must be > 0");
  return true;
}

// Copies every plan parameter (optionally under a name prefix) from `file` into a flat buffer.
std::vector<float> gather(const std::string& path, const TensorFile& file, const ModelPlan& plan,
                          const std::string& prefix) {
  std::vector<float> flat(plan.parameter_count);
  for (const ParameterInfo& p : plan.parameters) {
    const NamedTensor* t = file.find(prefix + p.name);
    if (!t)
      throw WeightsError(path + ": missing tensor '" + prefix + p.name + "' (expected shape " +
                         shape_text(p.shape) + ")");
    if (t->shape != p.shape)
      throw WeightsError(path + ": tensor '" + t->name + "' has shape " + shape_text(t->shape) +
                         ", the model expects " + shape_text(p.shape));
    std::copy(t->values.begin(), t->values.end(), flat.begin() + long(p.offset));
  }
  return flat;
}

void add_tensors(TensorFile& file, const ModelPlan& plan, const std::vector<float>& flat,
                 const std::string& prefix) {
  for (const ParameterInfo& p : plan.parameters) {
    NamedTensor t;
    t.name = prefix + p.name;
    t.shape = p.shape;
    t.values.assign(flat.begin() + long(p.offset), flat.begin() + long(p.offset + p.count));
    file.tensors.push_back(std::move(t));
  }
}

// The plan's buffers: F32 running statistics, I64 scalar counts (as torch saves them).
ModelBuffers gather_buffers(const std::string& path, const TensorFile& file,
                            const ModelPlan& plan) {
  ModelBuffers b = initial_buffers(plan);
  for (const BufferInfo& info : plan.buffers) {
    if (info.kind == BufferKind::BatchesTracked) {
      const RawTensor* t = file.find_raw(info.name);
      if (!t) {
        if (file.find(info.name))
          throw WeightsError(path + ": tensor '" + info.name + "' must have dtype I64");
        throw WeightsError(path + ": missing tensor '" + info.name +
                           "' (expected an I64 scalar, shape [])");
      }
      if (!t->shape.empty())
        throw WeightsError(path + ": tensor '" + t->name + "' has shape " + shape_text(t->shape) +
                           ", the model expects [] (a scalar)");
      int64_t count = 0;
      std::memcpy(&count, t->bytes.data(), sizeof count);
      if (count < 0) throw WeightsError(path + ": tensor '" + t->name + "' is negative");
      b.batches_tracked[info.offset] = count;
      continue;
    }
    const NamedTensor* t = file.find(info.name);
    if (!t)
      throw WeightsError(path + ": missing tensor '" + info.name + "' (expected shape " +
                         shape_text(info.shape) + ")");
    if (t->shape != info.shape)
      throw WeightsError(path + ": tensor '" + t->name + "' has shape " + shape_text(t->shape) +
                         ", the model expects " + shape_text(info.shape));
    std::copy(t->values.begin(), t->values.end(), b.values.begin() + long(info.offset));
  }
  return b;
}

void add_buffers(TensorFile& file, const ModelPlan& plan, const ModelBuffers& b) {
  if (b.values.size() != plan.buffer_count ||
      b.batches_tracked.size() != size_t(plan.batchnorm_count))
    throw Error("the model's buffers do not have the plan's sizes");
  for (const BufferInfo& info : plan.buffers) {
    if (info.kind == BufferKind::BatchesTracked) {
      RawTensor t;
      t.name = info.name;
      t.dtype = "I64";
      const int64_t count = b.batches_tracked[info.offset];
      t.bytes.resize(sizeof count);
      std::memcpy(t.bytes.data(), &count, sizeof count);
      file.raw_tensors.push_back(std::move(t));
      continue;
    }
    NamedTensor t;
    t.name = info.name;
    t.shape = info.shape;
    t.values.assign(b.values.begin() + long(info.offset),
                    b.values.begin() + long(info.offset + info.count));
    file.tensors.push_back(std::move(t));
  }
}

std::string get(const std::string& path, const TensorFile& file, const std::string& key) {
  auto it = file.metadata.find(key);
  if (it == file.metadata.end())
    throw WeightsError(path + ": not a gputrain checkpoint (no __metadata__." + key + ")");
  return it->second;
}

int64_t get_int(const std::string& path, const TensorFile& file, const std::string& key) {
  const std::string s = get(path, file, key);
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  throw WeightsError(path + ": __metadata__." + key + " must be an integer, got '" + s + "'");
}

double get_double(const std::string& path, const TensorFile& file, const std::string& key) {
  const std::string s = get(path, file, key);
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  throw WeightsError(path + ": __metadata__." + key + " must be a number, got '" + s + "'");
}

}  // namespace

void save_weights(const std::string& path, const ModelPlan& plan,
                  const std::vector<float>& parameters, const ModelBuffers& buffers,
                  const Normalization& normalization,
                  const std::map<std::string, std::string>& extra) {
  TensorFile file;
  add_tensors(file, plan, parameters, "");
  add_buffers(file, plan, buffers);
  add_normalization(file, normalization);
  for (const auto& [key, value] : extra) file.metadata[key] = value;
  file.metadata["format"] = "pt";  // what Python's safetensors.torch writes: loaders expect it
  write_safetensors(path, file);
}

std::map<std::string, std::string> describing_metadata(const std::string& config_yaml,
                                                       const std::vector<std::string>& classes) {
  JsonValue names = JsonValue::array();
  for (const std::string& c : classes) names.push_back(c);
  return {{"classes", names.dump()}, {"config", config_yaml}};
}

LoadedWeights load_weights(const std::string& path, const ModelPlan& plan) {
  const TensorFile file = read_safetensors(path);
  const bool is_checkpoint = file.metadata.count("gputrain_checkpoint") > 0;
  std::set<std::string> expected;
  for (const ParameterInfo& p : plan.parameters) expected.insert(p.name);
  for (const BufferInfo& b : plan.buffers) expected.insert(b.name);
  // A checkpoint also holds the optimizer's state, "<prefix><parameter name>": not weights.
  auto is_optimizer_state = [&](const std::string& name) {
    for (const ParameterInfo& p : plan.parameters)
      if (name.size() > p.name.size() + 1 &&
          name.compare(name.size() - p.name.size(), p.name.size(), p.name) == 0 &&
          name[name.size() - p.name.size() - 1] == '.')
        return true;
    return false;
  };
  for (const NamedTensor& t : file.tensors) {
    if (is_checkpoint && !expected.count(t.name) && is_optimizer_state(t.name)) continue;
    if (!expected.count(t.name))
      throw WeightsError(path + ": unexpected tensor '" + t.name +
                         "' (the model has no such parameter; check the config's layer names)");
  }
  for (const RawTensor& t : file.raw_tensors)
    if (!expected.count(t.name))
      throw WeightsError(path + ": unexpected tensor '" + t.name +
                         "' (the model has no such buffer; check the config's layer names)");
  LoadedWeights w;
  w.parameters = gather(path, file, plan, "");
  w.buffers = gather_buffers(path, file, plan);
  w.has_normalization = read_normalization(path, file, w.normalization);
  if (auto it = file.metadata.find("config"); it != file.metadata.end()) w.config_yaml = it->second;
  if (auto it = file.metadata.find("classes"); it != file.metadata.end()) {
    JsonValue names;
    try {
      names = parse_json(it->second);
    } catch (const JsonParseError& e) {
      throw WeightsError(path + ": __metadata__.classes is not JSON (" + e.what() + ")");
    }
    if (!names.is_array() || names.as_array().size() != size_t(plan.num_classes))
      throw WeightsError(path + ": __metadata__.classes must be a JSON array of " +
                         std::to_string(plan.num_classes) + " names (one per output)");
    for (const JsonValue& n : names.as_array()) {
      if (!n.is_string()) throw WeightsError(path + ": __metadata__.classes must hold strings");
      w.class_names.push_back(n.as_string());
    }
  }
  return w;
}

void save_checkpoint(const std::string& path, const ModelPlan& plan,
                     const std::vector<float>& parameters, const ModelBuffers& buffers,
                     const std::vector<OptimizerStateBuffer>& optimizer_state,
                     const Normalization& normalization, const TrainingState& s) {
  TensorFile file;
  add_tensors(file, plan, parameters, "");
  add_buffers(file, plan, buffers);
  for (const OptimizerStateBuffer& b : optimizer_state)
    add_tensors(file, plan, b.values, b.info.checkpoint_prefix);
  add_normalization(file, normalization);
  auto& m = file.metadata;
  m["gputrain_checkpoint"] = "1";
  m["epoch"] = std::to_string(s.epoch);
  m["step_in_epoch"] = std::to_string(s.step_in_epoch);
  m["global_step"] = std::to_string(s.global_step);
  m["partial_loss_sum"] = json_number(s.partial.loss_sum);
  m["partial_correct"] = std::to_string(s.partial.correct);
  m["partial_samples"] = std::to_string(s.partial.samples);
  m["partial_grad_norm_sum"] = json_number(s.partial.grad_norm_sum);
  m["partial_grad_norm_steps"] = std::to_string(s.partial.grad_norm_steps);
  m["best_test_acc"] = json_number(s.best_test_acc);
  m["best_epoch"] = std::to_string(s.best_epoch);
  m["best_score"] = json_number(s.best_score);
  if (!std::isnan(s.early_stopping_best))
    m["early_stopping_best"] = json_number(s.early_stopping_best);
  m["early_stopping_bad_epochs"] = std::to_string(s.early_stopping_bad_epochs);
  m["stopped_early"] = s.stopped_early ? "1" : "0";
  m["config"] = s.config_yaml;
  if (!s.run_id.empty()) m["run_id"] = s.run_id;
  write_safetensors(path, file);
}

LoadedCheckpoint load_checkpoint(const std::string& path, const ModelPlan& plan,
                                 const std::vector<OptimizerStateInfo>& expected) {
  const TensorFile file = read_safetensors(path);
  if (!file.metadata.count("gputrain_checkpoint"))
    throw WeightsError(path + ": not a gputrain checkpoint (a weights file? use --init for those)");
  LoadedCheckpoint c;
  c.parameters = gather(path, file, plan, "");
  c.buffers = gather_buffers(path, file, plan);
  for (const OptimizerStateInfo& info : expected)
    c.optimizer_state.push_back({info, gather(path, file, plan, info.checkpoint_prefix)});
  if (!read_normalization(path, file, c.normalization))
    throw WeightsError(path + ": checkpoint without normalize_mean / normalize_std metadata");
  TrainingState& s = c.state;
  s.epoch = int(get_int(path, file, "epoch"));
  s.step_in_epoch = get_int(path, file, "step_in_epoch");
  s.global_step = get_int(path, file, "global_step");
  s.partial.loss_sum = get_double(path, file, "partial_loss_sum");
  s.partial.correct = get_int(path, file, "partial_correct");
  s.partial.samples = get_int(path, file, "partial_samples");
  if (file.metadata.count("partial_grad_norm_steps")) {  // absent before gradient clipping
    s.partial.grad_norm_sum = get_double(path, file, "partial_grad_norm_sum");
    s.partial.grad_norm_steps = get_int(path, file, "partial_grad_norm_steps");
  }
  s.best_test_acc = get_double(path, file, "best_test_acc");
  s.best_epoch = int(get_int(path, file, "best_epoch"));
  // Absent in checkpoints from before validation splits and early stopping.
  s.best_score =
      file.metadata.count("best_score") ? get_double(path, file, "best_score") : s.best_test_acc;
  if (file.metadata.count("early_stopping_best"))
    s.early_stopping_best = get_double(path, file, "early_stopping_best");
  if (file.metadata.count("early_stopping_bad_epochs"))
    s.early_stopping_bad_epochs = int(get_int(path, file, "early_stopping_bad_epochs"));
  s.stopped_early =
      file.metadata.count("stopped_early") && file.metadata.at("stopped_early") == "1";
  s.config_yaml = get(path, file, "config");
  if (file.metadata.count("run_id")) s.run_id = file.metadata.at("run_id");
  if (s.epoch < 0 || s.step_in_epoch < 0 || s.global_step < 0)
    throw WeightsError(path + ": negative epoch or step in the checkpoint's metadata");
  return c;
}

std::string checkpoint_config_yaml(const std::string& path) {
  const TensorFile file = read_safetensors(path);
  if (!file.metadata.count("gputrain_checkpoint"))
    throw WeightsError(path + ": not a gputrain checkpoint (a weights file? use --init for those)");
  return get(path, file, "config");
}

}  // namespace gputrain
