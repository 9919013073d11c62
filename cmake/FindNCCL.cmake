# FindNCCL: NVIDIA's collective library (nccl.h + libnccl), for data-parallel training on GPUs.
# Looked for in this order:
#   1. -DNCCL_LIBRARY=<file> (and optionally -DNCCL_INCLUDE_DIR=<dir>): used as given;
#   2. NCCL_ROOT (CMake or environment variable): <root>/{lib64,lib} and <root>/include;
#   3. the CUDA toolkit (CUDAToolkit_LIBRARY_DIR / CUDAToolkit_LIBRARY_ROOT, when
#      find_package(CUDAToolkit) ran first; NVIDIA's redistributable toolkits put NCCL there), then
#      CMake's usual system paths (Debian/Ubuntu libnccl-dev: /usr/lib/x86_64-linux-gnu);
#   4. the pip wheel of the Python on PATH (nvidia-nccl-cu13/-cu12, what `pip install torch`
#      brings): <site-packages>/nvidia/nccl/{lib,include}, where only libnccl.so.2 exists.
# The header is taken next to the library first (<lib>/../include), so both come from one install.
#
# Results: NCCL_FOUND, NCCL_LIBRARY, NCCL_INCLUDE_DIR, NCCL_VERSION (from nccl.h's NCCL_MAJOR,
# NCCL_MINOR, NCCL_PATCH) and the imported target NCCL::nccl.
include(FindPackageHandleStandardArgs)
include(${CMAKE_CURRENT_LIST_DIR}/GputrainPipWheels.cmake)

set(_nccl_names nccl libnccl.so.2)
set(_nccl_roots "")
foreach(_root IN ITEMS "${NCCL_ROOT}" "$ENV{NCCL_ROOT}")
  if(_root)
    list(APPEND _nccl_roots "${_root}")
  endif()
endforeach()
set(_nccl_toolkit_dirs "")
foreach(_dir IN ITEMS "${CUDAToolkit_LIBRARY_DIR}" "${CUDAToolkit_LIBRARY_ROOT}")
  if(_dir)
    list(APPEND _nccl_toolkit_dirs "${_dir}")
  endif()
endforeach()

if(NOT NCCL_LIBRARY AND _nccl_roots)
  find_library(NCCL_LIBRARY NAMES ${_nccl_names} NAMES_PER_DIR PATHS ${_nccl_roots}
               PATH_SUFFIXES lib64 lib NO_DEFAULT_PATH)
endif()
if(NOT NCCL_LIBRARY)
  find_library(NCCL_LIBRARY NAMES ${_nccl_names} NAMES_PER_DIR HINTS ${_nccl_toolkit_dirs}
               PATH_SUFFIXES lib64 lib)
endif()
if(NOT NCCL_LIBRARY)
  gputrain_pip_wheel_dirs(_nccl_wheel_dirs nccl)
  if(_nccl_wheel_dirs)
    find_library(NCCL_LIBRARY NAMES ${_nccl_names} NAMES_PER_DIR PATHS ${_nccl_wheel_dirs}
                 PATH_SUFFIXES lib NO_DEFAULT_PATH)
  endif()
endif()

if(NCCL_LIBRARY AND NOT NCCL_INCLUDE_DIR)
  get_filename_component(_nccl_lib_dir "${NCCL_LIBRARY}" DIRECTORY)
  find_path(NCCL_INCLUDE_DIR nccl.h PATHS "${_nccl_lib_dir}/../include" NO_DEFAULT_PATH)
  if(NOT NCCL_INCLUDE_DIR)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  endif()
endif()

set(NCCL_VERSION "")
if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _nccl_version_lines
       REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "NCCL_${_part} +([0-9]+)" _match "${_nccl_version_lines}")
    set(_nccl_${_part} "${CMAKE_MATCH_1}")
  endforeach()
  if(NOT _nccl_MAJOR STREQUAL "")
    set(NCCL_VERSION "${_nccl_MAJOR}.${_nccl_MINOR}.${_nccl_PATCH}")
  endif()
endif()

find_package_handle_standard_args(NCCL REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR
                                  VERSION_VAR NCCL_VERSION)
if(NCCL_FOUND AND NOT TARGET NCCL::nccl)
  add_library(NCCL::nccl UNKNOWN IMPORTED)
  set_target_properties(NCCL::nccl PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
mark_as_advanced(NCCL_LIBRARY NCCL_INCLUDE_DIR)
