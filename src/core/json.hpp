// A small JSON value, a strict parser and writer helpers: enough for safetensors headers,
// metrics.jsonl and `eval --json`, with no locale sensitivity. nlohmann-json parses and escapes
// behind this interface (json.cpp); it is not part of it, so includers need no nlohmann.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace gputrain {

// Malformed JSON text. what() is one line: "<what> at line L, column C (byte B)".
class JsonParseError : public std::runtime_error {
 public:
  JsonParseError(const std::string& what, size_t offset)
      : std::runtime_error(what), offset_(offset) {}
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

class JsonValue {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };
  using Member = std::pair<std::string, JsonValue>;

  JsonValue() = default;  // null
  JsonValue(std::nullptr_t) {}
  JsonValue(bool b) : type_(Type::Bool), bool_(b) {}
  JsonValue(double d) : type_(Type::Number), number_(d) {}
  // Kept as float so that dump() writes the shortest text that reads back as the same float.
  JsonValue(float f) : type_(Type::Number), single_(true), number_(f) {}
  template <typename T,
            typename std::enable_if<std::is_integral<T>::value && !std::is_same<T, bool>::value,
                                    int>::type = 0>
  JsonValue(T i) : type_(Type::Number) {
    set_integer(i);
  }
  JsonValue(std::string s) : type_(Type::String), string_(std::move(s)) {}
  JsonValue(std::string_view s) : type_(Type::String), string_(s) {}
  JsonValue(const char* s) : type_(Type::String), string_(s) {}

  static JsonValue array() { return JsonValue(Type::Array); }
  static JsonValue object() { return JsonValue(Type::Object); }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }
  // A number written without fraction or exponent that fits int64 (or built from an integer).
  // Offsets and sizes must be checked exactly, which a double cannot do beyond 2^53.
  bool is_integer() const { return type_ == Type::Number && integer_; }

  // Accessors throw std::logic_error on a type mismatch: callers check the type first.
  bool as_bool() const;
  double as_number() const;
  int64_t as_int64() const;  // requires is_integer()
  const std::string& as_string() const;
  const std::vector<JsonValue>& as_array() const;
  std::vector<JsonValue>& as_array();
  const std::vector<Member>& as_object() const;  // in insertion / file order
  std::vector<Member>& as_object();

  // Object lookup (linear: objects here are small); nullptr when absent or not an object.
  const JsonValue* find(std::string_view key) const;
  // Object: replaces the value of an existing key or appends the key (order is kept).
  JsonValue& set(std::string key, JsonValue value);
  // Array: appends.
  JsonValue& push_back(JsonValue value);

  // Compact JSON text (no spaces), members in order; non-finite numbers are written as null.
  std::string dump() const;
  void dump_to(std::string& out) const;

  static const char* type_name(Type t);

 private:
  explicit JsonValue(Type t) : type_(t) {}
  template <typename T>
  void set_integer(T i) {
    if (std::is_signed<T>::value ||
        static_cast<unsigned long long>(i) <= static_cast<unsigned long long>(INT64_MAX)) {
      integer_ = true;
      int_ = static_cast<int64_t>(i);
    }
    number_ = static_cast<double>(i);
  }
  friend class JsonParser;

  Type type_ = Type::Null;
  bool bool_ = false;
  bool integer_ = false;  // int_ holds the exact value
  bool single_ = false;   // written with float (not double) shortest round-trip precision
  double number_ = 0;
  int64_t int_ = 0;
  std::string string_;
  std::vector<JsonValue> array_;
  std::vector<Member> object_;
};

// Parses exactly one JSON value (RFC 8259: no comments, no trailing commas, no NaN, valid UTF-8,
// no duplicate object keys), surrounded only by whitespace. Nesting deeper than max_depth arrays /
// objects is rejected so that hostile input cannot exhaust the stack.
JsonValue parse_json(std::string_view text, int max_depth = 64);

// The string's JSON escape (no surrounding quotes): ", \ and control characters escaped, valid
// UTF-8 passed through, invalid UTF-8 bytes replaced by U+FFFD so the output always parses.
std::string json_escape(std::string_view s);
// json_escape with the surrounding quotes.
std::string json_quote(std::string_view s);

// Shortest text that reads back as exactly the same value (std::to_chars: locale independent);
// at most 17 (double) / 9 (float) significant digits, like "%.17g" / "%.9g" but without noise
// digits (0.01 stays "0.01"). NaN and infinities have no JSON form: "null".
std::string json_number(double v);
std::string json_number(float v);

}  // namespace gputrain
