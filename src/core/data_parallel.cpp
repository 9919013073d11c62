// See data_parallel.hpp.
#include "core/data_parallel.hpp"

#include <algorithm>
#include <string>

#include "gputrain/errors.hpp"

namespace gputrain {

Shard shard_of(int64_t count, int rank, int ranks) {
  const int64_t base = count / ranks, extra = count % ranks;
  return Shard{rank * base + std::min<int64_t>(rank, extra), base + (rank < extra ? 1 : 0)};
}

TrainCounters reduced(Communicator& communicator, const TrainCounters& c) {
  if (communicator.size() == 1) return c;
  double v[3] = {c.loss_sum, double(c.correct), double(c.samples)};
  communicator.all_reduce_sum(v, 3);
  return TrainCounters{v[0], int64_t(v[1]), int64_t(v[2]), c.grad_norm_sum, c.grad_norm_steps};
}

std::string describe_rank(const Communicator& communicator, Engine& engine) {
  const bool on_device = engine.gradients().on_device;
  const std::string library = on_device ? communicator.device_library() : std::string();
  std::string line = "data-parallel run: rank " + std::to_string(communicator.rank()) + " of " +
                     communicator.describe() + "; this rank on " + engine.describe();
  if (communicator.local_size() > 1)
    line += " (local rank " + std::to_string(communicator.local_rank()) + " of " +
            std::to_string(communicator.local_size()) + " on this node)";
  if (!library.empty()) return line + "; gradients summed by " + library + " in the step";
  // A CPU rank alone has nothing to sum (no hook: connect_gradients).
  const bool summed = !on_device && communicator.size() > 1;
  return line + (summed ? "; gradients summed by MPI_Allreduce" : "");
}

Communicator& connect_gradients(Communicator& communicator, Engine& engine, int64_t train_count,
                                int64_t batch) {
  const FlatBuffer gradients = engine.gradients();
  const int ranks = communicator.size();
  if (ranks > 1) {
    // Two collectives every rank makes, whatever it chose: a rank on the CPU and one on the GPU
    // would otherwise wait in different libraries' all-reduces for ever.
    const bool some_gpu = communicator.any(gradients.on_device);
    const bool some_cpu = communicator.any(!gradients.on_device);
    if (some_gpu && some_cpu)
      throw DeviceError(
          "the ranks chose different backends (some a GPU, some the CPU: device: auto where some "
          "nodes have no usable GPU?); give every rank the same --device");
    const int64_t last = train_count % batch == 0 ? batch : train_count % batch;
    if (gradients.on_device && last < ranks)
      throw ConfigError("train.batch_size: the last batch of each epoch has " +
                        std::to_string(last) + " image(s) (" + std::to_string(train_count) +
                        " training images), fewer than the " + std::to_string(ranks) +
                        " GPU ranks; choose a batch size that leaves at least one image per rank");
  }
  Communicator& reducer = communicator.for_gradients(gradients);
  // Alone, with a host buffer (or a build without NCCL): the sum of one buffer is itself.
  if (ranks > 1 || &reducer != &communicator)
    engine.set_gradient_hook([&reducer](const FlatBuffer& g) { reducer.all_reduce_sum(g); });
  return reducer;
}

}  // namespace gputrain
