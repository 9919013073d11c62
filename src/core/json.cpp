#include "core/json.hpp"

// nlohmann-json does the lexing, UTF-8 validation and string escaping; this file only builds
// JsonValue through its SAX interface (adding the checks nlohmann leaves to callers: duplicate
// keys and nesting depth) and keeps the float writer that nlohmann lacks (shortest float, not
// double, text). nlohmann stays out of every header.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <nlohmann/json.hpp>

namespace gputrain {

namespace {

[[noreturn]] void type_mismatch(const char* wanted, JsonValue::Type got) {
  throw std::logic_error(std::string("JSON value is ") + JsonValue::type_name(got) + ", not " +
                         wanted);
}

template <typename T>
std::string shortest(T v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

// A pointer into the text that records how far nlohmann's lexer has read, so that the checks
// made in SAX callbacks (which nlohmann gives no position) can still name line and column.
class TrackingIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  TrackingIterator(const char* p, const char** read_end) : p_(p), read_end_(read_end) {}
  const char& operator*() const {
    *read_end_ = p_ + 1;
    return *p_;
  }
  TrackingIterator& operator++() {
    ++p_;
    return *this;
  }
  TrackingIterator operator++(int) {
    TrackingIterator before = *this;
    ++p_;
    return before;
  }
  bool operator==(const TrackingIterator& o) const { return p_ == o.p_; }
  bool operator!=(const TrackingIterator& o) const { return p_ != o.p_; }

 private:
  const char* p_;
  const char** read_end_;
};

// Bytes outside printable ASCII as \xNN and at most 40 of them: nlohmann quotes the token it
// read last, which may be a megabyte-long string or hold the invalid bytes it complains about.
std::string printable_excerpt(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    }
  }
  if (s.size() > 40) out += "...";
  return out;
}

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1,
// column 2: " prefix (the position is appended in our own form) and with the last-read token
// made printable.
std::string nlohmann_detail(const std::string& what) {
  std::string detail = what;
  size_t name_end = detail.find("] ");
  if (detail.rfind("[json.exception.", 0) == 0 && name_end != std::string::npos)
    detail.erase(0, name_end + 2);
  size_t column = detail.find(", column ");
  size_t colon = column == std::string::npos ? column : detail.find(": ", column);
  if (detail.rfind("parse error", 0) == 0 && colon != std::string::npos) detail.erase(0, colon + 2);
  const std::string last_read = "; last read: '";
  size_t token = detail.find(last_read);
  if (token != std::string::npos) {
    size_t token_start = token + last_read.size();
    size_t token_end = detail.rfind('\'');
    if (token_end == std::string::npos || token_end < token_start) token_end = detail.size();
    detail =
        detail.substr(0, token_start) +
        printable_excerpt(std::string_view(detail).substr(token_start, token_end - token_start)) +
        "'";
  }
  return detail;
}

}  // namespace

// ---- JsonValue ----

const char* JsonValue::type_name(Type t) {
  switch (t) {
    case Type::Null:
      return "null";
    case Type::Bool:
      return "a boolean";
    case Type::Number:
      return "a number";
    case Type::String:
      return "a string";
    case Type::Array:
      return "an array";
    case Type::Object:
      return "an object";
  }
  return "?";
}

bool JsonValue::as_bool() const {
  if (type_ != Type::Bool) type_mismatch("a boolean", type_);
  return bool_;
}

double JsonValue::as_number() const {
  if (type_ != Type::Number) type_mismatch("a number", type_);
  return number_;
}

int64_t JsonValue::as_int64() const {
  if (!is_integer()) type_mismatch("an integer", type_);
  return int_;
}

const std::string& JsonValue::as_string() const {
  if (type_ != Type::String) type_mismatch("a string", type_);
  return string_;
}

const std::vector<JsonValue>& JsonValue::as_array() const {
  if (type_ != Type::Array) type_mismatch("an array", type_);
  return array_;
}

std::vector<JsonValue>& JsonValue::as_array() {
  if (type_ != Type::Array) type_mismatch("an array", type_);
  return array_;
}

const std::vector<JsonValue::Member>& JsonValue::as_object() const {
  if (type_ != Type::Object) type_mismatch("an object", type_);
  return object_;
}

std::vector<JsonValue::Member>& JsonValue::as_object() {
  if (type_ != Type::Object) type_mismatch("an object", type_);
  return object_;
}

const JsonValue* JsonValue::find(std::string_view key) const {
  if (type_ != Type::Object) return nullptr;
  for (const auto& m : object_)
    if (m.first == key) return &m.second;
  return nullptr;
}

JsonValue& JsonValue::set(std::string key, JsonValue value) {
  if (type_ != Type::Object) type_mismatch("an object", type_);
  for (auto& m : object_)
    if (m.first == key) return m.second = std::move(value);
  object_.emplace_back(std::move(key), std::move(value));
  return object_.back().second;
}

JsonValue& JsonValue::push_back(JsonValue value) {
  if (type_ != Type::Array) type_mismatch("an array", type_);
  array_.push_back(std::move(value));
  return array_.back();
}

std::string JsonValue::dump() const {
  std::string out;
  dump_to(out);
  return out;
}

