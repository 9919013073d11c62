// The processes of one run: a world of one, or the ranks an MPI launcher (mpirun, srun) started.
// Every MPI (and NCCL) call and #ifdef of the tree lives in src/dist; the CLI asks here for the
// world and its communicator, the library receives the communicator through TrainRequest.
#pragma once

#include <memory>
#include <string>

#include "gputrain/communicator.hpp"

namespace gputrain::dist {

class MpiCommunicator;  // world.cpp, where MPI is built in

// True when an MPI launcher started this process (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK or a
// SLURM step's task count in the environment). Without one, nothing initializes MPI: gputrain runs
// alone exactly as a build without MPI does.
bool launched_by_mpi();

class World {
 public:
  // Joins the launcher's job (MPI_Init_thread) when launched by one and MPI is built in;
  // otherwise a world of one process. Throws UserError when launched by mpirun with more than one
  // rank but this build has no MPI (each rank would otherwise train alone, all writing the same
  // files).
  static std::unique_ptr<World> join(int* argc, char*** argv);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  // Started by an MPI launcher, and MPI built in: the communicator is MPI's (one rank too).
  bool launched() const { return mpi_ != nullptr; }
  int rank() const { return communicator_->rank(); }
  int size() const { return communicator_->size(); }
  Communicator& communicator() { return *communicator_; }
  // Ends the MPI job cleanly (MPI_Finalize) after a run that succeeded on every rank. Not called
  // on an error: a rank that leaves without it makes the launcher end the other ranks at once
  // instead of letting them wait for it.
  void finish();
  // Returns when every rank has called it (MPI_Barrier; nothing in a world of one). After an
  // agreed stop the other ranks wait here for rank 0's checkpoint: a rank that left first would
  // make the launcher kill rank 0 part way through the write.
  void wait_for_every_rank();

 private:
  World() = default;
  std::unique_ptr<Communicator> communicator_;
  MpiCommunicator* mpi_ = nullptr;  // communicator_ under a launcher (MPI built in)
  bool initialized_mpi_ = false;
};

// "MPI: Open MPI v4.1.4; NCCL: 2.28.9" / "MPI support not built": the collective libraries of
// this build, with the versions of those loaded; for --version and `gputrain info`.
std::string collective_libraries();

}  // namespace gputrain::dist
