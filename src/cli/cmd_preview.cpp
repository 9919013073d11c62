// gputrain preview: the first images of an epoch's training order as the model sees them
// (augmented, before normalization) as a PNG grid, and exactly as tensors with --tensors.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>

#include "cli/commands.hpp"
#include "core/run_outputs.hpp"
#include "core/run_setup.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/model.hpp"
#include "gputrain/preview.hpp"
#include "gputrain/safetensors.hpp"

namespace gputrain::cli {

CLI::App* add_preview_command(CLI::App& app, PreviewArgs& a) {
  CLI::App* cmd = app.add_subcommand(
      "preview", "write the first training images of an epoch, augmented, as a PNG grid");
  cmd->add_option("--config", a.config_path, "YAML config file")->required()->type_name("FILE");
  cmd->add_option("--set", a.overrides, "override a config key: key.path=value (repeatable)")
      ->take_all()
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  cmd->add_option("--out", a.out, "the PNG file to write")->required()->type_name("FILE.png");
  cmd->add_option("--count", a.count, "how many images (default 64)")
      ->type_name("N")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--epoch", a.epoch, "whose training order and augmentation (default 1)")
      ->type_name("E")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--tensors", a.tensors,
                  "also write uint8 images [N, C, H, W] and int32 labels [N] to this file")
      ->type_name("FILE.safetensors");
  set_help_footer(cmd,
                  "gputrain preview --config configs/cifar10.yaml --set "
                  "data.augment.crop_padding=4 --out batch.png",
                  false);
  return cmd;
}

namespace {

void check_folder(const std::string& flag, const std::string& given, const std::string& path) {
  struct stat st;
  const std::string folder = parent_folder(path);
  if (::stat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw IoError(flag + " " + given + ": folder '" + folder +
                  "' does not exist (create it first)");
}

}  // namespace

int run_preview(const PreviewArgs& a) {
  setup_logging(false);
  const std::string out = expand_home(a.out), tensors = expand_home(a.tensors);
  check_folder("--out", a.out, out);
  if (!tensors.empty()) check_folder("--tensors", a.tensors, tensors);
  const Config config = load_config(expand_home(a.config_path), a.overrides);
  const ModelPlan plan = plan_model(config.model, config.source);
  const Dataset data = load_checked_data(config, plan);
  const PreviewImages images = preview_images(config, data.train, a.count, a.epoch);
  if (!tensors.empty()) {
    TensorFile file;
    RawTensor pixels{"images",
                     "U8",
                     {images.count, images.channels, images.height, images.width},
                     images.pixels};
    RawTensor labels{"labels", "I32", {images.count}, {}};
    labels.bytes.resize(images.labels.size() * sizeof(int32_t));
    std::memcpy(labels.bytes.data(), images.labels.data(), labels.bytes.size());
    file.raw_tensors.push_back(std::move(pixels));
    file.raw_tensors.push_back(std::move(labels));
    file.metadata["epoch"] = std::to_string(a.epoch);
    write_safetensors(tensors, file);
  }
  write_image_grid_png(out, images);
  std::printf("%s: %d images of epoch %d (%s)\n", a.out.c_str(), images.count, a.epoch,
              config.data.augment.enabled() ? "augmented" : "no augmentation");
  return kExitOk;
}

}  // namespace gputrain::cli
