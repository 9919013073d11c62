// Requires `f` to throw E with a one-line message holding every one of `parts`; returns the
// message.
#pragma once

#include <catch2/catch.hpp>
#include <functional>
#include <string>
#include <vector>

namespace gputrain::testing {

template <typename E>
std::string expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  std::string msg;
  try {
    f();
  } catch (const E& e) {
    msg = e.what();
  }
  INFO("message: " << msg);
  REQUIRE_FALSE(msg.empty());
  CHECK(msg.find('\n') == std::string::npos);
  for (const auto& part : parts) {
    INFO("expected to contain: " << part);
    CHECK(msg.find(part) != std::string::npos);
  }
  return msg;
}

}  // namespace gputrain::testing
