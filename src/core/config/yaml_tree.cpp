// The generic YAML tree of the config (see yaml_tree.hpp): parsing with line provenance, typed
// scalar reads, --set applied to the tree, and reading the file.
#include "core/config/yaml_tree.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/message.hpp"
#include "gputrain/errors.hpp"

namespace gputrain::config_tree {

namespace {

constexpr int kMaxDepth = 32;

int mark_line(const YAML::Mark& m) {
  return m.line >= 0 ? m.line + 1 : 0;
}

Node convert(const YAML::Node& y, const Context& ctx, const std::string& path, int from_set,
             int depth) {
  Node n;
  n.from_set = from_set;
  if (from_set < 0) n.line = mark_line(y.Mark());
  if (depth > kMaxDepth)
    ctx.fail(ctx.where(n), "nesting deeper than " + std::to_string(kMaxDepth) + " levels");
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n.kind = Node::Kind::Null;
      break;
    case YAML::NodeType::Scalar:
      n.kind = Node::Kind::Scalar;
      n.scalar = y.Scalar();
      n.quoted = y.Tag() == "!";
      break;
    case YAML::NodeType::Sequence: {
      n.kind = Node::Kind::Seq;
      size_t i = 0;
      for (const auto& item : y) {
        n.seq.push_back(convert(item, ctx, index_path(path, i), from_set, depth + 1));
        ++i;
      }
      break;
    }
    case YAML::NodeType::Map:
      n.kind = Node::Kind::Map;
      for (const auto& kv : y) {
        MapEntry e;
        if (from_set < 0) e.key_line = mark_line(kv.first.Mark());
        if (!kv.first.IsScalar()) {
          std::string at = from_set >= 0 ? "--set " + ctx.override_text(from_set)
                                         : ctx.source() + ":" + std::to_string(e.key_line);
          ctx.fail(at, (path.empty() ? std::string("a") : path + ": a") +
                           " key must be a plain name, not a list or mapping");
        }
        e.key = kv.first.Scalar();
        std::string key_path = path.empty() ? e.key : path + "." + e.key;
        if (const MapEntry* first = find_entry(n, e.key)) {
          std::string at = from_set >= 0 ? "--set " + ctx.override_text(from_set)
                                         : ctx.source() + ":" + std::to_string(e.key_line);
          ctx.fail(at, "duplicate key '" + key_path + "'" +
                           (first->key_line > 0
                                ? " (first at line " + std::to_string(first->key_line) + ")"
                                : ""));
        }
        e.value = convert(kv.second, ctx, key_path, from_set, depth + 1);
        // An empty value ("epochs:") is marked where the next token starts; its key is the place.
        if (e.value.line == 0 || e.value.kind == Node::Kind::Null) e.value.line = e.key_line;
        e.value.key_line = e.key_line;
        n.map.push_back(std::move(e));
      }
      break;
  }
  return n;
}

YAML::Node load_yaml(const std::string& text, const std::string& where_prefix) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::string at = where_prefix;
    if (!e.mark.is_null() && where_prefix.rfind("--set ", 0) != 0)
      at += ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
    throw ConfigError(one_line(at + ": YAML syntax error: " + e.msg));
  }
}

bool plain_scalar(const Node& n) {
  return n.kind == Node::Kind::Scalar && !n.quoted;
}

// YAML 1.2 core schema integers, decimal only: [-+]?[0-9]+.
// `overflow`: more than 64 bits of magnitude.
bool parse_integer_text(const std::string& s, bool& negative, uint64_t& magnitude, bool& overflow) {
  size_t i = 0;
  negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  if (!is_digits(s.substr(i))) return false;
  auto r = std::from_chars(s.data() + i, s.data() + s.size(), magnitude);
  overflow = r.ec == std::errc::result_out_of_range;
  if (overflow) magnitude = UINT64_MAX;
  return true;
}

// YAML 1.2 core schema floats without .inf/.nan:
// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
template <typename T>
bool parse_number_text(const std::string& s, T& out) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t digits = 0;
  size_t j = i;
  while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j, ++digits;
  if (j < s.size() && s[j] == '.') {
    ++j;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j, ++digits;
  }
  if (digits == 0) return false;
  if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
    ++j;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    size_t exp_digits = 0;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  if (j != s.size()) return false;
  // from_chars takes no '+', and is locale independent (strtod is not).
  size_t start = s[0] == '+' ? 1 : 0;
  auto r = std::from_chars(s.data() + start, s.data() + s.size(), out);
  if (r.ec == std::errc::result_out_of_range) {
    // Underflow rounds to zero harmlessly; overflow is an infinity, which no key accepts.
    size_t e = s.find_first_of("eE");
    if (e != std::string::npos && e + 1 < s.size() && s[e + 1] == '-') {
      out = 0;
      return true;
    }
    out = std::numeric_limits<T>::infinity();
    return true;
  }
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// `expected` describes the accepted range ("a number > 0"); `ok` checks it.
template <typename T, typename Check>
T read_number(const Context& ctx, const Node& n, const std::string& path,
              const std::string& expected, Check ok) {
  T v = 0;
  if (!plain_scalar(n) || !parse_number_text(n.scalar, v) || !std::isfinite(v) || !ok(v))
    ctx.fail(n, path + ": expected " + expected + ", got " + got(n));
  return v;
}

}  // namespace

