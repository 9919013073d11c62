// Run-time detection of the OpenBLAS build (see include/gputrain/blas_info.hpp). The queries are
// OpenBLAS's own exports, present in all three Debian builds (libopenblas0-openmp, -pthread,
// -serial), which share one soname: the one linked at build time says nothing about the one loaded.
#include "gputrain/blas_info.hpp"

#include <cblas.h>
#include <omp.h>

#include <sstream>

namespace gputrain {

const char* threading_name(BlasThreading threading) {
  switch (threading) {
    case BlasThreading::Sequential:
      return "sequential";
    case BlasThreading::Pthreads:
      return "pthreads";
    case BlasThreading::OpenMP:
      return "openmp";
  }
  return "unknown";
}

BlasInfo blas_info() {
  BlasInfo info;
  const char* config = openblas_get_config();
  info.config = config ? config : "";
  // "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...": the version is the second word.
  std::istringstream words(info.config);
  std::string name, version;
  if (words >> name >> version && name == "OpenBLAS") info.version = version;
  switch (openblas_get_parallel()) {
    case 1:
      info.threading = BlasThreading::Pthreads;
      break;
    case 2:
      info.threading = BlasThreading::OpenMP;
      break;
    default:
      info.threading = BlasThreading::Sequential;
  }
  info.threads = info.threading == BlasThreading::Sequential ? 1 : openblas_get_num_threads();
  // The OpenMP build follows omp_get_max_threads() at each call (it resynchronizes its count
  // lazily); report what the next GEMM will use.
  if (info.threading == BlasThreading::OpenMP) info.threads = omp_get_max_threads();
  return info;
}

std::string describe_blas(const BlasInfo& info) {
  std::string text = "OpenBLAS";
  if (!info.version.empty()) text += " " + info.version;
  text += std::string(" (") + threading_name(info.threading) + ", " + std::to_string(info.threads) +
          (info.threads == 1 ? " thread)" : " threads)");
  return text;
}

std::string describe_blas() {
  return describe_blas(blas_info());
}

BlasInfo configure_blas_threads(int threads) {
  if (threads < 1) threads = 1;
  switch (openblas_get_parallel()) {
    case 1:
      // A pthread OpenBLAS called from several OpenMP threads at once would hand each GEMM to its
      // own pool of `threads` workers: threads² busy threads on `threads` cores.
      openblas_set_num_threads(1);
      break;
    case 2:
      // Shares libgomp's pool; inside a parallel region it runs on the calling thread alone.
      // (Its openblas_set_num_threads is omp_set_num_threads.)
      omp_set_num_threads(threads);
      break;
    default:
      break;
  }
  return blas_info();
}

}  // namespace gputrain
