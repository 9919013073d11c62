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
  // This process's rank among the ranks on its own machine (node), and their number: ranks on one
  // node take distinct GPUs in this order.
  virtual int local_rank() const { return 0; }
  virtual int local_size() const { return 1; }
  // "MPI (Open MPI v4.1.4), 2 ranks": for the log's first line and `gputrain info`.
  virtual std::string describe() const = 0;
  // The library that for_gradients hands device buffers to, with its version ("NCCL 2.28.9");
  // empty where there is none (one process, or a build without NCCL).
  virtual std::string device_library() const { return {}; }
  // Called once per run on every rank (collectively), before the first step, with the engine's
  // gradient buffer: the communicator that all-reduces buffers like it each step. This one for
  // host memory; for device memory the device's collective library (NCCL), set up here so that
  // nothing inside a step or a CUDA graph capture does. Throws DeviceError where this build has
  // none for such a buffer.
  virtual Communicator& for_gradients(const FlatBuffer& /*gradients*/) { return *this; }
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
