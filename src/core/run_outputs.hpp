// The output folder of a training run and every file written into it. Nothing here touches the
// disk before prepare() (called once every input has been checked), and a folder that holds an
// earlier run is refused unless the caller says how to treat it (overwrite, or resume into it).
#pragma once

#include <map>
#include <string>

#include "gputrain/checkpoint.hpp"

namespace gputrain {

class MetricsLog;

class RunOutputs {
 public:
  // `resuming_here`: the run continues the checkpoint stored in this very folder. `writes` false:
  // the same checks, but prepare/write_config/append_metrics do nothing (a data-parallel run's
  // ranks other than 0).
  RunOutputs(std::string dir, bool overwrite, bool resuming_here, bool writes = true);
  ~RunOutputs();
  RunOutputs(const RunOutputs&) = delete;
  RunOutputs& operator=(const RunOutputs&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const;

  // The files a run writes (and --overwrite replaces).
  static const char* const kModel;
  static const char* const kBestModel;
  static const char* const kCheckpoint;
  static const char* const kMetrics;
  static const char* const kConfig;
  static const char* const kCurves;        // output.curves (drawn by CurvePlotter)
  static const char* const kEventsPrefix;  // output.tensorboard's files (EventWriter)

  // Creates the folder; with --overwrite, removes the earlier run's files; opens metrics.jsonl for
  // appending, keeping (when resuming here) only its whole lines of `run_id` up to epoch
  // `keep_epochs` — a torn last line from a crash and lines after the checkpoint are dropped.
  void prepare(const std::string& run_id, int keep_epochs);

  void write_config(const std::string& yaml);
  // One line, appended, flushed and fsynced before returning (tail -f sees it at once).
  void append_metrics(const std::string& json_line);

 private:
  std::string dir_;
  bool overwrite_ = false, resuming_here_ = false, writes_ = true;
  int metrics_fd_ = -1;
};

// "~/x" → "$HOME/x" ("~" alone too); other paths unchanged (relative ones stay relative to the
// working directory).
std::string expand_home(const std::string& path);

// The folder holding `path` ("." for a bare file name).
std::string parent_folder(const std::string& path);

// A new run's identity: UTC time and random bits, e.g. "20261130-144500-3f9a1c".
std::string new_run_id();

// The current UTC time, ISO 8601 with milliseconds: "2026-11-30T14:45:00.123Z".
std::string utc_timestamp();

}  // namespace gputrain
