// The trainer's side of data parallelism, without any MPI or NCCL (those are behind the
// Communicator): each rank's part of a batch, counters summed over the ranks, and the gradients'
// all-reduce wired into the engine's step.
#pragma once

#include <cstdint>
#include <string>

#include "gputrain/communicator.hpp"
#include "gputrain/engine.hpp"

namespace gputrain {

// Rank `rank`'s contiguous part of `count` items: sizes differ by at most one, lower ranks first.
struct Shard {
  int64_t offset = 0, count = 0;
};
Shard shard_of(int64_t count, int rank, int ranks);

// This process's counters summed over every process (a data-parallel run's are per shard). The
// gradient norms are those of the all-reduced gradients, the same on every rank: kept as they are.
TrainCounters reduced(Communicator& communicator, const TrainCounters& c);

// The first line of a data-parallel run's log: the rank, the world, this rank's device (the
// engine's description) and the library that sums the gradients, with its version.
std::string describe_rank(const Communicator& communicator, Engine& engine);

// Before the first step, on every rank: checks that the ranks agree on where the gradients live
// (every rank on the GPU or every rank on the CPU: DeviceError otherwise, on all of them) and that
// each step gives every rank of a GPU run some images (ConfigError: the last batch of an epoch,
// train_count % batch, must not be smaller than the world), then has the engine end each
// forward_backward with the all-reduce of its gradients by communicator.for_gradients (NCCL for
// device memory), unless this process is alone with nothing to reduce. Returns the communicator
// of the gradients (for a step where this rank has no images and reduces zeros).
Communicator& connect_gradients(Communicator& communicator, Engine& engine, int64_t train_count,
                                int64_t batch);

}  // namespace gputrain
