// The BLAS description and thread setup (blas_info.hpp) for whichever OpenBLAS build this process
// loaded; tests/cli/test_blas.py runs the binary under each build the machine has.
#include <omp.h>

#include <catch2/catch.hpp>
#include <regex>

#include "gputrain/blas_info.hpp"

using namespace gputrain;

TEST_CASE("blas_info names the loaded OpenBLAS and its threading") {
  const BlasInfo info = blas_info();
  CHECK(info.config.rfind("OpenBLAS ", 0) == 0);
  CHECK(std::regex_match(info.version, std::regex(R"(\d+\.\d+\.\d+.*)")));
  CHECK(info.threads >= 1);
  const std::string text = describe_blas(info);
  CHECK(std::regex_match(
      text, std::regex(R"(OpenBLAS \S+ \((sequential|pthreads|openmp), \d+ threads?\))")));
  CHECK(text.find(threading_name(info.threading)) != std::string::npos);
}

TEST_CASE("configure_blas_threads leaves one BLAS thread per calling OpenMP thread") {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3}) {
    const BlasInfo info = configure_blas_threads(threads);
    CAPTURE(threads, describe_blas(info));
    switch (info.threading) {
      case BlasThreading::OpenMP:
        // Shares OpenMP's pool: as many as the backend's threads, one per call inside a region.
        CHECK(info.threads == threads);
        CHECK(omp_get_max_threads() == threads);
        break;
      case BlasThreading::Pthreads:
      case BlasThreading::Sequential:
        CHECK(info.threads == 1);
        break;
    }
  }
  omp_set_num_threads(saved);
}

TEST_CASE("threading names") {
  CHECK(std::string(threading_name(BlasThreading::Sequential)) == "sequential");
  CHECK(std::string(threading_name(BlasThreading::Pthreads)) == "pthreads");
  CHECK(std::string(threading_name(BlasThreading::OpenMP)) == "openmp");
}
