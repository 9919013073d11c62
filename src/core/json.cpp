#include "core/json.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace gputrain {

namespace {

[[noreturn]] void type_mismatch(const char* wanted, JsonValue::Type got) {
  throw std::logic_error(std::string("JSON value is ") + JsonValue::type_name(got) + ", not " +
                         wanted);
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one (overlong forms,
// surrogates and code points beyond U+10FFFF are invalid, as RFC 3629 says).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    unsigned char d = byte(i + k);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

template <typename T>
std::string shortest(T v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
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
      if (integer_)
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

class JsonParser {
 public:
  JsonParser(std::string_view text, int max_depth) : s_(text), max_depth_(max_depth) {}

  JsonValue parse_document() {
    skip_ws();
    if (pos_ >= s_.size()) fail("empty input, expected a JSON value");
    JsonValue v = parse_value(0);
    skip_ws();
    if (pos_ < s_.size()) fail("unexpected " + describe_here() + " after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { fail_at(what, pos_); }

  [[noreturn]] void fail_at(const std::string& what, size_t at) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < s_.size(); ++i) {
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

  std::string describe_here() const {
    if (pos_ >= s_.size()) return "end of input";
    unsigned char c = static_cast<unsigned char>(s_[pos_]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    char buf[16];
    std::snprintf(buf, sizeof buf, "byte 0x%02X", c);
    return buf;
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  void expect_literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word)
      fail("invalid literal, expected '" + std::string(word) + "'");
    pos_ += word.size();
  }

  JsonValue parse_value(int depth) {
    if (pos_ >= s_.size()) fail("unexpected end of input, expected a value");
    char c = s_[pos_];
    switch (c) {
      case '{':
        return parse_object(depth + 1);
      case '[':
        return parse_array(depth + 1);
      case '"': {
        JsonValue v(JsonValue::Type::String);
        v.string_ = parse_string();
        return v;
      }
      case 't':
        expect_literal("true");
        return JsonValue(true);
      case 'f':
        expect_literal("false");
        return JsonValue(false);
      case 'n':
        expect_literal("null");
        return JsonValue();
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        fail("unexpected " + describe_here() + ", expected a value");
    }
  }

  void check_depth(int depth) {
    if (depth > max_depth_) fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
  }

  JsonValue parse_object(int depth) {
    check_depth(depth);
    JsonValue obj(JsonValue::Type::Object);
    ++pos_;  // '{'
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return obj;
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"')
        fail("unexpected " + describe_here() + ", expected a string key");
      size_t key_at = pos_;
      std::string key = parse_string();
      for (const auto& m : obj.object_)
        if (m.first == key) fail_at("duplicate key \"" + json_escape(key) + "\"", key_at);
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':')
        fail("unexpected " + describe_here() + ", expected ':' after an object key");
      ++pos_;
      skip_ws();
      JsonValue v = parse_value(depth);
      obj.object_.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return obj;
      }
      fail("unexpected " + describe_here() + ", expected ',' or '}' in an object");
    }
  }

  JsonValue parse_array(int depth) {
    check_depth(depth);
    JsonValue arr(JsonValue::Type::Array);
    ++pos_;  // '['
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return arr;
    }
    for (;;) {
      skip_ws();
      arr.array_.push_back(parse_value(depth));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return arr;
      }
      fail("unexpected " + describe_here() + ", expected ',' or ']' in an array");
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[pos_ + size_t(k)];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= uint32_t(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= uint32_t(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= uint32_t(c - 'A' + 10);
      else
        fail_at("invalid hex digit in a \\u escape", pos_ + size_t(k));
    }
    pos_ += 4;
    return v;
  }

  std::string parse_string() {
    size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) fail_at("unterminated string", start);
      unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail("unescaped control character in a string");
      if (c == '\\') {
        ++pos_;
        if (pos_ >= s_.size()) fail_at("unterminated string", start);
        char e = s_[pos_++];
        switch (e) {
          case '"':
            out += '"';
            break;
          case '\\':
            out += '\\';
            break;
          case '/':
            out += '/';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'n':
            out += '\n';
            break;
          case 'r':
            out += '\r';
            break;
          case 't':
            out += '\t';
            break;
          case 'u': {
            size_t esc_at = pos_ - 2;
            uint32_t cp = parse_hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at("unpaired low surrogate escape", esc_at);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (s_.substr(pos_, 2) != "\\u") fail_at("unpaired high surrogate escape", esc_at);
              pos_ += 2;
              uint32_t lo = parse_hex4();
              if (lo < 0xDC00 || lo > 0xDFFF) fail_at("unpaired high surrogate escape", esc_at);
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            append_utf8(out, cp);
            break;
          }
          default:
            fail_at("invalid escape sequence", pos_ - 2);
        }
        continue;
      }
      size_t n = utf8_sequence_length(s_, pos_);
      if (n == 0) fail("invalid UTF-8 in a string");
      out.append(s_.data() + pos_, n);
      pos_ += n;
    }
  }

  JsonValue parse_number() {
    size_t start = pos_;
    auto digit = [&](size_t k) { return k < s_.size() && s_[k] >= '0' && s_[k] <= '9'; };
    if (s_[pos_] == '-') ++pos_;
    if (!digit(pos_)) fail("invalid number: expected a digit");
    if (s_[pos_] == '0') {
      ++pos_;
      if (digit(pos_)) fail("invalid number: leading zero");
    } else {
      while (digit(pos_)) ++pos_;
    }
    bool integral = true;
    if (pos_ < s_.size() && s_[pos_] == '.') {
      integral = false;
      ++pos_;
      if (!digit(pos_)) fail("invalid number: expected a digit after '.'");
      while (digit(pos_)) ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!digit(pos_)) fail("invalid number: expected a digit in the exponent");
      while (digit(pos_)) ++pos_;
    }
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    JsonValue v(JsonValue::Type::Number);
    if (integral) {
      int64_t i = 0;
      auto r = std::from_chars(first, last, i);
      if (r.ec == std::errc() && r.ptr == last) {
        v.integer_ = true;
        v.int_ = i;
        // "-0" is an integer, but the double keeps its sign so that -0.0 round-trips.
        v.number_ = (i == 0 && *first == '-') ? -0.0 : static_cast<double>(i);
        return v;
      }
    }
    double d = 0;
    auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc::result_out_of_range) {
      // Underflow to zero is harmless; overflow would need an infinity JSON cannot hold.
      bool tiny = false;
      for (const char* p = first; p < last; ++p)
        if (*p == 'e' || *p == 'E') tiny = p + 1 < last && p[1] == '-';
      if (!tiny) fail_at("number out of range", start);
      d = 0;
    } else if (r.ec != std::errc() || r.ptr != last) {
      fail_at("invalid number", start);
    }
    v.number_ = d;
    return v;
  }

  std::string_view s_;
  int max_depth_;
  size_t pos_ = 0;
};

JsonValue parse_json(std::string_view text, int max_depth) {
  return JsonParser(text, max_depth).parse_document();
}

// ---- writers ----

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      size_t n = utf8_sequence_length(s, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD
        ++i;
      } else {
        out.append(s.data() + i, n);
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04X", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  return out;
}

std::string json_quote(std::string_view s) {
  return "\"" + json_escape(s) + "\"";
}

std::string json_number(double v) {
  return shortest(v);
}

std::string json_number(float v) {
  return shortest(v);
}

}  // namespace gputrain
