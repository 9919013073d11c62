#include "core/curves.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>

extern char** environ;

namespace gputrain {
namespace {

using Clock = std::chrono::steady_clock;

struct SpawnOptions {
  int err_fd = -1;         // the helper's stderr; < 0: /dev/null
  bool own_group = false;  // its own process group: a terminal's Ctrl-C does not reach it
  std::string tmp;         // --tmp: the temporary file it renames over the PNG
};

// Starts python3 on the helper. -1 when it cannot be started (no such interpreter).
pid_t spawn_plotter(const std::vector<std::string>& metrics, const std::string& out_png,
                    const SpawnOptions& o) {
  // Debian's python3 first: that is where python3-matplotlib installs (a pyenv or virtualenv
  // python3 first on PATH usually lacks it); $GPUTRAIN_PLOT_PYTHON overrides.
  std::string python = "python3";
  if (const char* env = std::getenv("GPUTRAIN_PLOT_PYTHON"); env && *env)
    python = env;
  else if (::access("/usr/bin/python3", X_OK) == 0)
    python = "/usr/bin/python3";
  std::vector<std::string> args = {python, plot_script_path(), "--out", out_png};
  if (!o.tmp.empty()) args.insert(args.end(), {"--tmp", o.tmp});
  args.insert(args.end(), metrics.begin(), metrics.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  if (o.err_fd >= 0)
    posix_spawn_file_actions_adddup2(&actions, o.err_fd, STDERR_FILENO);
  else
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  // Nothing else of gputrain's: not the metrics file, and under mpirun not the launcher's sockets
  // and pipes, which must close when this rank ends, not when its helper does.
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
  // gputrain ignores SIGPIPE and catches the stop signals: the helper gets the defaults back.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t defaults, none;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP}) sigaddset(&defaults, sig);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setsigmask(&attr, &none);
  short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
  if (o.own_group) {
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&attr, 0);
  }
  posix_spawnattr_setflags(&attr, flags);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, python.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

int exit_code_of(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return 127;
  return exit_code_of(status);
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
  SpawnOptions options;
  options.err_fd = pipe_fds[1];
  const pid_t pid = spawn_plotter(metrics, out_png, options);
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

CurvePlotter::CurvePlotter(std::string metrics_path, std::string png_path)
    : metrics_(std::move(metrics_path)), png_(std::move(png_path)) {
  // In the PNG's folder (rename stays on one file system); named by this process, so an orphaned
  // helper of an earlier, killed run cannot be writing the same file.
  const size_t slash = png_.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : png_.substr(0, slash);
  tmp_ = folder + "/.curves.png." + std::to_string(::getpid()) + ".tmp";
}

CurvePlotter::~CurvePlotter() {
  kill_child();
}

std::string CurvePlotter::failure(int exit_code) {
  if (disabled_) return "";
  disabled_ = true;
  if (exit_code == 3)
    return "curves.png not drawn: matplotlib is not installed (Debian: python3-matplotlib)";
  if (exit_code == 127)
    return "curves.png not drawn: python3 or " + plot_script_path() + " could not be started";
  return "curves.png not drawn: " + plot_script_path() + " exited with status " +
         std::to_string(exit_code);
}

bool CurvePlotter::reap(std::string* warning) {
  if (child_ < 0) return true;
  int status = 0;
  pid_t got;
  while ((got = ::waitpid(child_, &status, WNOHANG)) < 0 && errno == EINTR) {
  }
  if (got == 0) return false;
  child_ = -1;
  ::unlink(tmp_.c_str());    // what a failed helper may have left (after a success: gone already)
  if (got < 0) return true;  // reaped by someone else (ECHILD): its outcome is unknown
  const int code = exit_code_of(status);
  if (code != 0) *warning = failure(code);
  return true;
}

void CurvePlotter::kill_child() {
  if (child_ < 0) return;
  ::kill(-child_, SIGKILL);  // its process group: whatever the helper started dies with it
  // A killed process is reaped within milliseconds; a bound all the same, so that an exit never
  // hangs on it (an unreaped child is the kernel's to clean up when gputrain exits).
  const auto start = Clock::now();
  int status = 0;
  while (::waitpid(child_, &status, WNOHANG) == 0 &&
         Clock::now() - start < std::chrono::milliseconds(500))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  child_ = -1;
  ::unlink(tmp_.c_str());  // killed between writing and renaming: curves.png is the previous one
}

std::string CurvePlotter::start(bool low_priority) {
  SpawnOptions options;
  options.own_group = true;
  options.tmp = tmp_;
  child_ = spawn_plotter({metrics_}, png_, options);
  if (child_ < 0) return failure(127);
  if (low_priority) {
    // Raising a child's nice value needs no privilege; training keeps its share of the cores.
    errno = 0;
    const int nice_now = ::getpriority(PRIO_PROCESS, 0);
    if (errno == 0) ::setpriority(PRIO_PROCESS, id_t(child_), std::min(nice_now + 10, 19));
  }
  child_low_priority_ = low_priority;
  stale_ = false;
  return "";
}

std::string CurvePlotter::epoch_done() {
  stale_ = true;
  std::string warning;
  if (!reap(&warning)) return "";  // still drawing: this epoch is drawn next
  if (disabled_) return warning;
  return start(true);
}

std::string CurvePlotter::finish(const std::atomic<bool>* stop, double limit_s) {
  std::string warning;
  if (!reap(&warning) && (stale_ || child_low_priority_)) {
    kill_child();  // behind, or at low priority with training over: draw anew at full speed
    stale_ = true;
  }
  if (stale_ && !disabled_) warning = start(false);
  const auto begin = Clock::now();
  while (!reap(&warning)) {
    if (stop && stop->load()) {
      kill_child();
      break;
    }
    if (std::chrono::duration<double>(Clock::now() - begin).count() > limit_s) {
      kill_child();
      if (!disabled_) {
        disabled_ = true;
        warning = "curves.png not brought up to date: " + plot_script_path() + " took over " +
                  std::to_string(int(limit_s)) + " s";
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return warning;
}

}  // namespace gputrain
