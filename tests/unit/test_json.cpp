#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/json.hpp"

using namespace gputrain;

namespace {

// Requires parse_json(text) to fail; returns the one-line message.
std::string parse_error(const std::string& text, int max_depth = 64) {
  std::string msg;
  try {
    parse_json(text, max_depth);
  } catch (const JsonParseError& e) {
    msg = e.what();
  }
  INFO("input: " << text);
  REQUIRE_FALSE(msg.empty());
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.find("line ") != std::string::npos);
  CHECK(msg.find("column ") != std::string::npos);
  return msg;
}

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

}  // namespace

TEST_CASE("parse_json reads every value type and keeps object key order", "[json]") {
  JsonValue v = parse_json(
      " {\"z\": 1, \"a\": [true, false, null, -2.5e3, \"s\"], \"m\": {}, \"e\": [], "
      "\"y\": 0.125}\n");
  REQUIRE(v.is_object());
  const auto& members = v.as_object();
  REQUIRE(members.size() == 5);
  CHECK(members[0].first == "z");
  CHECK(members[1].first == "a");
  CHECK(members[2].first == "m");
  CHECK(members[3].first == "e");
  CHECK(members[4].first == "y");
  CHECK(v.find("z")->is_integer());
  CHECK(v.find("z")->as_int64() == 1);
  const auto& a = v.find("a")->as_array();
  REQUIRE(a.size() == 5);
  CHECK(a[0].as_bool());
  CHECK_FALSE(a[1].as_bool());
  CHECK(a[2].is_null());
  CHECK(a[3].as_number() == -2500.0);
  CHECK_FALSE(a[3].is_integer());
  CHECK(a[4].as_string() == "s");
  CHECK(v.find("m")->is_object());
  CHECK(v.find("m")->as_object().empty());
  CHECK(v.find("e")->as_array().empty());
  CHECK(v.find("y")->as_number() == 0.125);
  CHECK(v.find("missing") == nullptr);
  CHECK_THROWS_AS(v.as_array(), std::logic_error);
  CHECK_THROWS_AS(v.find("z")->as_string(), std::logic_error);
}

TEST_CASE("parse_json keeps integers exact beyond 2^53 and flags non-integers", "[json]") {
  CHECK(parse_json("9007199254740993").as_int64() == 9007199254740993LL);
  CHECK(parse_json("9223372036854775807").as_int64() == INT64_MAX);
  CHECK(parse_json("-9223372036854775808").as_int64() == INT64_MIN);
  // Past int64 a number is still a number, just not an exact integer.
  JsonValue big = parse_json("18446744073709551616");
  CHECK(big.is_number());
  CHECK_FALSE(big.is_integer());
  CHECK_FALSE(parse_json("1.0").is_integer());
  CHECK_FALSE(parse_json("1e2").is_integer());
  CHECK(parse_json("1e2").as_number() == 100.0);
  CHECK(parse_json("-0").as_int64() == 0);
  CHECK(parse_json("-0").dump() == "-0");  // and "-0.0" (a double) dumps as "-0" too: a fixed point
  CHECK(parse_json(parse_json("-0.0").dump()).dump() == parse_json("-0.0").dump());
  CHECK(parse_json("1e-400").as_number() == 0.0);  // underflow rounds to zero
}

