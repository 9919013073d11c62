// Console reporting of a run: a progress bar on a terminal (as wide as the terminal), plain log
// lines with images/s and ETA otherwise; warnings on stderr whatever --quiet says.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "gputrain/trainer.hpp"

namespace gputrain::cli {

class ConsoleObserver final : public TrainObserver {
 public:
  explicit ConsoleObserver(bool quiet);

  void on_info(const std::string& message) override;
  void on_warning(const std::string& message) override;
  void on_detail(const std::string& message) override;
  void on_step(int epoch, int64_t step, int64_t steps, int64_t samples_done) override;
  void on_log(int epoch, int64_t step, int64_t steps, double loss, double acc) override;
  void on_epoch(const EpochMetrics& m) override;

  void set_batch(int batch) { batch_ = batch; }

 private:
  // Images per second since the epoch's first step, and the time left in the epoch (< 0: not
  // known yet).
  double images_per_s(int64_t step) const;
  double eta_seconds(int64_t step, int64_t steps) const;

  bool quiet_, tty_;
  int epoch_ = 0, batch_ = 1;
  int64_t first_step_ = 0;
  std::chrono::steady_clock::time_point epoch_start_, last_draw_;
};

// If a progress bar is on screen, ends its line, so that a message (the Ctrl-C one) starts on a
// line of its own.
void end_progress_line();

// "1:05", "2:03:07".
std::string format_duration(double seconds);

}  // namespace gputrain::cli
