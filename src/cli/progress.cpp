#include "cli/progress.hpp"

#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>

namespace gputrain::cli {

namespace {

std::atomic<bool> g_bar_on_screen{false};

// The terminal's width in columns (TIOCGWINSZ), 80 when it does not say.
int terminal_columns() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

std::string speed_text(double images_per_s) {
  return images_per_s > 0 ? fmt::format("{:.0f} images/s", images_per_s) : "-- images/s";
}

std::string eta_text(double seconds) {
  return seconds >= 0 ? format_duration(seconds) : "--:--";
}

}  // namespace

std::string format_duration(double seconds) {
  const int s = int(std::lround(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
  return buf;
}

void end_progress_line() {
  if (g_bar_on_screen.exchange(false)) {
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }
}

ConsoleObserver::ConsoleObserver(bool quiet)
    : quiet_(quiet), tty_(!quiet && isatty(STDOUT_FILENO)) {}

void ConsoleObserver::on_info(const std::string& message) {
  spdlog::info("{}", message);
}

void ConsoleObserver::on_warning(const std::string& message) {
  end_progress_line();
  spdlog::warn("warning: {}", message);
}

void ConsoleObserver::on_detail(const std::string& message) {
  spdlog::debug("{}", message);
}

double ConsoleObserver::images_per_s(int64_t step) const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start_).count();
  return elapsed > 0 && step > first_step_ ? double(step - first_step_) * batch_ / elapsed : 0;
}

double ConsoleObserver::eta_seconds(int64_t step, int64_t steps) const {
  const double rate = images_per_s(step);
  return rate > 0 ? double(steps - step) * batch_ / rate : -1;
}

void ConsoleObserver::on_step(int epoch, int64_t step, int64_t steps, int64_t) {
  if (step == 1 || epoch != epoch_) {
    epoch_ = epoch;
    // Rates are measured from this step on: it has just finished, so it is the reference point.
    epoch_start_ = std::chrono::steady_clock::now();
    first_step_ = step;
  }
  if (!tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (step != steps && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const int columns = terminal_columns();
  const std::string head = fmt::format("  epoch {} [", epoch);
  const std::string tail =
      fmt::format("] {}/{}  {}  ETA {}", step, steps, speed_text(images_per_s(step)),
                  eta_text(eta_seconds(step, steps)));
  // The last column stays free: writing into it wraps on some terminals.
  const int room = columns - 1 - int(head.size() + tail.size());
  const int width = std::clamp(room, 10, 30);
  const int filled = int(width * step / std::max<int64_t>(steps, 1));
  std::string bar(size_t(filled), '#');
  bar.resize(size_t(width), '.');
  std::string line = head + bar + tail;
  if (int(line.size()) > columns - 1) line.resize(size_t(std::max(columns - 1, 0)));
  std::printf("\r%-*s", columns - 1, line.c_str());
  std::fflush(stdout);
  g_bar_on_screen = true;
  if (step == steps) {
    std::printf("\r%*s\r", columns - 1, "");
    std::fflush(stdout);
    g_bar_on_screen = false;
  }
}

void ConsoleObserver::on_log(int epoch, int64_t step, int64_t steps, double loss, double acc) {
  if (tty_ || quiet_) return;  // the bar shows progress on a terminal
  spdlog::info("epoch {} step {}/{}: loss {:.4f}, accuracy {:.4f}, {}, ETA {}", epoch, step, steps,
               loss, acc, speed_text(images_per_s(step)), eta_text(eta_seconds(step, steps)));
}

void ConsoleObserver::on_epoch(const EpochMetrics& m) {
  std::string busy =
      m.gpu_busy_percent >= 0 ? fmt::format(", GPU busy {:.1f}%", m.gpu_busy_percent) : "";
  const std::string val =
      m.has_val ? fmt::format(" | val loss {:.4f} acc {:.4f}", m.val_loss, m.val_acc) : "";
  spdlog::info(
      "epoch {}: train loss {:.4f} acc {:.4f}{} | test loss {:.4f} acc {:.4f} | {:.1f} s, "
      "{:.0f} images/s{}",
      m.epoch, m.train_loss, m.train_acc, val, m.test_loss, m.test_acc, m.seconds, m.images_per_s,
      busy);
}

}  // namespace gputrain::cli
