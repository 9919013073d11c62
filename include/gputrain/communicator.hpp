// What the trainer calls between a step's backward pass and its optimizer update: a sum of every
// process's gradients (data parallelism). Engines never see it; they hand out their flat gradient
// buffer (Engine::gradients) and the trainer passes it here. Implementations (one process, MPI,
// NCCL) live in src/dist; nothing else in the tree talks to other processes.
#pragma once

#include <cstddef>
#include <string>

#include "gputrain/engine.hpp"

namespace gputrain {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "MPI (Open MPI v4.1.4), 2 ranks": for the log's first line and `gputrain info`.
  virtual std::string describe() const = 0;
  // In place: buffer = Σ over the processes of their buffers. Enqueued on the engine's stream for
  // a device buffer (no host wait); done on return for a host buffer.
  virtual void all_reduce_sum(const FlatBuffer& buffer) = 0;
  // In place, host memory, done on return: the counters of a log line or an epoch.
  virtual void all_reduce_sum(double* values, size_t count) = 0;
  // True on every process when `flag` is true on any (a stop request seen by one rank first):
  // every rank then leaves the loop at the same step.
  virtual bool any(bool flag) = 0;
};

// One process: the sum of one buffer is itself.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string describe() const override { return "1 process"; }
  void all_reduce_sum(const FlatBuffer& /*buffer*/) override {}
  void all_reduce_sum(double* /*values*/, size_t /*count*/) override {}
  bool any(bool flag) override { return flag; }
};

}  // namespace gputrain
