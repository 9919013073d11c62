// See nccl.hpp.
#include "dist/nccl.hpp"

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <string>

#include "gputrain/errors.hpp"

namespace gputrain::dist {
namespace {

[[noreturn]] void nccl_failed(const char* call, ncclResult_t rc, ncclComm_t comm = nullptr) {
  std::string detail = ncclGetErrorString(rc);
  if (comm) {
    const char* last = ncclGetLastError(comm);
    if (last && *last) detail += std::string(": ") + last;
  }
  throw RuntimeFailure(std::string(call) + " failed: " + detail);
}

[[noreturn]] void cuda_failed(const char* call, cudaError_t rc) {
  throw RuntimeFailure(std::string(call) + " failed: " + cudaGetErrorString(rc));
}

// Makes `device` current for the scope (NCCL ties a communicator to the device current at its
// creation), and restores the previous one.
class CurrentDevice {
 public:
  explicit CurrentDevice(int device) {
    if (const cudaError_t rc = cudaGetDevice(&previous_); rc != cudaSuccess)
      cuda_failed("cudaGetDevice", rc);
    if (const cudaError_t rc = cudaSetDevice(device); rc != cudaSuccess)
      cuda_failed("cudaSetDevice", rc);
  }
  ~CurrentDevice() { cudaSetDevice(previous_); }
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
};

NcclCommunicator::NcclCommunicator(Communicator& host, int device)
    : host_(host), device_(device), state_(std::make_unique<State>()) {
  ncclUniqueId id{};
  if (host_.rank() == 0)
    if (const ncclResult_t rc = ncclGetUniqueId(&id); rc != ncclSuccess)
      nccl_failed("ncclGetUniqueId", rc);
  // The id names rank 0's bootstrap address; every rank needs it before joining.
  if (const int rc = MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, MPI_COMM_WORLD); rc != MPI_SUCCESS)
    throw RuntimeFailure("MPI_Bcast of the NCCL unique id failed (MPI error " + std::to_string(rc) +
                         ")");
  CurrentDevice on(device_);
  if (const ncclResult_t rc = ncclCommInitRank(&state_->comm, host_.size(), id, host_.rank());
      rc != ncclSuccess)
    nccl_failed("ncclCommInitRank", rc);
}

NcclCommunicator::~NcclCommunicator() {
  if (state_->comm) ncclCommAbort(state_->comm);
}

void NcclCommunicator::finish() {
  if (!state_->comm) return;
  // Blocking mode (the default config): returns once every queued collective has completed.
  if (const ncclResult_t rc = ncclCommFinalize(state_->comm); rc != ncclSuccess)
    nccl_failed("ncclCommFinalize", rc, state_->comm);
  ncclCommDestroy(state_->comm);
  state_->comm = nullptr;
}

std::string NcclCommunicator::describe() const {
  return nccl_version() + " on cuda:" + std::to_string(device_) + ", over " + host_.describe();
}

void NcclCommunicator::all_reduce_sum(const FlatBuffer& buffer) {
  if (!buffer.on_device) return host_.all_reduce_sum(buffer);
  if (buffer.device != device_)
    throw RuntimeFailure("NCCL all-reduce: the buffer is on cuda:" + std::to_string(buffer.device) +
                         ", the communicator on cuda:" + std::to_string(device_));
  if (!state_->comm) throw RuntimeFailure("NCCL all-reduce after the communicator was finished");
  const ncclResult_t rc = ncclAllReduce(buffer.data, buffer.data, buffer.count, ncclFloat, ncclSum,
                                        state_->comm, static_cast<cudaStream_t>(buffer.stream));
  if (rc != ncclSuccess) nccl_failed("ncclAllReduce", rc, state_->comm);
}

Communicator& NcclCommunicator::for_gradients(const FlatBuffer& gradients) {
  if (!gradients.on_device) return host_;
  if (gradients.device != device_)
    throw DeviceError("a run in this process already uses NCCL on cuda:" + std::to_string(device_) +
                      "; its gradients are on cuda:" + std::to_string(gradients.device));
  return *this;
}

std::string nccl_version() {
  int code = 0;
  if (ncclGetVersion(&code) != ncclSuccess) return "NCCL (version unknown)";
  // NCCL_VERSION_CODE since 2.9: major × 10000 + minor × 100 + patch.
  return "NCCL " + std::to_string(code / 10000) + "." + std::to_string(code / 100 % 100) + "." +
         std::to_string(code % 100);
}

}  // namespace gputrain::dist
