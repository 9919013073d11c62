// Typed errors of the gputrain library. The library never prints or exits: it throws one of these
// with enough context (file, key, line, call) for main() to print a single clear line and choose
// the exit code (see src/cli/main.cpp).
#pragma once

#include <stdexcept>
#include <string>

namespace gputrain {

// Base of every error the library throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The user asked for something invalid: bad config, data, weights, flags or paths. Exit code 2.
class UserError : public Error {
 public:
  using Error::Error;
};

// Config file or --set override: syntax, unknown key, wrong type, value out of range.
class ConfigError : public UserError {
 public:
  using UserError::UserError;
};

// Data set files: missing, unreadable, wrong magic, truncated, inconsistent counts or labels.
class DataError : public UserError {
 public:
  using UserError::UserError;
};

// Weights / checkpoint files: missing, not safetensors, wrong names, shapes or dtypes.
class WeightsError : public UserError {
 public:
  using UserError::UserError;
};

// A file or folder that cannot be read or written (output folder not writable, say).
class IoError : public UserError {
 public:
  using UserError::UserError;
};

// The requested device cannot be used (--device cuda without a GPU, data that does not fit).
class DeviceError : public UserError {
 public:
  using UserError::UserError;
};

// A failure while running: non-finite loss, a CUDA runtime failure. Exit code 1.
class RuntimeFailure : public Error {
 public:
  using Error::Error;
};

// The training loss became NaN or infinite (usually a learning rate too large). Exit code 1.
class NonFiniteLoss : public RuntimeFailure {
 public:
  using RuntimeFailure::RuntimeFailure;
};

// Training stopped on request (SIGINT) after a checkpoint was written. Exit code 130.
class Interrupted : public Error {
 public:
  using Error::Error;
};

}  // namespace gputrain
