// What the trainer calls between a step's backward pass and its optimizer update: a sum of every
// process's gradients (data parallelism). Engines never see it; they hand out their flat gradient
// buffer (Engine::gradients) and the trainer passes it here.
#pragma once

#include "gputrain/engine.hpp"

namespace gputrain {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: buffer = Σ over the processes of their buffers. Enqueued on the engine's stream for
  // a device buffer (no host wait); done on return for a host buffer.
  virtual void all_reduce_sum(const FlatBuffer& buffer) = 0;
};

// One process: the sum of one buffer is itself.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(const FlatBuffer& /*buffer*/) override {}
};

}  // namespace gputrain
