// The config of a command that starts from a weights file (eval, predict, export): --config when
// given, else the resolved config recorded in the weights' __metadata__.config.
#pragma once

#include <string>

#include "cli/cli_common.hpp"

namespace gputrain::cli {

// --set applies in both cases, --device over the config's device, `data_dir` (--data, may be
// empty) over data.dir. WeightsError when there is no --config and the file records no config.
Config config_for_weights(const CommonOptions& options, const std::string& weights_path,
                          const std::string& data_dir);

}  // namespace gputrain::cli
