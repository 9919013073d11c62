#include "cli/weights_config.hpp"

#include "core/run_outputs.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/safetensors.hpp"

namespace gputrain::cli {

Config config_for_weights(const CommonOptions& o, const std::string& weights_path,
                          const std::string& data_dir) {
  Config c;
  if (!o.config_path.empty()) {
    c = load(o);
  } else {
    const std::string path = expand_home(weights_path);
    const TensorFile file = read_safetensors(path);
    auto it = file.metadata.find("config");
    if (it == file.metadata.end())
      throw WeightsError(path +
                         ": records no config (__metadata__.config: weights not written by this "
                         "gputrain version), expected --config FILE");
    c = parse_config(it->second, path + " (its config)", o.overrides);
    if (!o.device.empty()) c.device = o.device;
  }
  if (!data_dir.empty()) c.data.dir = data_dir;
  return c;
}

}  // namespace gputrain::cli
