#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/atomic_file.hpp"
#include "gputrain/errors.hpp"
#include "gputrain/safetensors.hpp"
#include "support/expect_error.hpp"

using namespace gputrain;
namespace fs = std::filesystem;

namespace {

// A fresh folder under /tmp, removed with everything in it at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/gputrain-st-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(out.good());
}

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

std::string f32le(const std::vector<float>& values) {
  std::string s(values.size() * 4, '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], 4);
    for (int b = 0; b < 4; ++b) s[i * 4 + size_t(b)] = static_cast<char>((bits >> (8 * b)) & 0xFF);
  }
  return s;
}

// A safetensors file as a Python writer might produce it: header as given (no padding), then data.
std::string build_file(const std::string& header, const std::string& data) {
  return u64le(header.size()) + header + data;
}

// Writes `header` + `data` and requires read_safetensors to fail naming the file and `parts`.
std::string expect_invalid(const TempDir& dir, const std::string& header, const std::string& data,
                           std::vector<std::string> parts) {
  std::string path = dir / "bad.safetensors";
  write_bytes(path, build_file(header, data));
  parts.push_back(path);
  INFO("header: " << header);
  return testing::expect_error<WeightsError>([&] { read_safetensors(path); }, parts);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

std::vector<std::string> temp_files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos)
      out.push_back(e.path().string());
  return out;
}

}  // namespace

TEST_CASE("safetensors round trip keeps names, order, shapes, values bitwise and metadata",
          "[safetensors]") {
  TempDir dir;
  TensorFile file;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  file.tensors.push_back({"conv1.weight", {4, 1, 3, 3}, {}});
  file.tensors.push_back({"conv1.bias", {4}, {}});
  file.tensors.push_back({"a_scalar", {}, {42.5f}});
  file.tensors.push_back({"empty", {0, 5}, {}});
  file.tensors.push_back({"fc.weight", {3, 7}, {}});
  for (auto& t : file.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    if (t.values.empty())
      for (int64_t i = 0; i < n; ++i) t.values.push_back(u(rng));
  }
  // Special values must survive bit for bit.
  file.tensors[1].values = {-0.0f, std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(), 1e-45f};
  file.metadata["normalize_mean"] = "[0.286]";
  file.metadata["config"] = "model:\n  input: [1, 28, 28]\n\"quoted\" \\ \t";
  file.metadata["empty"] = "";

  std::string path = dir / "model.safetensors";
  write_safetensors(path, file);
  TensorFile back = read_safetensors(path);

  REQUIRE(back.tensors.size() == file.tensors.size());
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    INFO(file.tensors[i].name);
    CHECK(back.tensors[i].name == file.tensors[i].name);
    CHECK(back.tensors[i].shape == file.tensors[i].shape);
    CHECK(same_bits(back.tensors[i].values, file.tensors[i].values));
  }
  CHECK(back.metadata == file.metadata);
  REQUIRE(back.find("fc.weight") != nullptr);
  CHECK(back.find("fc.weight")->shape == std::vector<int64_t>{3, 7});
  CHECK(back.find("nope") == nullptr);

  // The layout the reference implementation writes: header padded to 8 bytes, contiguous data.
  std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[size_t(i)]);
  CHECK(n % 8 == 0);
  CHECK(bytes[8] == '{');
  size_t floats = 0;
  for (const auto& t : file.tensors) floats += t.values.size();
  CHECK(bytes.size() == 8 + n + floats * 4);
  CHECK(bytes.compare(8 + n, 4 * 36, f32le(file.tensors[0].values)) == 0);

  // No metadata: no __metadata__ entry.
  TensorFile plain;
  plain.tensors.push_back({"w", {2}, {1.0f, 2.0f}});
  write_safetensors(path, plain);
  CHECK(read_bytes(path).find("__metadata__") == std::string::npos);
  TensorFile plain_back = read_safetensors(path);
  CHECK(plain_back.metadata.empty());
  REQUIRE(plain_back.tensors.size() == 1);
  CHECK(plain_back.tensors[0].values == std::vector<float>{1.0f, 2.0f});
}

