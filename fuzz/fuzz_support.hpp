// Shared by the libFuzzer targets: the readers that take a path get the input through a private
// temporary folder (on /dev/shm when present: no disk I/O per execution).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace gputrain::fuzz {

// A folder made once per process, removed at exit. The name is never destroyed: the exit handler,
// registered while it is being made, runs after function-local statics are gone.
inline const std::string& scratch_dir() {
  static const std::string* dir = [] {
    const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    auto* made = new std::string(std::string(base) + "/gputrain-fuzz-XXXXXX");
    if (!mkdtemp(made->data())) std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return made;
  }();
  return *dir;
}

inline std::string write_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

}  // namespace gputrain::fuzz
