// What a run draws for people to watch it: curves.png after every epoch (output.curves) and
// TensorBoard event files (output.tensorboard). Written by rank 0 only; never holds up training;
// problems are warnings (through `warn`, once per kind), never failures of the run.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "gputrain/config.hpp"

namespace gputrain {

class CurvePlotter;
class EventWriter;
class RunOutputs;
struct EpochMetrics;

class RunCharts {
 public:
  using Warn = std::function<void(const std::string&)>;
  // `writes`: false on data-parallel ranks other than 0 (then every call does nothing).
  RunCharts(const Config& config, const RunOutputs& outputs, bool writes, Warn warn);
  // An interrupted or failed run: a drawing in progress is abandoned at once.
  ~RunCharts();
  RunCharts(const RunCharts&) = delete;
  RunCharts& operator=(const RunCharts&) = delete;

  // A log interval's running means of the epoch so far, at `global_step`.
  void log(int64_t global_step, double loss, double accuracy, double lr);
  // The epoch's line is in metrics.jsonl.
  void epoch_done(const EpochMetrics& m);
  // The run ended normally: the charts brought up to date (waiting for the plotter, unless *stop).
  void finish(const std::atomic<bool>* stop);

 private:
  void warn_if(const std::string& warning) const {
    if (!warning.empty()) warn_(warning);
  }
  void events_failed(const std::exception& e);
  Warn warn_;
  std::unique_ptr<CurvePlotter> curves_;
  std::unique_ptr<EventWriter> events_;
};

}  // namespace gputrain
