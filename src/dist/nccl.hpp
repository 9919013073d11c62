// NCCL over the ranks of MPI_COMM_WORLD: the all-reduce of a CUDA engine's gradients, enqueued on
// the engine's stream (so a step captured as a CUDA graph replays it with the rest of the step).
// Built only with GPUTRAIN_WITH_NCCL (CUDA and MPI both on); world.cpp makes one when a CUDA
// engine's gradients are first handed to the MPI communicator. Everything on the host (counters,
// the stop flag, a host buffer) goes through that MPI communicator, which stays the one that
// launched and bootstrapped the job.
#pragma once

#include <memory>
#include <string>

#include "gputrain/communicator.hpp"

namespace gputrain::dist {

// "NCCL 2.28.9": the version of the library this process loaded (ncclGetVersion), for --version.
std::string nccl_version();

class NcclCommunicator final : public Communicator {
 public:
  // Collective over every rank of `host` (MPI_COMM_WORLD): rank 0 creates the ncclUniqueId,
  // MPI_Bcast hands it to the others, and each joins with `device`, the GPU its engine runs on.
  // Throws RuntimeFailure naming the failed call.
  NcclCommunicator(Communicator& host, int device);
  // Aborts the NCCL communicator unless finish() ran: after a failure, another rank may never
  // come to a clean collective shutdown, and this process must not wait for it.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  int local_rank() const override { return host_.local_rank(); }
  int local_size() const override { return host_.local_size(); }
  // "NCCL 2.28.9 on cuda:1, over MPI (Open MPI v4.1.4), 2 ranks"
  std::string describe() const override;
  std::string device_library() const override { return nccl_version(); }
  int device() const { return device_; }
  // A device buffer of this communicator's GPU: ncclAllReduce(sum) in place on buffer.stream,
  // enqueued only (also inside a graph capture). A host buffer: by the MPI communicator.
  void all_reduce_sum(const FlatBuffer& buffer) override;
  void all_reduce_sum(double* values, size_t count) override {
    host_.all_reduce_sum(values, count);
  }
  bool any(bool flag) override { return host_.any(flag); }
  Communicator& for_gradients(const FlatBuffer& gradients) override;

  // After a run that succeeded on every rank: waits for the queued collectives and destroys the
  // communicator (ncclCommFinalize + ncclCommDestroy), before MPI_Finalize.
  void finish();

 private:
  struct State;
  Communicator& host_;
  int device_ = 0;
  std::unique_ptr<State> state_;
};

}  // namespace gputrain::dist