TEST_CASE("safetensors reads a file built by hand to the spec", "[safetensors]") {
  TempDir dir;
  std::string path = dir / "hand.safetensors";
  // Unpadded header, keys not in offset order, "b" before "a" in the data, metadata in the middle,
  // whitespace as a JSON writer may emit it.
  std::string header =
      "{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [8, 24]},"
      " \"__metadata__\": {\"format\": \"ptx\"},"
      " \"b\": {\"data_offsets\": [0, 8], \"shape\": [2], \"dtype\": \"F32\"}}";
  REQUIRE(header.size() % 8 != 0);
  write_bytes(path, build_file(header, f32le({10, 20}) + f32le({1, 2, 3, 4})));
  TensorFile f = read_safetensors(path);
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].name == "b");  // file order = data order
  CHECK(f.tensors[0].shape == std::vector<int64_t>{2});
  CHECK(f.tensors[0].values == std::vector<float>{10, 20});
  CHECK(f.tensors[1].name == "a");
  CHECK(f.tensors[1].shape == std::vector<int64_t>{2, 2});
  CHECK(f.tensors[1].values == std::vector<float>{1, 2, 3, 4});
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "ptx"}});

  // Sorted by name with no metadata, as Python's safetensors writes torch state dicts.
  std::string sorted =
      "{\"fc.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
      "\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]}}";
  write_bytes(path, build_file(sorted, f32le({0.5f, -1.5f})));
  TensorFile g = read_safetensors(path);
  REQUIRE(g.tensors.size() == 2);
  CHECK(g.find("fc.weight")->values == std::vector<float>{0.5f});
  CHECK(g.find("fc.bias")->values == std::vector<float>{-1.5f});
  CHECK(g.metadata.empty());

  // Nothing at all but an empty header.
  write_bytes(path, build_file("{}", ""));
  CHECK(read_safetensors(path).tensors.empty());
}

