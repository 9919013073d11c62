#include "core/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "gputrain/errors.hpp"

namespace gputrain {

namespace {

[[noreturn]] void write_failed(const std::string& path, int err) {
  throw IoError("cannot write '" + path + "': " + std::strerror(err));
}

// The process umask without changing it (umask(2) can only be read by setting it, which races
// with other threads creating files).
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0)
      return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
  }
  return 022;
}

void write_all(int fd, std::string_view bytes, int& err) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0 && err == 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
    } else {
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
}

std::string parent_folder(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, std::vector<std::string_view>{bytes});
}

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& parts) {
  if (path.empty()) throw IoError("cannot write '': empty file name");
  if (path.back() == '/') write_failed(path, EISDIR);
  std::string folder = parent_folder(path);
  std::string base = path.substr(path.find_last_of('/') + 1);
  std::string tmpl = (folder == "/" ? "/" : folder + "/") + "." + base + ".tmp.XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');

  int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) write_failed(path, errno);
  int err = 0;

  struct stat existing {};
  mode_t mode = (::stat(path.c_str(), &existing) == 0 && S_ISREG(existing.st_mode))
                    ? (existing.st_mode & 07777)
                    : (0666 & ~current_umask());
  if (::fchmod(fd, mode) != 0) err = errno;
  for (std::string_view part : parts) write_all(fd, part, err);
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(name.data(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(name.data());
    write_failed(path, err);
  }

  // Without this the rename itself may not survive a crash, leaving the old file (or none).
  int dfd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    int rc = ::fsync(dfd);
    int fsync_err = errno;
    ::close(dfd);
    // Some file systems cannot fsync a folder; the file itself is complete and in place.
    if (rc != 0 && fsync_err != EINVAL && fsync_err != ENOTSUP) write_failed(path, fsync_err);
  }
}

void ensure_directory(const std::string& path) {
  if (path.empty()) throw IoError("cannot create folder '': empty path");
  // Creating each prefix in turn (rather than testing first) keeps this correct when another
  // process creates the same folders concurrently.
  size_t pos = 0;
  while (pos != std::string::npos) {
    size_t slash = path.find('/', pos);
    std::string prefix = path.substr(0, slash);
    pos = slash == std::string::npos ? slash : slash + 1;
    if (prefix.empty() || prefix == "." || prefix == "..") continue;
    if (::mkdir(prefix.c_str(), 0777) == 0) continue;
    int err = errno;
    struct stat st {};
    if (::stat(prefix.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) continue;
      if (prefix.size() == path.size() ||
          path.find_first_not_of('/', prefix.size()) == std::string::npos)
        throw IoError("cannot create folder '" + path + "': a file is in the way");
      throw IoError("cannot create folder '" + path + "': '" + prefix +
                    "' is a file, not a folder");
    }
    throw IoError("cannot create folder '" + path + "': " + std::strerror(err));
  }
}

}  // namespace gputrain
