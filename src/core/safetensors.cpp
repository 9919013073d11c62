#include "gputrain/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <stdexcept>

#include "core/atomic_file.hpp"
#include "core/json.hpp"
#include "core/message.hpp"
#include "gputrain/errors.hpp"

namespace gputrain {

namespace {

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O assumes a little-endian host (tensor bytes are copied as they are)"
#endif

// The reference implementation refuses larger headers too; it bounds what a hostile file can make
// us allocate and parse before anything else is checked.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

const char* const kKnownDtypes[] = {
    "BOOL", "U8",  "I8",  "I16",     "U16",     "F16",     "BF16", "I32",     "U32",     "F32",
    "F64",  "I64", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4",   "F6_E2M3", "F6_E3M2", "C64"};

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

struct Reader {
  const std::string& path;

  [[noreturn]] void invalid(const std::string& what) const {
    throw WeightsError(one_line("invalid safetensors file '" + path + "': " + what));
  }
  [[noreturn]] void io_failed(int err) const {
    throw WeightsError(one_line("cannot read weights '" + path + "': " + std::strerror(err)));
  }

  // Reads exactly n bytes at `offset`; a short read means the file changed under us.
  void read_at(int fd, void* dst, size_t n, uint64_t offset) const {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
      if (got < 0) {
        if (errno == EINTR) continue;
        io_failed(errno);
      }
      if (got == 0) invalid("file ended early (truncated while reading?)");
      p += got;
      n -= static_cast<size_t>(got);
      offset += static_cast<uint64_t>(got);
    }
  }

  // A JSON integer in [0, limit], else an error naming `what`.
  uint64_t bounded_integer(const JsonValue& v, uint64_t limit, const std::string& what) const {
    if (!v.is_integer() || v.as_int64() < 0)
      invalid(what + " must be a non-negative integer, got " + v.dump().substr(0, 40));
    uint64_t u = static_cast<uint64_t>(v.as_int64());
    if (u > limit)
      invalid(what + " is " + std::to_string(u) + ", beyond the " + std::to_string(limit) +
              " the file can hold");
    return u;
  }
};

struct Entry {
  NamedTensor tensor;
  uint64_t begin = 0, end = 0;
  bool int64 = false;  // an I64 tensor: read into TensorFile::raw_tensors
};

}  // namespace

const NamedTensor* TensorFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const RawTensor* TensorFile::find_raw(const std::string& name) const {
  for (const auto& t : raw_tensors)
    if (t.name == name) return &t;
  return nullptr;
}

TensorFile read_safetensors(const std::string& path) {
  Reader r{path};
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) r.io_failed(errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) r.io_failed(errno);
  if (S_ISDIR(st.st_mode)) r.io_failed(EISDIR);
  if (!S_ISREG(st.st_mode)) r.invalid("not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8)
    r.invalid("the file is " + std::to_string(file_size) +
              " bytes, too short for the 8-byte header length");

  unsigned char len_bytes[8];
  r.read_at(fd.get(), len_bytes, 8, 0);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > file_size - 8)
    r.invalid("the header length " + std::to_string(header_len) + " exceeds the file size " +
              std::to_string(file_size) + " (not a safetensors file?)");
  if (header_len > kMaxHeaderBytes)
    r.invalid("the header length " + std::to_string(header_len) + " exceeds the limit of " +
              std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_len < 2)
    r.invalid("the header is " + std::to_string(header_len) + " bytes, too short");

  std::string header(static_cast<size_t>(header_len), '\0');
  r.read_at(fd.get(), header.data(), header.size(), 8);
  if (header[0] != '{') r.invalid("the header does not start with '{' (not a safetensors file?)");