const MapEntry* find_entry(const Node& map, const std::string& key) {
  for (const auto& e : map.map)
    if (e.key == key) return &e;
  return nullptr;
}

MapEntry* find_entry(Node& map, const std::string& key) {
  for (auto& e : map.map)
    if (e.key == key) return &e;
  return nullptr;
}

const Node* optional_value(const Node* map, const std::string& key) {
  if (!map) return nullptr;
  const MapEntry* e = find_entry(*map, key);
  return e ? &e->value : nullptr;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

bool contains(const std::vector<std::string>& items, const std::string& s) {
  return std::find(items.begin(), items.end(), s) != items.end();
}

bool is_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string index_path(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// ---- locations and messages ----

std::string Context::where(const Node& n) const {
  if (n.from_set >= 0) return "--set " + overrides_[size_t(n.from_set)];
  if (n.line > 0) return source_ + ":" + std::to_string(n.line);
  return source_;
}

std::string Context::where_key(const MapEntry& e) const {
  if (e.value.from_set >= 0) return where(e.value);
  if (e.key_line > 0) return source_ + ":" + std::to_string(e.key_line);
  return source_;
}

std::string Context::where_missing(const Node& parent) const {
  if (parent.from_set >= 0) return source_;
  int line = parent.key_line > 0 ? parent.key_line : parent.line;
  return line > 0 ? source_ + ":" + std::to_string(line) : source_;
}

void Context::fail(const std::string& where, const std::string& msg) const {
  throw ConfigError(one_line(where + ": " + msg));
}

Node parse_tree(const std::string& yaml_text, const Context& ctx) {
  return convert(load_yaml(yaml_text, ctx.source()), ctx, "", -1, 0);
}

// ---- typed reads ----

std::string got(const Node& n) {
  switch (n.kind) {
    case Node::Kind::Null:
      return "nothing";
    case Node::Kind::Seq:
      return "a list";
    case Node::Kind::Map:
      return "a mapping";
    case Node::Kind::Scalar:
      break;
  }
  std::string s = n.scalar;
  if (s.size() > 40) {
    size_t cut = 40;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8
    s = s.substr(0, cut) + "...";
  }
  return "'" + s + "'" + (n.quoted ? " (a quoted string)" : "");
}

int64_t read_int(const Context& ctx, const Node& n, const std::string& path, int64_t min,
                 int64_t max) {
  std::string expected = "expected an integer ≥ " + std::to_string(min);
  bool negative, overflow;
  uint64_t magnitude;
  if (!plain_scalar(n) || !parse_integer_text(n.scalar, negative, magnitude, overflow))
    ctx.fail(n, path + ": " + expected + ", got " + got(n));
  if (negative && magnitude > 0) {
    if (min >= 0 || overflow || magnitude > uint64_t(-(min + 1)) + 1)
      ctx.fail(n, path + ": " + expected + ", got " + got(n));
    return -static_cast<int64_t>(magnitude - 1) - 1;
  }
  if (overflow || magnitude > static_cast<uint64_t>(max))
    ctx.fail(n, path + ": " + expected + " and ≤ " + std::to_string(max) + ", got " + got(n));
  int64_t v = static_cast<int64_t>(magnitude);
  if (v < min) ctx.fail(n, path + ": " + expected + ", got " + got(n));
  return v;
}

uint64_t read_uint64(const Context& ctx, const Node& n, const std::string& path) {
  bool negative, overflow;
  uint64_t magnitude;
  if (!plain_scalar(n) || !parse_integer_text(n.scalar, negative, magnitude, overflow) ||
      (negative && magnitude != 0))
    ctx.fail(n, path + ": expected an integer ≥ 0, got " + got(n));
  if (overflow)
    ctx.fail(n, path + ": expected an integer ≥ 0 and ≤ " + std::to_string(UINT64_MAX) + ", got " +
                    got(n));
  return magnitude;
}

double read_double(const Context& ctx, const Node& n, const std::string& path,
                   const std::string& expected, const std::function<bool(double)>& ok) {
  return read_number<double>(ctx, n, path, expected, ok);
}

float read_float(const Context& ctx, const Node& n, const std::string& path,
                 const std::string& expected, const std::function<bool(float)>& ok) {
  return read_number<float>(ctx, n, path, expected, ok);
}

bool read_bool(const Context& ctx, const Node& n, const std::string& path) {
  if (plain_scalar(n)) {
    const std::string& s = n.scalar;
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  ctx.fail(n, path + ": expected true or false, got " + got(n));
}

std::string read_string(const Context& ctx, const Node& n, const std::string& path,
                        const std::string& expected) {
  if (n.kind != Node::Kind::Scalar || n.scalar.empty())
    ctx.fail(n, path + ": expected " + expected + ", got " + got(n));
  return n.scalar;
}

std::string read_choice(const Context& ctx, const Node& n, const std::string& path,
                        const std::vector<std::string>& choices) {
  std::string expected = "one of " + join(choices);
  if (n.kind != Node::Kind::Scalar || !contains(choices, n.scalar))
    ctx.fail(n, path + ": expected " + expected + ", got " + got(n));
  return n.scalar;
}

// Rejects keys outside `known`; a null section counts as an empty one.
void check_keys(const Context& ctx, const Node& map, const std::string& path,
                const std::vector<std::string>& known, const std::string& known_label) {
  for (const MapEntry& e : map.map)
    if (!contains(known, e.key))
      ctx.fail(ctx.where_key(e), "unknown key '" + (path.empty() ? e.key : path + "." + e.key) +
                                     "' (" + known_label + ": " + join(known) + ")");
}

// ---- --set ----

OverrideText split_override(const Context& ctx, int index) {
  const std::string& text = ctx.override_text(index);
  const std::string where = "--set " + text;
  size_t eq = text.find('=');
  if (eq == std::string::npos) ctx.fail(where, "expected key.path=value (e.g. train.epochs=5)");
  std::string key = text.substr(0, eq);
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
  while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(0, 1);
  // Messages write list entries as model.layers[2].kernel; accept that spelling here too.
  for (size_t open = key.find('['); open != std::string::npos; open = key.find('[', open)) {
    size_t close = key.find(']', open);
    if (close == std::string::npos || !is_digits(key.substr(open + 1, close - open - 1))) break;
    key =
        key.substr(0, open) + "." + key.substr(open + 1, close - open - 1) + key.substr(close + 1);
  }
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& p : parts)
    if (p.empty()) ctx.fail(where, "malformed key path '" + key + "' (expected e.g. train.epochs)");
  return {key, parts, text.substr(eq + 1)};
}

void apply_override(const Context& ctx, Node& root, int index, const OverrideText& o,
                    const std::function<bool(const std::string&)>& is_list) {
  const std::string where = "--set " + ctx.override_text(index);
  const std::string& key = o.key;
  const std::vector<std::string>& parts = o.parts;
  Node value = convert(load_yaml(o.value, where), ctx, key, index, 0);

  Node* cur = &root;
  std::string path;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const bool last = i + 1 == parts.size();
    const bool want_index = is_digits(part) && !path.empty() && is_list(path);
    Node* next = nullptr;
    if (want_index) {
      if (cur->kind != Node::Kind::Seq)
        ctx.fail(where, "'" + path + "' is not a list here (set it whole: " + path + "=[...])");
      uint64_t idx = 0;
      auto r = std::from_chars(part.data(), part.data() + part.size(), idx);
      if (r.ec != std::errc() || idx > cur->seq.size())
        ctx.fail(where, "index " + part + " is out of range: '" + path + "' has " +
                            std::to_string(cur->seq.size()) + " entries");
      if (idx == cur->seq.size()) {
        Node fresh;
        fresh.from_set = index;
        cur->seq.push_back(fresh);
      }
      next = &cur->seq[size_t(idx)];
      path += "[" + part + "]";
    } else {
      if (cur->kind == Node::Kind::Null) {
        cur->kind = Node::Kind::Map;
      } else if (cur->kind != Node::Kind::Map) {
        ctx.fail(where, "'" + path + "' is " + got(*cur) + ", not a mapping");
      }
      MapEntry* e = find_entry(*cur, part);
      if (!e) {
        MapEntry fresh;
        fresh.key = part;
        fresh.value.from_set = index;
        cur->map.push_back(std::move(fresh));
        e = &cur->map.back();
      }
      next = &e->value;
      path += (path.empty() ? "" : ".") + part;
    }
    if (last) {
      *next = std::move(value);
    } else {
      cur = next;
    }
  }
}

std::string read_text_file(const std::string& path) {
  auto fail = [&](int err) {
    throw ConfigError(one_line("cannot read config '" + path + "': " + std::strerror(err)));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(errno);
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail(err);
    }
    if (n == 0) break;
    text.append(buf, size_t(n));
    // A config is a few kB; refusing huge inputs keeps a wrong path (a data file, /dev/zero) cheap.
    if (text.size() > (16u << 20)) {
      ::close(fd);
      throw ConfigError(
          one_line("cannot read config '" + path + "': larger than 16 MiB, not a config?"));
    }
  }
  ::close(fd);
  return text;
}

}  // namespace gputrain::config_tree
