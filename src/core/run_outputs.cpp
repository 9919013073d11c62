#include "core/run_outputs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <random>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/json.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {
namespace {

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

[[noreturn]] void io_failed(const std::string& what, const std::string& path, int err) {
  throw IoError("cannot " + what + " '" + path + "': " + std::strerror(err));
}

}  // namespace

const char* const RunOutputs::kModel = "model.safetensors";
const char* const RunOutputs::kBestModel = "model_best.safetensors";
const char* const RunOutputs::kCheckpoint = "checkpoint.safetensors";
const char* const RunOutputs::kMetrics = "metrics.jsonl";
const char* const RunOutputs::kConfig = "config.yaml";
const char* const RunOutputs::kCurves = "curves.png";
const char* const RunOutputs::kEventsPrefix = "events.out.tfevents.";

RunOutputs::RunOutputs(std::string dir, bool overwrite, bool resuming_here, bool writes)
    : dir_(std::move(dir)), overwrite_(overwrite), resuming_here_(resuming_here), writes_(writes) {
  if (dir_.empty()) dir_ = ".";
  if (overwrite_ || resuming_here_) return;
  for (const char* name : {kModel, kBestModel, kCheckpoint, kMetrics, kConfig})
    if (exists(path(name)))
      throw IoError("output folder '" + dir_ + "' already holds a run (" + name +
                    "); use --overwrite to replace it, --out for another folder, or --resume " +
                    path(kCheckpoint) + " to continue it");
}

RunOutputs::~RunOutputs() {
  if (metrics_fd_ >= 0) ::close(metrics_fd_);
}

std::string RunOutputs::path(const std::string& name) const {
  return dir_.back() == '/' ? dir_ + name : dir_ + "/" + name;
}

void RunOutputs::prepare(const std::string& run_id, int keep_epochs) {
  if (!writes_) return;
  ensure_directory(dir_);
  if (overwrite_ && !resuming_here_) {
    std::vector<std::string> names = {kModel, kBestModel, kCheckpoint, kMetrics, kConfig, kCurves};
    // The earlier run's TensorBoard events too: TensorBoard would draw both runs as one.
    if (DIR* folder = ::opendir(dir_.c_str())) {
      while (const dirent* entry = ::readdir(folder))
        if (std::strncmp(entry->d_name, kEventsPrefix, std::strlen(kEventsPrefix)) == 0)
          names.push_back(entry->d_name);
      ::closedir(folder);
    }
    for (const std::string& name : names)
      if (::unlink(path(name).c_str()) != 0 && errno != ENOENT)
        io_failed("remove", path(name), errno);
  }

  const std::string metrics = path(kMetrics);
  // Keep the prefix of whole lines that belong to this run and to epochs the checkpoint covers;
  // truncate in place (same inode: a `tail -f` keeps following the file).
  off_t keep_bytes = 0;
  if (resuming_here_) {
    std::ifstream in(metrics, std::ios::binary);
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // no newline: a torn last line
      bool ours = false;
      try {
        const JsonValue v = parse_json(line);
        const JsonValue* e = v.find("epoch");
        const JsonValue* id = v.find("run_id");
        ours = e && e->is_number() && e->as_number() <= keep_epochs &&
               (!id || (id->is_string() && id->as_string() == run_id));
      } catch (const std::exception&) {
      }
      if (!ours) break;
      keep_bytes += off_t(line.size() + 1);
    }
  }
  metrics_fd_ = ::open(metrics.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (metrics_fd_ < 0) io_failed("write", metrics, errno);
  if (::ftruncate(metrics_fd_, keep_bytes) != 0) io_failed("write", metrics, errno);
}

void RunOutputs::write_config(const std::string& yaml) {
  if (!writes_) return;
  write_file_atomic(path(kConfig), yaml);
}

void RunOutputs::append_metrics(const std::string& json_line) {
  if (!writes_) return;
  const std::string text = json_line + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(metrics_fd_, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      io_failed("write", path(kMetrics), errno);
    }
    done += size_t(n);
  }
  if (::fsync(metrics_fd_) != 0) io_failed("write", path(kMetrics), errno);
}

std::string expand_home(const std::string& path) {
  if (path == "~" || path.rfind("~/", 0) == 0) {
    const char* home = std::getenv("HOME");
    if (home && *home) return std::string(home) + path.substr(1);
  }
  return path;
}

std::string parent_folder(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string new_run_id() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
  std::random_device rd;
  char suffix[16];
  std::snprintf(suffix, sizeof(suffix), "%06x", unsigned(rd()) & 0xFFFFFFu);
  return std::string(stamp) + "-" + suffix;
}

std::string utc_timestamp() {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t t = system_clock::to_time_t(now);
  const int ms = int(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[40];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
  char full[48];
  std::snprintf(full, sizeof(full), "%s.%03dZ", text, ms);
  return full;
}

}  // namespace gputrain
