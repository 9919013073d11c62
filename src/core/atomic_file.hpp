// Outputs are written whole or not at all: a reader (or a crash) sees the old file or the new one,
// never a torn one.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gputrain {

// Writes `bytes` to `path` atomically: a temporary file in the same folder (so rename cannot cross
// file systems), write, fsync, rename over `path`, fsync the folder. The file gets mode 0666 &
// ~umask (or the mode of the file it replaces). On failure the temporary file is removed and
// IoError is thrown: "cannot write '<path>': <strerror>". The folder must exist (see
// ensure_directory).
void write_file_atomic(const std::string& path, std::string_view bytes);

// Same, the file's content being the concatenation of `parts` (saves building one large buffer).
void write_file_atomic(const std::string& path, const std::vector<std::string_view>& parts);

// mkdir -p. IoError naming the folder when it cannot be created (a file in the way, no permission).
void ensure_directory(const std::string& path);

}  // namespace gputrain
