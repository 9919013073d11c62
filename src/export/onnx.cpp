// gputrain layers → ONNX operators (opset 13): conv2d → Conv, relu → Relu, maxpool2d → MaxPool,
// flatten → Flatten(axis 1), linear → Gemm(transB = 1), batchnorm2d → BatchNormalization (the
// inference form: running statistics), avgpool2d → AveragePool, global_avgpool →
// GlobalAveragePool, dropout → Identity, as torch.onnx exports the same modules in eval mode.
#include "export/onnx.hpp"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include "core/atomic_file.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {
namespace {

void add_initializer(onnx::GraphProto& g, const std::string& name, const std::vector<int64_t>& dims,
                     const float* data, size_t count) {
  onnx::TensorProto* t = g.add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(std::string(reinterpret_cast<const char*>(data), count * sizeof(float)));
}

void add_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& values) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}

void add_float(onnx::NodeProto* n, const std::string& name, float value) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

void add_int(onnx::NodeProto* n, const std::string& name, int64_t value) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

onnx::NodeProto* add_node(onnx::GraphProto& g, const std::string& op, const std::string& name,
                          const std::vector<std::string>& inputs, const std::string& output) {
  onnx::NodeProto* n = g.add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (const std::string& i : inputs) n->add_input(i);
  n->add_output(output);
  return n;
}

void set_value_info(onnx::ValueInfoProto* v, const std::string& name, int elem_type,
                    const std::vector<int64_t>& dims) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(elem_type);
  onnx::TensorShapeProto* shape = t->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

}  // namespace

