# ctest (label cmake): cmake/FindCUDNN.cmake and cmake/GputrainCublas.cmake find cuDNN and cuBLAS in
# the layout of NVIDIA's pip wheels (what `pip install torch` installs), with every system copy
# hidden, and a program linked against them starts without LD_LIBRARY_PATH.
#
#   cmake -DGPUTRAIN_SOURCE_DIR=<repo> -DWORK_DIR=<scratch> -DGENERATOR=<gen> [-DMAKE_PROGRAM=..]
#         [-DC_COMPILER=..] -P find_cuda_libs_test.cmake
#
# Layout written under WORK_DIR (the wheels' own, with versioned-only libraries):
#   site-packages/nvidia/cudnn/{include/cudnn.h,cudnn_version.h, lib/libcudnn.so.9}  namespace
#       package (no __init__.py: only __path__), like nvidia-cudnn-cu13
#   site-packages/nvidia/cu13/{__init__.py, include/cublas_v2.h, lib/libcublas.so.13,
#       lib/libcublasLt.so.13}   like the CUDA 13 nvidia-cublas wheel
#   bin/python3   the real Python with -S (no site-packages of its own) and PYTHONPATH at the above,
#                 first on PATH
# Cases, each a fresh configure of tests/cmake/consumer:
#   wheel      finds both in the fake wheels, says so (CUDNN_SOURCE names the pip wheel), parses
#              the header's version 9.99.7; the probe builds and runs; configured again (cached),
#              it still names the wheel
#   no-wheel   same hiding, Python without the wheels: nothing found (proves the hiding works, so
#              the first case found the wheel and not a system copy)
#   root       CUDNN_ROOT=<dir with lib64/libcudnn.so.9> wins over the wheel
cmake_minimum_required(VERSION 3.25)
foreach(v GPUTRAIN_SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "find_cuda_libs_test: -D${v}=... missing")
  endif()
endforeach()

find_program(REAL_PYTHON NAMES python3 python)
if(NOT REAL_PYTHON)
  message("SKIPPED: no python3 on PATH to stand in for the wheels' Python")
  return()
