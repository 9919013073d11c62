// TensorBoard event files (output.tensorboard): Event protobuf messages (proto/
// tensorboard_event.proto, compiled by protoc at build time) in TFRecord framing. Built only where
// protobuf is (GPUTRAIN_WITH_TENSORBOARD); the config rejects the key elsewhere.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace gputrain {

// CRC-32C (Castagnoli), as TFRecord framing uses it, and its masked form stored in the file.
uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);

class EventWriter {
 public:
  // Creates `folder`/events.out.tfevents.<unix seconds>.<host name>.<pid> and writes its first
  // event (file_version "brain.Event:2"). IoError naming the file when it cannot be written.
  explicit EventWriter(const std::string& folder);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  const std::string& path() const { return path_; }
  // One event at `step` holding a scalar summary per (tag, value); flushed to the file at once
  // (TensorBoard follows a run as it trains). IoError when the write fails.
  void scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);

 private:
  void write_record(const std::string& bytes);
  std::string path_;
  int fd_ = -1;
};

}  // namespace gputrain
