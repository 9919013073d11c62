// curves.png: drawn by scripts/plot_curves.py (matplotlib) in a child process, so a slow plotter
// never holds up training and a missing one costs one warning, not the run.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <string>
#include <vector>

namespace gputrain {

// The helper script: $GPUTRAIN_PLOT_SCRIPT, else the source tree's scripts/plot_curves.py; run by
// $GPUTRAIN_PLOT_PYTHON, else /usr/bin/python3 (Debian's, with python3-matplotlib), else python3.
std::string plot_script_path();

// Runs the helper on `metrics` → `out_png` and waits; returns its exit code (127: python3 or the
// script could not be started) and its stderr in *errors.
int plot_curves(const std::vector<std::string>& metrics, const std::string& out_png,
                std::string* errors);

// A run's curves.png, redrawn from its metrics.jsonl after every epoch by a helper process that
// training never waits for: at most one runs at a time (an epoch that ends while one draws is
// drawn by the next one, or at the end of the run), at low priority (nice 10), in its own process
// group (a terminal's Ctrl-C reaches gputrain only, which decides). The helper writes a temporary
// file named here and renames it over curves.png, so a reader never sees a half-written picture.
class CurvePlotter {
 public:
  CurvePlotter(std::string metrics_path, std::string png_path);
  // Abandons a drawing in progress (SIGKILL, its temporary file removed): the interrupted or
  // failed run ends at once, keeping the last curves.png drawn whole.
  ~CurvePlotter();
  CurvePlotter(const CurvePlotter&) = delete;
  CurvePlotter& operator=(const CurvePlotter&) = delete;

  // An epoch line was appended to the metrics: starts a drawing unless one is in progress (then
  // it is drawn later). Never waits. Returns a warning to show, or empty: the first failure of the
  // helper (not installed, no matplotlib, …) disables drawing for the rest of the run, so a run
  // warns at most once.
  std::string epoch_done();

  // The end of the run: curves.png made to show every epoch (a drawing still at low priority is
  // restarted at normal priority, training being over), waiting at most `limit_s` seconds and
  // giving up at once when *stop becomes true. A warning as epoch_done() does.
  std::string finish(const std::atomic<bool>* stop, double limit_s = 120);

 private:
  std::string start(bool low_priority);
  // Reaps the helper if it has ended (never waits); *warning when it failed. False: still running.
  bool reap(std::string* warning);
  void kill_child();
  std::string failure(int exit_code);

  std::string metrics_, png_, tmp_;
  pid_t child_ = -1;
  bool child_low_priority_ = false;
  bool stale_ = false;     // an epoch ended since the drawing in progress (or the last) started
  bool disabled_ = false;  // the helper failed once: no more drawings, no more warnings
};

}  // namespace gputrain
