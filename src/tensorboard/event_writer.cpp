#include "tensorboard/event_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "gputrain/errors.hpp"
#include "tensorboard_event.pb.h"

namespace gputrain {
namespace {

std::array<uint32_t, 256> crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected poly
    table[i] = c;
  }
  return table;
}

double unix_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

[[noreturn]] void write_failed(const std::string& path, int err) {
  throw IoError("cannot write '" + path + "': " + std::strerror(err));
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

EventWriter::EventWriter(const std::string& folder) {
  char host[256] = "localhost";
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  const double now = unix_seconds();
  // TensorFlow's name, with the process id so that two runs started in the same second (a
  // resume right after an interrupt) do not share a file.
  path_ = folder + "/events.out.tfevents." + std::to_string(int64_t(now)) + "." + host + "." +
          std::to_string(::getpid());
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd_ < 0) write_failed(path_, errno);
  tensorboard::Event first;
  first.set_wall_time(now);
  first.set_file_version("brain.Event:2");
  write_record(first.SerializeAsString());
}

EventWriter::~EventWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void EventWriter::scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  tensorboard::Event event;
  event.set_wall_time(unix_seconds());
  event.set_step(step);
  for (const auto& [tag, value] : values) {
    tensorboard::Summary::Value* v = event.mutable_summary()->add_value();
    v->set_tag(tag);
    v->set_simple_value(float(value));
  }
  write_record(event.SerializeAsString());
}

// TFRecord: length (u64 LE), its masked CRC-32C (u32 LE), the bytes, their masked CRC-32C.
void EventWriter::write_record(const std::string& bytes) {
  std::string record(16 + bytes.size(), '\0');
  const uint64_t length = bytes.size();
  unsigned char header[8];
  for (int i = 0; i < 8; ++i) header[i] = static_cast<unsigned char>(length >> (8 * i));
  const uint32_t length_crc = masked_crc32c(header, 8);
  const uint32_t data_crc = masked_crc32c(bytes.data(), bytes.size());
  std::memcpy(&record[0], header, 8);
  for (int i = 0; i < 4; ++i) record[8 + i] = char((length_crc >> (8 * i)) & 0xFF);
  std::memcpy(&record[12], bytes.data(), bytes.size());
  for (int i = 0; i < 4; ++i) record[12 + bytes.size() + i] = char((data_crc >> (8 * i)) & 0xFF);
  // One write per record (O_APPEND): a reader never sees a record cut by another write.
  size_t done = 0;
  while (done < record.size()) {
    const ssize_t n = ::write(fd_, record.data() + done, record.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) write_failed(path_, errno);
    done += size_t(n);
  }
}

}  // namespace gputrain