  JsonValue root;
  try {
    root = parse_json(header, 16);
  } catch (const JsonParseError& e) {
    r.invalid(std::string("invalid JSON header: ") + e.what());
  }
  if (!root.is_object()) r.invalid("the JSON header is not an object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  TensorFile out;
  std::vector<Entry> entries;
  for (const auto& [key, value] : root.as_object()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;
      if (!value.is_object())
        r.invalid("__metadata__ is " + std::string(JsonValue::type_name(value.type())) +
                  ", expected an object of strings");
      for (const auto& [mk, mv] : value.as_object()) {
        if (!mv.is_string())
          r.invalid("__metadata__ entry '" + mk + "' is " + JsonValue::type_name(mv.type()) +
                    ", expected a string");
        out.metadata[mk] = mv.as_string();
      }
      continue;
    }
    const std::string what = "tensor '" + key + "'";
    if (key.empty()) r.invalid("a tensor has an empty name");
    if (!value.is_object())
      r.invalid(what + " is " + JsonValue::type_name(value.type()) +
                ", expected an object {dtype, shape, data_offsets}");
    const JsonValue* dtype = value.find("dtype");
    const JsonValue* shape = value.find("shape");
    const JsonValue* offsets = value.find("data_offsets");
    if (!dtype) r.invalid(what + " has no dtype");
    if (!shape) r.invalid(what + " has no shape");
    if (!offsets) r.invalid(what + " has no data_offsets");
    if (!dtype->is_string()) r.invalid(what + ": dtype is not a string");
    const bool int64 = dtype->as_string() == "I64";
    if (dtype->as_string() != "F32" && !int64) {
      bool known = std::find(std::begin(kKnownDtypes), std::end(kKnownDtypes),
                             dtype->as_string()) != std::end(kKnownDtypes);
      r.invalid(what + " has " + (known ? "" : "unknown ") + "dtype " +
                json_escape(dtype->as_string().substr(0, 32)) + ", expected F32");
    }

    Entry e;
    e.tensor.name = key;
    e.int64 = int64;
    const uint64_t element_bytes = int64 ? 8 : 4;
    if (!shape->is_array()) r.invalid(what + ": shape is not an array");
    if (shape->as_array().size() > 16)
      r.invalid(what + " has " + std::to_string(shape->as_array().size()) + " dimensions");
    // Bounding each dimension and the running product by the data size keeps the product exact
    // (no overflow) and any later allocation no larger than the file.
    const uint64_t max_elements = data_size / element_bytes;
    uint64_t elements = 1;
    bool empty = false;
    for (size_t d = 0; d < shape->as_array().size(); ++d) {
      uint64_t dim = r.bounded_integer(shape->as_array()[d], std::numeric_limits<int64_t>::max(),
                                       what + " shape[" + std::to_string(d) + "]");
      e.tensor.shape.push_back(static_cast<int64_t>(dim));
      if (dim == 0) empty = true;
      if (!empty) {
        if (dim > max_elements || elements > max_elements / dim)
          r.invalid(what + " has shape " + shape->dump() + ", more data than the file holds");
        elements *= dim;
      }
    }
    if (empty) elements = 0;

    if (!offsets->is_array() || offsets->as_array().size() != 2)
      r.invalid(what + ": data_offsets must be [begin, end]");
    e.begin = r.bounded_integer(offsets->as_array()[0], data_size, what + " data_offsets begin");
    e.end = r.bounded_integer(offsets->as_array()[1], data_size, what + " data_offsets end");
    if (e.end < e.begin)
      r.invalid(what + " data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                "] end before they begin");
    if (e.end - e.begin != elements * element_bytes)
      r.invalid(what + " data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                "] span " + std::to_string(e.end - e.begin) + " bytes, but shape " + shape->dump() +
                " in " + dtype->as_string() + " needs " + std::to_string(elements * element_bytes));
    entries.push_back(std::move(e));
  }

  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Sorted by begin, a tensor overlaps an earlier one exactly when it begins before the furthest
  // end seen so far.
  uint64_t furthest_end = 0;
  const std::string* furthest_name = nullptr;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    if (furthest_name && e.begin < furthest_end)
      r.invalid("tensors '" + *furthest_name + "' and '" + e.tensor.name + "' overlap");
    if (e.end > furthest_end) {
      furthest_end = e.end;
      furthest_name = &e.tensor.name;
    }
  }

  out.tensors.reserve(entries.size());
  for (Entry& e : entries) {
    if (e.int64) {
      RawTensor t;
      t.name = std::move(e.tensor.name);
      t.dtype = "I64";
      t.shape = std::move(e.tensor.shape);
      t.bytes.resize(static_cast<size_t>(e.end - e.begin));
      if (!t.bytes.empty())
        r.read_at(fd.get(), t.bytes.data(), t.bytes.size(), data_start + e.begin);
      out.raw_tensors.push_back(std::move(t));
      continue;
    }
    e.tensor.values.resize(static_cast<size_t>((e.end - e.begin) / 4));
    if (!e.tensor.values.empty())
      r.read_at(fd.get(), e.tensor.values.data(), static_cast<size_t>(e.end - e.begin),
                data_start + e.begin);
    out.tensors.push_back(std::move(e.tensor));
  }
  return out;
}

