#include "dist/world.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "gputrain/errors.hpp"

#ifdef GPUTRAIN_WITH_MPI
#include <mpi.h>
#endif
#ifdef GPUTRAIN_WITH_NCCL
#include "dist/nccl.hpp"
#endif

namespace gputrain::dist {
namespace {

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v && *v;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

}  // namespace

#ifdef GPUTRAIN_WITH_MPI
namespace {

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string s(text, size_t(length));
  // Open MPI: "Open MPI v4.1.4, package: ..., ident: ..., repo rev: ..."; keep the first part.
  const size_t comma = s.find(',');
  if (comma != std::string::npos) s.resize(comma);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

[[noreturn]] void mpi_failed(const char* call, int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw RuntimeFailure(std::string(call) + " failed: " + std::string(text, size_t(length)));
}

}  // namespace

// MPI_COMM_WORLD: host buffers; a CUDA engine's gradients go to the NCCL communicator it makes
// for them (for_gradients).
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    library_ = mpi_library_version();
    // The ranks that share this node's memory: their order picks each one's GPU.
    MPI_Comm node = MPI_COMM_NULL;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node) ==
            MPI_SUCCESS &&
        node != MPI_COMM_NULL) {
      MPI_Comm_rank(node, &local_rank_);
      MPI_Comm_size(node, &local_size_);
      MPI_Comm_free(&node);
    } else {  // the launcher's word for it
      local_rank_ = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
      local_size_ = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
    }
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string device_library() const override {
#ifdef GPUTRAIN_WITH_NCCL
    return nccl_version();
#else
    return {};
#endif
  }
  Communicator& for_gradients(const FlatBuffer& gradients) override {
    if (!gradients.on_device) return *this;
#ifdef GPUTRAIN_WITH_NCCL
    // Under a launcher a CUDA engine's gradients always go through NCCL, one rank too: the
    // path a multi-GPU run takes is the path a 1-rank run tests.
    if (!nccl_) nccl_ = std::make_unique<NcclCommunicator>(*this, gradients.device);
    return nccl_->for_gradients(gradients);
#else
    if (size_ == 1) return *this;  // nothing to reduce
    throw DeviceError(
        "training on several ranks with a CUDA engine needs a build with NCCL; this build "
        "reduces host buffers only (use --device cpu)");
#endif
  }
  // Before MPI_Finalize, after a run that succeeded everywhere.
  void finish() {
#ifdef GPUTRAIN_WITH_NCCL
    if (nccl_) nccl_->finish();
#endif
  }
  std::string describe() const override {
    return "MPI (" + library_ + "), " + std::to_string(size_) + " rank" + (size_ == 1 ? "" : "s");
  }
  void all_reduce_sum(const FlatBuffer& buffer) override {
    if (buffer.on_device)
      throw DeviceError(
          "training on several ranks with a CUDA engine needs a build with NCCL; this build "
          "reduces host buffers only (use --device cpu)");
    if (size_ == 1) return;
    // One call for the whole buffer; counts above INT_MAX do not occur (parameters are floats
    // of one model in memory) but are split anyway to stay within MPI's int count.
    size_t done = 0;
    while (done < buffer.count) {
      const int n = int(std::min<size_t>(buffer.count - done, size_t(1) << 30));
      const int rc =
          MPI_Allreduce(MPI_IN_PLACE, buffer.data + done, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      if (rc != MPI_SUCCESS) mpi_failed("MPI_Allreduce", rc);
      done += size_t(n);
    }
  }
  void all_reduce_sum(double* values, size_t count) override {
    if (size_ == 1 || count == 0) return;
    const int rc =
        MPI_Allreduce(MPI_IN_PLACE, values, int(count), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) mpi_failed("MPI_Allreduce", rc);
  }
  bool any(bool flag) override {
    if (size_ == 1) return flag;
    int value = flag ? 1 : 0;
    const int rc = MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) mpi_failed("MPI_Allreduce", rc);
    return value != 0;
  }

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string library_;
#ifdef GPUTRAIN_WITH_NCCL
  std::unique_ptr<NcclCommunicator> nccl_;
#endif
};

#endif  // GPUTRAIN_WITH_MPI

bool launched_by_mpi() {
  return env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMI_SIZE") || env_set("PMIX_RANK") ||
         (env_set("SLURM_STEP_ID") && env_int("SLURM_STEP_NUM_TASKS", 1) > 1);
}

std::unique_ptr<World> World::join(int* argc, char*** argv) {
  std::unique_ptr<World> world(new World());
#ifdef GPUTRAIN_WITH_MPI
  int already = 0;
  MPI_Initialized(&already);
  if (launched_by_mpi() && !already) {
    int provided = 0;
    // Only the main thread calls MPI (the CPU engine's OpenMP threads never do).
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    world->initialized_mpi_ = true;
    already = 1;
  }
  if (already) {
    // Errors come back as codes (turned into exceptions) rather than aborting the job silently.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    auto mpi = std::make_unique<MpiCommunicator>();
    world->mpi_ = mpi.get();
    world->communicator_ = std::move(mpi);
    return world;
  }
#else
  (void)argc;
  (void)argv;
  const int launched_size = env_int("OMPI_COMM_WORLD_SIZE", env_int("PMI_SIZE", 1));
  if (launched_size > 1)
    throw UserError("started by an MPI launcher with " + std::to_string(launched_size) +
                    " ranks, but this gputrain was built without MPI (install libopenmpi-dev and "
                    "configure with -DGPUTRAIN_MPI=ON)");
#endif
  world->communicator_ = std::make_unique<LocalCommunicator>();
  return world;
}

World::~World() = default;

void World::wait_for_every_rank() {
#ifdef GPUTRAIN_WITH_MPI
  if (mpi_ && size() > 1) {
    const int rc = MPI_Barrier(MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) mpi_failed("MPI_Barrier", rc);
  }
#endif
}

void World::finish() {
#ifdef GPUTRAIN_WITH_MPI
  if (mpi_) mpi_->finish();
  if (initialized_mpi_) {
    MPI_Finalize();
    initialized_mpi_ = false;
  }
#endif
}

std::string collective_libraries() {
#if defined(GPUTRAIN_WITH_NCCL)
  return "MPI: " + mpi_library_version() + "; NCCL: " + nccl_version().substr(5);
#elif defined(GPUTRAIN_WITH_MPI)
  return "MPI: " + mpi_library_version() + "; NCCL support not built";
#else
  return "MPI support not built";
#endif
}

}  // namespace gputrain::dist
