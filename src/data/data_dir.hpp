// The one check both readers make of data.dir before looking for their files.
#pragma once

#include <filesystem>
#include <string>

#include "gputrain/errors.hpp"

namespace gputrain {

// DataError unless `dir` is an existing folder; `expected` says what it should hold.
inline void check_data_dir(const std::string& dir, const std::string& expected) {
  std::error_code ec;
  const auto status = std::filesystem::status(dir, ec);
  if (dir.empty() || !std::filesystem::exists(status))
    throw DataError("data.dir: folder '" + dir + "' does not exist");
  if (!std::filesystem::is_directory(status))
    throw DataError("data.dir: '" + dir + "' is not a folder, expected " + expected);
}

}  // namespace gputrain
