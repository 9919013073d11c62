// The generic half of config loading: YAML text → a small tree of our own in which every node
// remembers its line (or the --set that produced it), typed reads of scalars with messages that
// say where a value came from, and --set applied to the tree. Nothing here knows gputrain's keys:
// those are rows in schema.cpp. Converting first keeps yaml-cpp's reference-semantics nodes out of
// the mutation code.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gputrain::config_tree {

struct MapEntry;

struct Node {
  enum class Kind { Null, Scalar, Seq, Map };
  Kind kind = Kind::Null;
  std::string scalar;
  bool quoted = false;  // "…" or '…': a string, never a number or a boolean
  std::vector<Node> seq;
  std::vector<MapEntry> map;
  int line = 0;       // 1-based line in the file; 0 = none
  int key_line = 0;   // the line of the key whose value this is ("model:"), 0 = none
  int from_set = -1;  // index of the --set override that produced this node; -1 = the file
};

struct MapEntry {
  std::string key;
  int key_line = 0;
  Node value;
};

const MapEntry* find_entry(const Node& map, const std::string& key);
MapEntry* find_entry(Node& map, const std::string& key);
// The value of `key` in `map`, or nullptr when `map` is null or has no such key.
const Node* optional_value(const Node* map, const std::string& key);

std::string join(const std::vector<std::string>& items);
bool contains(const std::vector<std::string>& items, const std::string& s);
bool is_digits(const std::string& s);
std::string index_path(const std::string& path, size_t i);  // "a.b" → "a.b[i]"

// Where things are, for messages: "file:line", "--set text" or the file alone.
class Context {
 public:
  Context(std::string source, const std::vector<std::string>& overrides)
      : source_(std::move(source)), overrides_(overrides) {}

  const std::string& source() const { return source_; }
  const std::string& override_text(int i) const { return overrides_[size_t(i)]; }
  size_t override_count() const { return overrides_.size(); }

  std::string where(const Node& n) const;
  std::string where_key(const MapEntry& e) const;
  // A key that is absent has no line of its own: point at its mapping ("model:", or the layer's
  // entry) when that is in the file.
  std::string where_missing(const Node& parent) const;

  [[noreturn]] void fail(const std::string& where, const std::string& msg) const;
  [[noreturn]] void fail(const Node& n, const std::string& msg) const { fail(where(n), msg); }

 private:
  std::string source_;
  const std::vector<std::string>& overrides_;
};

// Parses YAML text into a tree; syntax errors are ConfigErrors at `source:line:column`.
Node parse_tree(const std::string& yaml_text, const Context& ctx);

// "nothing", "a list", "a mapping" or the quoted scalar (shortened), for "got …" in messages.
std::string got(const Node& n);

// ---- typed reads: each fails with "<where>: <path>: expected …, got …" ----
int64_t read_int(const Context& ctx, const Node& n, const std::string& path, int64_t min,
                 int64_t max);
uint64_t read_uint64(const Context& ctx, const Node& n, const std::string& path);
// `expected` describes the accepted range ("a number > 0"); `ok` checks it.
double read_double(const Context& ctx, const Node& n, const std::string& path,
                   const std::string& expected, const std::function<bool(double)>& ok);
float read_float(const Context& ctx, const Node& n, const std::string& path,
                 const std::string& expected, const std::function<bool(float)>& ok);
bool read_bool(const Context& ctx, const Node& n, const std::string& path);
std::string read_string(const Context& ctx, const Node& n, const std::string& path,
                        const std::string& expected);
std::string read_choice(const Context& ctx, const Node& n, const std::string& path,
                        const std::vector<std::string>& choices);

// Rejects keys outside `known`; a null mapping counts as an empty one.
void check_keys(const Context& ctx, const Node& map, const std::string& path,
                const std::vector<std::string>& known, const std::string& known_label = "known");

// ---- --set ----

// An override split into its key path and value text: "model.layers[2].kernel = 3" →
// {"model", "layers", "2", "kernel"}, "3". Fails on a missing '=' or an empty path part.
struct OverrideText {
  std::string key;
  std::vector<std::string> parts;
  std::string value;
};
OverrideText split_override(const Context& ctx, int index);

// Sets the value of override `index` in `root` at `parts` (already checked against the schema).
// `is_list(path)` says whether a numeric part after `path` indexes a list.
void apply_override(const Context& ctx, Node& root, int index, const OverrideText& o,
                    const std::function<bool(const std::string&)>& is_list);

// Reads a config file (at most 16 MiB); ConfigError "cannot read config '<path>': …" otherwise.
std::string read_text_file(const std::string& path);

}  // namespace gputrain::config_tree