void write_safetensors(const std::string& path, const TensorFile& file) {
  JsonValue header = JsonValue::object();
  // The reference implementation writes __metadata__ first; readers do not care, people do.
  if (!file.metadata.empty()) {
    JsonValue meta = JsonValue::object();
    for (const auto& [k, v] : file.metadata) meta.set(k, JsonValue(v));
    header.set("__metadata__", std::move(meta));
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  // The reference writer orders tensors by alignment, largest first, so that every tensor's data
  // starts aligned to its element size in the file (loaders that view the bytes in place need it):
  // the 8-byte I64 tensors, then F32, then I32 and U8.
  auto i64_first = [](const RawTensor& t) { return t.dtype == "I64"; };
  auto add_raw = [&](const RawTensor& t) {
    if (t.name.empty() || t.name == "__metadata__" || !names.insert(t.name).second)
      throw std::invalid_argument("write_safetensors: bad or duplicate tensor name '" + t.name +
                                  "'");
    if (t.dtype != "U8" && t.dtype != "I32" && t.dtype != "I64")
      throw std::invalid_argument("write_safetensors: raw tensor '" + t.name + "' has dtype " +
                                  t.dtype + ", expected U8, I32 or I64");
    uint64_t elements = 1;
    JsonValue shape = JsonValue::array();
    for (int64_t d : t.shape) {
      if (d < 0)
        throw std::invalid_argument("write_safetensors: negative dimension in '" + t.name + "'");
      elements *= static_cast<uint64_t>(d);
      shape.push_back(JsonValue(d));
    }
    const uint64_t bytes = elements * (t.dtype == "U8" ? 1 : t.dtype == "I32" ? 4 : 8);
    if (bytes != t.bytes.size())
      throw std::invalid_argument("write_safetensors: tensor '" + t.name + "' holds " +
                                  std::to_string(t.bytes.size()) + " bytes, its shape " +
                                  shape.dump() + " needs " + std::to_string(bytes));
    JsonValue info = JsonValue::object();
    info.set("dtype", JsonValue(t.dtype));
    info.set("shape", std::move(shape));
    JsonValue offsets = JsonValue::array();
    offsets.push_back(JsonValue(offset));
    offset += bytes;
    offsets.push_back(JsonValue(offset));
    info.set("data_offsets", std::move(offsets));
    header.set(t.name, std::move(info));
  };
  for (const RawTensor& t : file.raw_tensors)
    if (i64_first(t)) add_raw(t);
  for (const NamedTensor& t : file.tensors) {
    if (t.name.empty() || t.name == "__metadata__" || !names.insert(t.name).second)
      throw std::invalid_argument("write_safetensors: bad or duplicate tensor name '" + t.name +
                                  "'");
    uint64_t elements = 1;
    JsonValue shape = JsonValue::array();
    for (int64_t d : t.shape) {
      if (d < 0)
        throw std::invalid_argument("write_safetensors: negative dimension in '" + t.name + "'");
      elements *= static_cast<uint64_t>(d);
      shape.push_back(JsonValue(d));
    }
    if (elements != t.values.size())
      throw std::invalid_argument("write_safetensors: tensor '" + t.name + "' holds " +
                                  std::to_string(t.values.size()) + " values, its shape " +
                                  shape.dump() + " needs " + std::to_string(elements));
    JsonValue info = JsonValue::object();
    info.set("dtype", JsonValue("F32"));
    info.set("shape", std::move(shape));
    JsonValue offsets = JsonValue::array();
    offsets.push_back(JsonValue(offset));
    offset += elements * 4;
    offsets.push_back(JsonValue(offset));
    info.set("data_offsets", std::move(offsets));
    header.set(t.name, std::move(info));
  }
  for (const RawTensor& t : file.raw_tensors)
    if (!i64_first(t)) add_raw(t);
  std::string text = header.dump();
  // Padding to 8 bytes keeps the tensor data aligned for readers that map the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));

  std::vector<std::string_view> parts;
  parts.reserve(file.tensors.size() + 2);
  parts.emplace_back(reinterpret_cast<const char*>(len), 8);
  parts.emplace_back(text);
  for (const RawTensor& t : file.raw_tensors)
    if (i64_first(t))
      parts.emplace_back(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  for (const NamedTensor& t : file.tensors)
    parts.emplace_back(reinterpret_cast<const char*>(t.values.data()), t.values.size() * 4);
  for (const RawTensor& t : file.raw_tensors)
    if (!i64_first(t))
      parts.emplace_back(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  write_file_atomic(path, parts);
}

}  // namespace gputrain
