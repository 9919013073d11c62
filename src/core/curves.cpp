#include "core/curves.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>

extern char** environ;

namespace gputrain {
namespace {

// Starts python3 on the helper; stderr into `err_fd` (or /dev/null when < 0). -1 when it fails.
pid_t spawn_plotter(const std::vector<std::string>& metrics, const std::string& out_png,
                    int err_fd) {
  // Debian's python3 first: that is where python3-matplotlib installs (a pyenv or virtualenv
  // python3 first on PATH usually lacks it); $GPUTRAIN_PLOT_PYTHON overrides.
  std::string python = "python3";
  if (const char* env = std::getenv("GPUTRAIN_PLOT_PYTHON"); env && *env)
    python = env;
  else if (::access("/usr/bin/python3", X_OK) == 0)
    python = "/usr/bin/python3";
  std::vector<std::string> args = {python, plot_script_path(), "--out", out_png};
  args.insert(args.end(), metrics.begin(), metrics.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  if (err_fd >= 0)
    posix_spawn_file_actions_adddup2(&actions, err_fd, STDERR_FILENO);
  else
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, python.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return 127;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

}  // namespace

std::string plot_script_path() {
  const char* env = std::getenv("GPUTRAIN_PLOT_SCRIPT");
  if (env && *env) return env;
  return GPUTRAIN_SOURCE_DIR "/scripts/plot_curves.py";
}

int plot_curves(const std::vector<std::string>& metrics, const std::string& out_png,
                std::string* errors) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return 127;
  const pid_t pid = spawn_plotter(metrics, out_png, pipe_fds[1]);
  ::close(pipe_fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) text.append(buf, size_t(n));
  ::close(pipe_fds[0]);
  if (errors) *errors = text;
  return pid < 0 ? 127 : wait_exit_code(pid);
}

CurvePlotter::~CurvePlotter() {
  finish();
}

std::string CurvePlotter::finish() {
  if (child_ >= 0 && !pending_.empty()) {
    std::string warning = finish_child();
    if (!warning.empty() || disabled_) return warning;
    const std::vector<std::string> p = pending_;
    pending_.clear();
    child_ = spawn_plotter({p[0]}, p[1], -1);
  }
  return finish_child();
}

std::string CurvePlotter::finish_child() {
  if (child_ < 0) return "";
  const int code = wait_exit_code(child_);
  child_ = -1;
  if (code == 0 || disabled_) return "";
  disabled_ = true;
  if (code == 3)
    return "curves.png not drawn: matplotlib is not installed (Debian: python3-matplotlib)";
  if (code == 127)
    return "curves.png not drawn: python3 or " + plot_script_path() + " could not be started";
  return "curves.png not drawn: " + plot_script_path() + " exited with status " +
         std::to_string(code);
}

std::string CurvePlotter::draw(const std::string& metrics, const std::string& out_png) {
  if (child_ >= 0) {
    // Still drawing the previous epoch: never hold up training; finish() draws the last state.
    int status = 0;
    if (::waitpid(child_, &status, WNOHANG) == 0) {
      pending_ = {metrics, out_png};
      return "";
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    child_ = -1;
    if (code != 0 && !disabled_) {
      disabled_ = true;
      return code == 3 ? "curves.png not drawn: matplotlib is not installed (Debian: "
                         "python3-matplotlib)"
                       : "curves.png not drawn: " + plot_script_path() + " exited with status " +
                             std::to_string(code);
    }
  }
  pending_.clear();
  std::string warning = finish();
  if (disabled_) return warning;
  child_ = spawn_plotter({metrics}, out_png, -1);
  if (child_ < 0) {
    disabled_ = true;
    return "curves.png not drawn: python3 could not be started";
  }
  return warning;
}

}  // namespace gputrain