void JsonValue::dump_to(std::string& out) const {
  switch (type_) {
    case Type::Null:
      out += "null";
      break;
    case Type::Bool:
      out += bool_ ? "true" : "false";
      break;
    case Type::Number:
      if (integer_ && int_ == 0 && std::signbit(number_))
        out += "-0";  // read from "-0": an integer that keeps its sign, so that it dumps back
      else if (integer_)
        out += std::to_string(int_);
      else
        out += single_ ? json_number(static_cast<float>(number_)) : json_number(number_);
      break;
    case Type::String:
      out += '"';
      out += json_escape(string_);
      out += '"';
      break;
    case Type::Array:
      out += '[';
      for (size_t i = 0; i < array_.size(); ++i) {
        if (i) out += ',';
        array_[i].dump_to(out);
      }
      out += ']';
      break;
    case Type::Object:
      out += '{';
      for (size_t i = 0; i < object_.size(); ++i) {
        if (i) out += ',';
        out += '"';
        out += json_escape(object_[i].first);
        out += "\":";
        object_[i].second.dump_to(out);
      }
      out += '}';
      break;
  }
}

// ---- parser ----

// nlohmann's SAX handler (the name is JsonValue's friend): builds the JsonValue tree without
// recursion (nlohmann's parser keeps its own explicit stack, so deep input cannot exhaust ours).
class JsonParser {
 public:
  using number_integer_t = nlohmann::json::number_integer_t;
  using number_unsigned_t = nlohmann::json::number_unsigned_t;
  using number_float_t = nlohmann::json::number_float_t;
  using string_t = nlohmann::json::string_t;
  using binary_t = nlohmann::json::binary_t;

  JsonParser(std::string_view text, int max_depth) : s_(text), max_depth_(max_depth) {}

  JsonValue parse_document() {
    const char* first = s_.data();
    read_end_ = first;
    TrackingIterator begin(first, &read_end_), end(first + s_.size(), &read_end_);
    // strict: nothing but whitespace after the value; comments are not JSON.
    nlohmann::json::sax_parse(begin, end, this, nlohmann::json::input_format_t::json,
                              /*strict=*/true, /*ignore_comments=*/false);
    return std::move(root_);
  }

  // SAX callbacks.
  bool null() { return add(JsonValue()); }
  bool boolean(bool b) { return add(JsonValue(b)); }
  // nlohmann reports a number without fraction or exponent here when it fits int64 and has a
  // minus sign (number_unsigned otherwise): so 0 here was written "-0", a double -0.0.
  bool number_integer(number_integer_t i) {
    JsonValue v(i);
    if (i == 0) v.number_ = -0.0;
    return add(std::move(v));
  }
  bool number_unsigned(number_unsigned_t u) { return add(JsonValue(u)); }  // exact if <= INT64_MAX
  bool number_float(number_float_t d, const string_t&) { return add(JsonValue(d)); }
  bool string(string_t& s) { return add(JsonValue(std::move(s))); }
  bool binary(binary_t&) { return false; }  // only binary formats (CBOR, ...) produce these
  bool start_object(std::size_t) { return open(JsonValue::object()); }
  bool start_array(std::size_t) { return open(JsonValue::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(string_t& k) {
    // The lexer has read up to the closing quote of the key.
    for (const auto& m : open_.back()->object_)
      if (m.first == k) fail_at("duplicate key \"" + json_escape(k) + "\"", last_read());
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    // position counts the characters read, the offending one included.
    fail_at(nlohmann_detail(e.what()), position > 0 ? position - 1 : 0);
  }

 private:
  size_t last_read() const { return read_end_ > s_.data() ? size_t(read_end_ - s_.data()) - 1 : 0; }

  [[noreturn]] void fail_at(const std::string& what, size_t at) const {
    at = std::min(at, s_.size());
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at; ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw JsonParseError(what + " at line " + std::to_string(line) + ", column " +
                             std::to_string(col) + " (byte " + std::to_string(at) + ")",
                         at);
  }

  // Places v in the open array or object (or as the document); returns where it now lives.
  JsonValue* place(JsonValue v) {
    if (open_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    JsonValue& parent = *open_.back();
    if (parent.type_ == JsonValue::Type::Array) {
      parent.array_.push_back(std::move(v));
      return &parent.array_.back();
    }
    parent.object_.emplace_back(std::move(key_), std::move(v));
    return &parent.object_.back().second;
  }

  bool add(JsonValue v) {
    place(std::move(v));
    return true;
  }

  // The pointers in open_ stay valid: only the innermost open container grows.
  bool open(JsonValue container) {
    if (open_.size() >= size_t(max_depth_))
      fail_at("nesting deeper than " + std::to_string(max_depth_) + " levels", last_read());
    open_.push_back(place(std::move(container)));
    return true;
  }

  bool close() {
    open_.pop_back();
    return true;
  }

  std::string_view s_;
  int max_depth_;
  const char* read_end_ = nullptr;  // one past the last character the lexer read
  JsonValue root_;
  std::vector<JsonValue*> open_;
  std::string key_;
};

JsonValue parse_json(std::string_view text, int max_depth) {
  return JsonParser(text, max_depth).parse_document();
}

// ---- writers ----

std::string json_quote(std::string_view s) {
  // ensure_ascii off: valid UTF-8 passes through; replace: invalid bytes become U+FFFD.
  std::string out =
      nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // nlohmann writes control characters as \u001f; the hex digits are upper case here, as
  // they always were in our files.
  for (size_t i = 0; i + 1 < out.size(); ++i) {
    if (out[i] != '\\') continue;
    if (out[i + 1] == 'u')
      for (size_t k = i + 2; k < i + 6 && k < out.size(); ++k)
        if (out[k] >= 'a' && out[k] <= 'f') out[k] = static_cast<char>(out[k] - 'a' + 'A');
    ++i;  // skip the escaped character, so that "\\u" is not taken for an escape
  }
  return out;
}

std::string json_escape(std::string_view s) {
  std::string quoted = json_quote(s);
  return quoted.substr(1, quoted.size() - 2);
}

std::string json_number(double v) {
  return shortest(v);
}

std::string json_number(float v) {
  return shortest(v);
}

}  // namespace gputrain