TEST_CASE("safetensors rejects bad files with one line naming the file", "[safetensors]") {
  TempDir dir;
  const std::string t = "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
  const std::string data8 = f32le({1, 2});

  SECTION("missing, a folder, too short") {
    testing::expect_error<WeightsError>([&] { read_safetensors(dir / "none.safetensors"); },
                                        {dir / "none.safetensors", "No such file"});
    testing::expect_error<WeightsError>([&] { read_safetensors(dir.path); }, {dir.path});
    write_bytes(dir / "short", "abc");
    testing::expect_error<WeightsError>([&] { read_safetensors(dir / "short"); },
                                        {dir / "short", "3 bytes"});
    write_bytes(dir / "empty", "");
    testing::expect_error<WeightsError>([&] { read_safetensors(dir / "empty"); }, {dir / "empty"});
  }
  SECTION("header length beyond the file, including 2^60") {
    write_bytes(dir / "huge", u64le(uint64_t(1) << 60) + "{}");
    testing::expect_error<WeightsError>(
        [&] { read_safetensors(dir / "huge"); },
        {dir / "huge", "1152921504606846976", "exceeds the file size"});
    write_bytes(dir / "max", u64le(UINT64_MAX) + "{}");
    testing::expect_error<WeightsError>([&] { read_safetensors(dir / "max"); }, {dir / "max"});
    write_bytes(dir / "off", u64le(10) + "{}");
    testing::expect_error<WeightsError>([&] { read_safetensors(dir / "off"); }, {"exceeds"});
  }
  SECTION("invalid JSON and wrong structure") {
    expect_invalid(dir, "{\"x\": ", "", {"invalid JSON"});
    expect_invalid(dir, "[1, 2]", "", {"start with '{'"});
    expect_invalid(dir, "{} trailing", "", {"invalid JSON"});
    expect_invalid(dir, "{\"x\": 5}", "", {"tensor 'x'", "expected an object"});
    expect_invalid(dir, "{\"x\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", f32le({1}),
                   {"tensor 'x'", "dtype"});
    expect_invalid(dir, "{\"x\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", f32le({1}),
                   {"tensor 'x'", "shape"});
    expect_invalid(dir, "{\"x\": {\"dtype\": \"F32\", \"shape\": [1]}}", f32le({1}),
                   {"tensor 'x'", "data_offsets"});
    expect_invalid(dir, "{\"__metadata__\": {\"k\": 1}}", "", {"__metadata__", "'k'", "string"});
    expect_invalid(dir, "{\"__metadata__\": [1]}", "", {"__metadata__"});
    expect_invalid(dir, "{" + t + "," + t + "}", data8, {"duplicate key"});
  }
  SECTION("dtype other than F32 is named") {
    expect_invalid(dir, "{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", data8,
                   {"tensor 'x' has dtype F64, expected F32"});
    expect_invalid(dir, "{\"x\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
                   f32le({1}), {"dtype BF16"});
    expect_invalid(dir, "{\"x\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,4]}}",
                   f32le({1}), {"unknown dtype Q9"});
    expect_invalid(dir, "{\"x\\ny\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                   data8, {"tensor 'x\\ny' has dtype F64"});
    expect_invalid(dir, "{\"x\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,4]}}", f32le({1}),
                   {"dtype"});
  }
  SECTION("shapes and offsets that do not fit") {
    auto tensor = [](const std::string& shape, const std::string& offsets) {
      return "{\"x\":{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}}";
    };
    expect_invalid(dir, tensor("[3]", "[0,8]"), data8 + data8, {"tensor 'x'", "needs 12"});
    expect_invalid(dir, tensor("[2]", "[0,16]"), data8, {"tensor 'x'", "data_offsets end"});
    expect_invalid(dir, tensor("[2]", "[4,12]"), data8, {"tensor 'x'"});
    expect_invalid(dir, tensor("[2]", "[8,0]"), data8, {"tensor 'x'"});
    expect_invalid(dir, tensor("[2]", "[-8,0]"), data8, {"tensor 'x'", "non-negative"});
    expect_invalid(dir, tensor("[2]", "[0]"), data8, {"[begin, end]"});
    expect_invalid(dir, tensor("[2]", "[0,8.0]"), data8, {"non-negative integer"});
    expect_invalid(dir, tensor("[-2]", "[0,8]"), data8, {"shape[0]"});
    expect_invalid(dir, tensor("[2.5]", "[0,8]"), data8, {"shape[0]"});
    expect_invalid(dir, tensor("2", "[0,8]"), data8, {"shape"});
    expect_invalid(dir, tensor("[4294967296, 4294967296, 4]", "[0,8]"), data8, {"tensor 'x'"});
    expect_invalid(dir, tensor("[9223372036854775807, 2]", "[0,8]"), data8, {"tensor 'x'"});
    expect_invalid(dir, tensor("[99999999999999999999]", "[0,8]"), data8, {"shape[0]"});
    expect_invalid(dir,
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                   data8, {"overlap"});
  }
  SECTION("random bytes and damaged files give a clean WeightsError") {
    std::mt19937 rng(17);
    for (int i = 0; i < 300; ++i) {
      std::string bytes(size_t(rng() % 64), '\0');
      for (char& c : bytes) c = static_cast<char>(rng() & 0xFF);
      if (i % 2 == 1 && bytes.size() > 8) {
        // A plausible header length, so that the JSON parser sees the garbage too.
        std::string len = u64le(bytes.size() - 8 - rng() % (bytes.size() - 8));
        bytes.replace(0, 8, len);
        bytes[8] = '{';
      }
      write_bytes(dir / "random", bytes);
      CHECK_THROWS_AS(read_safetensors(dir / "random"), WeightsError);
    }
    // Every truncation of a valid file fails cleanly; random byte flips fail or read.
    TensorFile file;
    file.tensors.push_back({"w", {3, 2}, {1, 2, 3, 4, 5, 6}});
    file.tensors.push_back({"b", {3}, {7, 8, 9}});
    file.metadata["k"] = "v";
    write_safetensors(dir / "good", file);
    std::string good = read_bytes(dir / "good");
    for (size_t len = 0; len < good.size(); ++len) {
      write_bytes(dir / "cut", good.substr(0, len));
      CHECK_THROWS_AS(read_safetensors(dir / "cut"), WeightsError);
    }
    for (int i = 0; i < 2000; ++i) {
      std::string bad = good;
      for (int k = 0; k < 3; ++k) bad[rng() % bad.size()] = static_cast<char>(rng() & 0xFF);
      write_bytes(dir / "flip", bad);
      try {
        read_safetensors(dir / "flip");
      } catch (const WeightsError&) {
      }
    }
  }
}

TEST_CASE("write_safetensors refuses inconsistent tensors", "[safetensors]") {
  TempDir dir;
  TensorFile f;
  f.tensors.push_back({"w", {2, 2}, {1, 2, 3}});
  CHECK_THROWS_AS(write_safetensors(dir / "x", f), std::invalid_argument);
  f.tensors[0].values.push_back(4);
  f.tensors.push_back({"w", {1}, {1}});
  CHECK_THROWS_AS(write_safetensors(dir / "x", f), std::invalid_argument);
  CHECK_FALSE(fs::exists(dir / "x"));
}

TEST_CASE("write_file_atomic replaces whole files and fails cleanly", "[safetensors][atomic]") {
  TempDir dir;
  std::string path = dir / "out.txt";

  write_file_atomic(path, std::string(100000, 'a'));
  CHECK(read_bytes(path) == std::string(100000, 'a'));
  write_file_atomic(path, "short");
  CHECK(read_bytes(path) == "short");
  write_file_atomic(path, std::vector<std::string_view>{"one ", "two", "", " three"});
  CHECK(read_bytes(path) == "one two three");
  write_file_atomic(path, "");
  CHECK(read_bytes(path).empty());
  CHECK(temp_files_in(dir.path).empty());

  // New files get ordinary permissions (mkstemp alone would leave 0600).
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  mode_t mask = ::umask(0);
  ::umask(mask);
  CHECK((st.st_mode & 0777) == (0666 & ~mask));

  // Relative path: the temp file goes next to it in the working directory's folder.
  std::string cwd = fs::current_path().string();
  fs::current_path(dir.path);
  write_file_atomic("relative.txt", "rel");
  fs::current_path(cwd);
  CHECK(read_bytes(dir / "relative.txt") == "rel");

  // Unwritable even for root: a folder below a regular file, and /proc.
  write_bytes(dir / "file", "x");
  testing::expect_error<IoError>(
      [&] { write_file_atomic(dir / "file/sub/out.txt", "data"); },
      {"cannot write '" + dir / "file/sub/out.txt" + "'", "Not a directory"});
  testing::expect_error<IoError>([&] { write_file_atomic("/proc/gputrain-test.txt", "data"); },
                                 {"cannot write '/proc/gputrain-test.txt'"});
  testing::expect_error<IoError>([&] { write_file_atomic(dir / "missing/out.txt", "data"); },
                                 {"missing/out.txt", "No such file or directory"});
  // A folder where the file should go: rename fails, the temp file is removed.
  fs::create_directory(dir / "taken");
  testing::expect_error<IoError>([&] { write_file_atomic(dir / "taken", "data"); },
                                 {"cannot write '" + dir / "taken" + "'"});
  CHECK(temp_files_in(dir.path).empty());
  CHECK(fs::is_directory(dir / "taken"));

  TensorFile f;
  f.tensors.push_back({"w", {1}, {1}});
  testing::expect_error<IoError>([&] { write_safetensors(dir / "file/model.safetensors", f); },
                                 {dir / "file/model.safetensors"});
}

TEST_CASE("ensure_directory creates nested folders and names the obstacle",
          "[safetensors][atomic]") {
  TempDir dir;
  ensure_directory(dir / "a/b/c");
  CHECK(fs::is_directory(dir / "a/b/c"));
  ensure_directory(dir / "a/b/c");  // already there: fine
  ensure_directory(dir / "a//b/c/");
  ensure_directory(dir.path);
  write_bytes(dir / "file", "x");
  testing::expect_error<IoError>([&] { ensure_directory(dir / "file"); },
                                 {dir / "file", "in the way"});
  testing::expect_error<IoError>([&] { ensure_directory(dir / "file/sub/deeper"); },
                                 {dir / "file/sub/deeper", "'" + dir / "file" + "'"});
  testing::expect_error<IoError>([&] { ensure_directory("/proc/gputrain-test/x"); },
                                 {"/proc/gputrain-test/x"});
  CHECK_THROWS_AS(ensure_directory(""), IoError);
}
