// curves.png: drawn by scripts/plot_curves.py (matplotlib) in a child process, so a slow plotter
// never holds up training and a missing one costs one warning, not the run.
#pragma once

#include <sys/types.h>

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

class CurvePlotter {
 public:
  CurvePlotter() = default;
  ~CurvePlotter();
  CurvePlotter(const CurvePlotter&) = delete;
  CurvePlotter& operator=(const CurvePlotter&) = delete;

  // Waits for the previous drawing, then starts one (unless disabled). Returns a warning to show
  // (once per run: then drawing stops), or empty.
  std::string draw(const std::string& metrics, const std::string& out_png);
  // Waits for the drawing in progress; a warning as draw() does.
  std::string finish();

 private:
  std::string finish_child();
  pid_t child_ = -1;
  std::vector<std::string> pending_;  // {metrics, png} of a drawing skipped while one ran
  bool disabled_ = false;
};

}  // namespace gputrain