void export_onnx(const std::string& path, const ModelPlan& plan, const std::vector<float>& params,
                 const ModelBuffers& buffers, const Normalization& normalization,
                 const OnnxExportOptions& options) {
  if (buffers.values.size() != plan.buffer_count)
    throw Error("export: the model's buffers do not have the plan's sizes");
  onnx::ModelProto model;
  model.set_ir_version(7);  // the IR of opset 13 (ONNX 1.8): every runtime since reads it
  model.set_producer_name("gputrain");
  model.set_producer_version(GPUTRAIN_VERSION);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  for (const auto& [key, value] : options.metadata) {
    onnx::StringStringEntryProto* p = model.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
  }
  onnx::GraphProto& g = *model.mutable_graph();
  g.set_name("gputrain");
  const int C = plan.input.channels;
  set_value_info(g.add_input(), "images",
                 options.raw_input ? onnx::TensorProto::UINT8 : onnx::TensorProto::FLOAT,
                 {C, plan.input.height, plan.input.width});

  std::string x = "images";
  if (options.raw_input) {
    // (float(pixel) / 255 − mean) / std, in the order the engines compute it.
    onnx::NodeProto* cast = add_node(g, "Cast", "to_float", {x}, "pixels");
    add_int(cast, "to", onnx::TensorProto::FLOAT);
    const float scale = 255.0f;
    add_initializer(g, "pixel_scale", {}, &scale, 1);
    add_node(g, "Div", "scale", {"pixels", "pixel_scale"}, "scaled");
    add_initializer(g, "normalize_mean", {1, C, 1, 1}, normalization.mean.data(), size_t(C));
    add_initializer(g, "normalize_std", {1, C, 1, 1}, normalization.std.data(), size_t(C));
    add_node(g, "Sub", "center", {"scaled", "normalize_mean"}, "centered");
    add_node(g, "Div", "normalize", {"centered", "normalize_std"}, "normalized");
    x = "normalized";
  }
  bool spatial = true;  // the activation is N×C×H×W (false once flattened: N×features)
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const LayerPlan& l = plan.layers[i];
    const LayerConfig& c = l.config;
    const std::string out =
        i + 1 == plan.layers.size() ? std::string("logits") : "x" + std::to_string(i + 1);
    const std::string node_name = "layer" + std::to_string(i);
    switch (c.kind) {
      case LayerKind::Conv2d: {
        const ParameterInfo &w = plan.weight(l), &b = plan.bias(l);
        add_initializer(g, w.name, w.shape, params.data() + w.offset, w.count);
        add_initializer(g, b.name, b.shape, params.data() + b.offset, b.count);
        onnx::NodeProto* n = add_node(g, "Conv", c.name, {x, w.name, b.name}, out);
        add_ints(n, "kernel_shape", {c.kernel, c.kernel});
        add_ints(n, "strides", {c.stride, c.stride});
        add_ints(n, "pads", {c.padding, c.padding, c.padding, c.padding});
        add_ints(n, "dilations", {1, 1});
        add_int(n, "group", 1);
        break;
      }
      case LayerKind::Relu:
        add_node(g, "Relu", node_name, {x}, out);
        break;
      case LayerKind::MaxPool2d: {
        onnx::NodeProto* n = add_node(g, "MaxPool", node_name, {x}, out);
        add_ints(n, "kernel_shape", {c.kernel, c.kernel});
        add_ints(n, "strides", {c.stride, c.stride});
        add_int(n, "ceil_mode", 0);
        break;
      }
      case LayerKind::Flatten:
        add_int(add_node(g, "Flatten", node_name, {x}, out), "axis", 1);
        spatial = false;
        break;
      case LayerKind::BatchNorm2d: {
        const ParameterInfo &w = plan.weight(l), &b = plan.bias(l);
        const BufferInfo &mean = plan.buffers[size_t(l.running_mean_index)],
                         &var = plan.buffers[size_t(l.running_var_index)];
        add_initializer(g, w.name, w.shape, params.data() + w.offset, w.count);
        add_initializer(g, b.name, b.shape, params.data() + b.offset, b.count);
        add_initializer(g, mean.name, mean.shape, buffers.values.data() + mean.offset, mean.count);
        add_initializer(g, var.name, var.shape, buffers.values.data() + var.offset, var.count);
        onnx::NodeProto* n = add_node(g, "BatchNormalization", c.name,
                                      {x, w.name, b.name, mean.name, var.name}, out);
        add_float(n, "epsilon", float(c.eps));
        add_float(n, "momentum", float(1.0 - c.momentum));  // ONNX's is torch's 1 − momentum
        break;
      }
      case LayerKind::AvgPool2d: {
        onnx::NodeProto* n = add_node(g, "AveragePool", node_name, {x}, out);
        add_ints(n, "kernel_shape", {c.kernel, c.kernel});
        add_ints(n, "strides", {c.stride, c.stride});
        add_int(n, "ceil_mode", 0);
        add_int(n, "count_include_pad", 0);
        break;
      }
      case LayerKind::GlobalAvgPool:
        add_node(g, "GlobalAveragePool", node_name, {x}, out);
        break;
      case LayerKind::Dropout:  // inference: the identity
        add_node(g, "Identity", node_name, {x}, out);
        break;
      case LayerKind::Linear: {
        if (spatial) {  // a 1×1 map fed to linear without flatten: the same numbers, flat
          add_int(add_node(g, "Flatten", node_name + "_flatten", {x}, x + "_flat"), "axis", 1);
          x += "_flat";
          spatial = false;
        }
        const ParameterInfo &w = plan.weight(l), &b = plan.bias(l);
        add_initializer(g, w.name, w.shape, params.data() + w.offset, w.count);
        add_initializer(g, b.name, b.shape, params.data() + b.offset, b.count);
        onnx::NodeProto* n = add_node(g, "Gemm", c.name, {x, w.name, b.name}, out);
        add_int(n, "transB", 1);
        break;
      }
    }
    x = out;
  }
  if (x != "logits") throw Error("export: the model has no layers");
  set_value_info(g.add_output(), "logits", onnx::TensorProto::FLOAT, {plan.num_classes});

  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw Error(std::string("export: the ONNX checker refused the graph: ") + e.what());
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw Error("export: could not serialize the ONNX model");
  write_file_atomic(path, bytes);
}

}  // namespace gputrain