endif()
# The interpreter itself, not a launcher (a pyenv shim needs its own PATH, which the cases cut).
execute_process(COMMAND "${REAL_PYTHON}" -c "import sys; print(sys.executable)"
                OUTPUT_VARIABLE REAL_PYTHON OUTPUT_STRIP_TRAILING_WHITESPACE)

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(gen_args -G "${GENERATOR}")
if(MAKE_PROGRAM)
  list(APPEND gen_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(C_COMPILER)
  list(APPEND gen_args "-DCMAKE_C_COMPILER=${C_COMPILER}")
endif()

function(run_checked what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "find_cuda_libs_test: ${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(run_out "${out}" PARENT_SCOPE)
endfunction()

# ---- the fake libraries, with the real sonames ----
run_checked("building the stand-in libraries" ${CMAKE_COMMAND} -S
            "${GPUTRAIN_SOURCE_DIR}/tests/cmake/fake_libs" -B "${WORK_DIR}/fake_libs" ${gen_args})
run_checked("building the stand-in libraries" ${CMAKE_COMMAND} --build "${WORK_DIR}/fake_libs")

set(site "${WORK_DIR}/site-packages")
set(cudnn_dir "${site}/nvidia/cudnn")
set(cu13_dir "${site}/nvidia/cu13")
# Only the versioned files travel (file(COPY) copies the file itself, not the unversioned link).
file(COPY "${WORK_DIR}/fake_libs/libcudnn.so.9" DESTINATION "${cudnn_dir}/lib")
file(COPY "${WORK_DIR}/fake_libs/libcublas.so.13" "${WORK_DIR}/fake_libs/libcublasLt.so.13"
     DESTINATION "${cu13_dir}/lib")
file(WRITE "${cudnn_dir}/include/cudnn_version.h"
     "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 99\n#define CUDNN_PATCHLEVEL 7\n")
file(WRITE "${cudnn_dir}/include/cudnn.h" "#include \"cudnn_version.h\"\n")
file(WRITE "${cu13_dir}/__init__.py" "")
file(WRITE "${cu13_dir}/include/cublas_v2.h" "#define FAKE_CUBLAS_HEADER 1\n")
foreach(f libcudnn.so libcublas.so libcublasLt.so)
  if(EXISTS "${cudnn_dir}/lib/${f}" OR EXISTS "${cu13_dir}/lib/${f}")
    message(FATAL_ERROR "find_cuda_libs_test: ${f} must not exist in the fake wheels")
  endif()
endforeach()

# A CUDNN_ROOT install of another version, for the precedence case.
set(root "${WORK_DIR}/cudnn-root")
file(COPY "${WORK_DIR}/fake_libs/libcudnn.so.9" DESTINATION "${root}/lib64")
file(WRITE "${root}/include/cudnn_version.h"
     "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 88\n#define CUDNN_PATCHLEVEL 1\n")
file(WRITE "${root}/include/cudnn.h" "#include \"cudnn_version.h\"\n")

# ---- Pythons standing in for the one on PATH ----
foreach(kind wheel no-wheel)
  set(pypath "${site}")
  if(kind STREQUAL "no-wheel")
    set(pypath "${WORK_DIR}/empty-site")
    file(MAKE_DIRECTORY "${pypath}")
  endif()
  file(WRITE "${WORK_DIR}/python-${kind}/python3"
       "#!/bin/sh\nPYTHONPATH='${pypath}' exec '${REAL_PYTHON}' -S \"$@\"\n")
  file(CHMOD "${WORK_DIR}/python-${kind}/python3" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE
       GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
endforeach()

# Every place a system or toolkit copy could come from: the usual prefixes (and with them the
# <prefix>/lib/<arch> folders) and the CUDA toolkits. PATH is cut down to the stand-in Python and
# /usr/bin:/bin, so no other PATH-derived prefix (e.g. /usr/local/cuda from .../bin) is searched.
set(hide /usr /usr/local / /opt/cuda /usr/local/cuda)
file(GLOB toolkits LIST_DIRECTORIES true /usr/local/cuda-*)
list(APPEND hide ${toolkits})

function(configure_case name python_kind)   # extra args: more cmake -E env settings
  set(bdir "${WORK_DIR}/case-${name}")
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env --unset=CUDNN_ROOT --unset=CUDA_PATH --unset=CUDAToolkit_ROOT
            --unset=CMAKE_PREFIX_PATH --unset=CMAKE_LIBRARY_PATH --unset=CMAKE_INCLUDE_PATH
            "PATH=${WORK_DIR}/python-${python_kind}:/usr/bin:/bin" ${ARGN}
            ${CMAKE_COMMAND} -S "${GPUTRAIN_SOURCE_DIR}/tests/cmake/consumer" -B "${bdir}"
            ${gen_args} "-DGPUTRAIN_SOURCE_DIR=${GPUTRAIN_SOURCE_DIR}"
            "-DCMAKE_IGNORE_PREFIX_PATH=${hide}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "find_cuda_libs_test: configure (${name}) failed (${rc}):\n${out}\n${err}")
  endif()
  string(REGEX MATCHALL "RESULT [A-Z_]+=[^\n]*" results "${out}")
  foreach(line IN LISTS results)
    string(REGEX MATCH "RESULT ([A-Z_]+)=(.*)" _ "${line}")
    set(${CMAKE_MATCH_1} "${CMAKE_MATCH_2}" PARENT_SCOPE)
  endforeach()
  message(STATUS "case ${name}:\n${results}")
  set(case_bdir "${bdir}" PARENT_SCOPE)
endfunction()

function(expect what actual expected)
  if(NOT "${actual}" STREQUAL "${expected}")
    message(FATAL_ERROR "find_cuda_libs_test: ${what}: got '${actual}', expected '${expected}'")
  endif()
endfunction()
function(expect_match what actual regex)
  if(NOT "${actual}" MATCHES "${regex}")
    message(FATAL_ERROR "find_cuda_libs_test: ${what}: got '${actual}', expected to match '${regex}'")
  endif()
endfunction()

# ---- case wheel ----
configure_case(wheel wheel)
expect("wheel: CUDNN_FOUND" "${CUDNN_FOUND}" "TRUE")
expect("wheel: CUDNN_LIBRARY" "${CUDNN_LIBRARY}" "${cudnn_dir}/lib/libcudnn.so.9")
expect("wheel: CUDNN_INCLUDE_DIR" "${CUDNN_INCLUDE_DIR}" "${cudnn_dir}/include")
expect("wheel: CUDNN_VERSION" "${CUDNN_VERSION}" "9.99.7")
expect_match("wheel: CUDNN_SOURCE" "${CUDNN_SOURCE}" "^pip wheel nvidia\\.cudnn of .*python-wheel/python3$")
expect("wheel: CUBLAS_FOUND" "${CUBLAS_FOUND}" "TRUE")
expect("wheel: CUBLAS_LIBRARY" "${CUBLAS_LIBRARY}" "${cu13_dir}/lib/libcublas.so.13")
expect("wheel: CUBLASLT_LIBRARY" "${CUBLASLT_LIBRARY}" "${cu13_dir}/lib/libcublasLt.so.13")
expect_match("wheel: CUBLAS_SOURCE" "${CUBLAS_SOURCE}" "^pip wheel")
run_checked("building the probe against the wheels" ${CMAKE_COMMAND} --build "${case_bdir}")
# Started with LD_LIBRARY_PATH unset: the build-tree RPATH must lead to the versioned-only files.
run_checked("running the probe" ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH "${case_bdir}/probe")
expect_match("probe output" "${run_out}" "probe: cudnn 99 \\(header 9\\), cublas 13, cublasLt 13")

# A second configure of the same folder (cached results) still says where they came from.
configure_case(wheel wheel)
expect_match("wheel, reconfigured: CUDNN_SOURCE" "${CUDNN_SOURCE}" "^pip wheel nvidia\\.cudnn of ")
expect_match("wheel, reconfigured: CUBLAS_SOURCE" "${CUBLAS_SOURCE}" "^pip wheel")
expect("wheel, reconfigured: CUDNN_LIBRARY" "${CUDNN_LIBRARY}" "${cudnn_dir}/lib/libcudnn.so.9")

# ---- case no-wheel: the hiding really hides every other copy ----
configure_case(no-wheel no-wheel)
expect("no-wheel: CUDNN_FOUND" "${CUDNN_FOUND}" "FALSE")
expect("no-wheel: CUBLAS_FOUND" "${CUBLAS_FOUND}" "FALSE")

# ---- case root: CUDNN_ROOT comes before the wheel ----
configure_case(root wheel "CUDNN_ROOT=${root}")
expect("root: CUDNN_LIBRARY" "${CUDNN_LIBRARY}" "${root}/lib64/libcudnn.so.9")
expect("root: CUDNN_VERSION" "${CUDNN_VERSION}" "9.88.1")
expect("root: CUDNN_SOURCE" "${CUDNN_SOURCE}" "CUDNN_ROOT")

message(STATUS "find_cuda_libs_test: all cases passed")
