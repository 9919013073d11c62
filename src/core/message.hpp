// Error messages are one line (main prints them as such): control characters that come from keys,
// values, file names or --set text are shown escaped instead of breaking the line.
#pragma once

#include <string>

namespace gputrain {

std::string one_line(const std::string& s);

}  // namespace gputrain