TEST_CASE("parse_json decodes string escapes and UTF-8", "[json]") {
  CHECK(parse_json(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(parse_json(R"("\u00e9\u20AC")").as_string() == "\xC3\xA9\xE2\x82\xAC");
  CHECK(parse_json(R"("\ud83d\ude00")").as_string() == "\xF0\x9F\x98\x80");
  CHECK(parse_json("\"\xF0\x9F\x98\x80 raw\"").as_string() == "\xF0\x9F\x98\x80 raw");
  CHECK(parse_json(R"("\u0000")").as_string() == std::string(1, '\0'));
}

TEST_CASE("parse_json rejects malformed input with a position", "[json]") {
  const char* bad[] = {
      "",
      "   ",
      "{",
      "[1, 2",
      "[1, 2,]",
      "{\"a\": 1,}",
      "{a: 1}",
      "{'a': 1}",
      "{\"a\" 1}",
      "{\"a\": 1 \"b\": 2}",
      "[1 2]",
      "01",
      "-",
      "1.",
      ".5",
      "1e",
      "+1",
      "NaN",
      "Infinity",
      "-Infinity",
      "1e999",
      "tru",
      "nul",
      "\"unterminated",
      "\"tab\there\"",
      "\"bad \\x escape\"",
      "\"\\u12\"",
      "\"\\ud800\"",
      "\"\\udc00\"",
      "\"\\ud800\\u0041\"",
      "\"\xC3\"",
      "\"\xC0\xAF\"",
      "\"\xED\xA0\x80\"",
      "\"\xFF\"",
      "{\"a\": 1, \"a\": 2}",
      "{} {}",
      "[] x",
      "// comment\n{}",
  };
  for (const char* text : bad) parse_error(text);

  std::string msg = parse_error("{\n  \"a\": 1,\n  \"b\" 2\n}");
  CHECK(msg.find("line 3") != std::string::npos);
  CHECK(msg.find("':'") != std::string::npos);
  CHECK(parse_error("{\"k\": 1, \"k\": 2}").find("duplicate key") != std::string::npos);
}

TEST_CASE("parse_json refuses nesting beyond the depth limit", "[json]") {
  auto nested = [](int depth) {
    return std::string(size_t(depth), '[') + std::string(size_t(depth), ']');
  };
  CHECK_NOTHROW(parse_json(nested(64)));
  CHECK(parse_error(nested(65)).find("nesting") != std::string::npos);
  CHECK_NOTHROW(parse_json(nested(3), 3));
  parse_error(nested(4), 3);
  // Deep hostile input fails cleanly instead of exhausting the stack.
  parse_error(std::string(1000000, '['));
  parse_error(std::string(100000, '{'));
}

TEST_CASE("json_escape escapes what JSON requires and keeps output valid", "[json]") {
  CHECK(json_escape("plain") == "plain");
  CHECK(json_escape("q\"b\\") == "q\\\"b\\\\");
  CHECK(json_escape("\n\t\r\b\f") == "\\n\\t\\r\\b\\f");
  CHECK(json_escape(std::string("\x01\x1f", 2)) == "\\u0001\\u001F");
  CHECK(json_escape(std::string(1, '\0')) == "\\u0000");
  CHECK(json_escape("caf\xC3\xA9 \xF0\x9F\x98\x80") == "caf\xC3\xA9 \xF0\x9F\x98\x80");
  CHECK(json_escape("bad \xFF byte") == "bad \xEF\xBF\xBD byte");
  CHECK(json_quote("a/b") == "\"a/b\"");
  // Whatever the bytes, the quoted form parses back (invalid UTF-8 as U+FFFD).
  std::mt19937 rng(5);
  for (int i = 0; i < 500; ++i) {
    std::string s(size_t(rng() % 20), '\0');
    for (char& c : s) c = static_cast<char>(rng() & 0xFF);
    JsonValue v = parse_json(json_quote(s));
    REQUIRE(v.is_string());
    if (std::all_of(s.begin(), s.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
      CHECK(v.as_string() == s);
  }
}

TEST_CASE("json_number round-trips floats and doubles bitwise, shortest form", "[json]") {
  CHECK(json_number(0.01) == "0.01");
  CHECK(json_number(0.1f) == "0.1");
  CHECK(json_number(1.0) == "1");
  CHECK(json_number(-2.5f) == "-2.5");
  CHECK(json_number(std::numeric_limits<double>::quiet_NaN()) == "null");
  CHECK(json_number(std::numeric_limits<float>::infinity()) == "null");
  CHECK(json_number(-std::numeric_limits<double>::infinity()) == "null");
  CHECK(json_number(1e300).find('e') != std::string::npos);

  std::mt19937_64 rng(11);
  for (int i = 0; i < 20000; ++i) {
    uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, sizeof d);
    if (!std::isfinite(d)) continue;
    std::string text = json_number(d);
    REQUIRE(text.size() <= 24);
    JsonValue v = parse_json(text);
    INFO(text);
    REQUIRE(same_bits(v.as_number(), d));

    uint32_t fbits = static_cast<uint32_t>(bits >> 32);
    float f;
    std::memcpy(&f, &fbits, sizeof f);
    if (!std::isfinite(f)) continue;
    std::string ftext = json_number(f);
    INFO(ftext);
    REQUIRE(same_bits(static_cast<float>(parse_json(ftext).as_number()), f));
  }
  for (double d : {0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e-7})
    CHECK(same_bits(parse_json(json_number(d)).as_number(), d));
  for (float f : {0.0f, -0.0f, 1e-45f, 1.17549435e-38f, 3.40282347e38f, 0.3f, 16777217.0f})
    CHECK(same_bits(static_cast<float>(parse_json(json_number(f)).as_number()), f));
}

TEST_CASE("JsonValue builds, dumps compactly and parses back", "[json]") {
  JsonValue o = JsonValue::object();
  o.set("epoch", 3);
  o.set("train_loss", 0.25f);
  o.set("lr", 0.01);
  o.set("name", "a \"quoted\"\nname");
  o.set("flag", true);
  o.set("none", nullptr);
  JsonValue arr = JsonValue::array();
  arr.push_back(1);
  arr.push_back(uint64_t(1) << 40);
  arr.push_back(int64_t(-7));
  arr.push_back(std::numeric_limits<double>::quiet_NaN());
  o.set("list", std::move(arr));
  o.set("epoch", 4);  // replaces, keeps the position
  std::string text = o.dump();
  CHECK(text ==
        "{\"epoch\":4,\"train_loss\":0.25,\"lr\":0.01,\"name\":\"a \\\"quoted\\\"\\nname\","
        "\"flag\":true,\"none\":null,\"list\":[1,1099511627776,-7,null]}");
  JsonValue back = parse_json(text);
  CHECK(back.dump() == text);
  CHECK(back.find("name")->as_string() == "a \"quoted\"\nname");
  CHECK(back.find("epoch")->as_int64() == 4);
}
