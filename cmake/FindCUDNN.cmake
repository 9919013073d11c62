# FindCUDNN: cuDNN (headers + libcudnn) wherever users have it, in this order:
#   1. -DCUDNN_LIBRARY=<file> (and optionally -DCUDNN_INCLUDE_DIR=<dir>): used as given;
#   2. CUDNN_ROOT (CMake variable or environment variable): <root>/{lib64,lib} and <root>/include;
#   3. the CUDA toolkit (CUDAToolkit_LIBRARY_DIR / CUDAToolkit_INCLUDE_DIRS, when find_package(
#      CUDAToolkit) ran first), then CMake's usual system paths (/usr/lib/x86_64-linux-gnu, ...);
#   4. the pip wheel of the Python on PATH (nvidia-cudnn-cu13/-cu12, e.g. from `pip install torch`):
#      <site-packages>/nvidia/cudnn/{lib,include}, where only libcudnn.so.9 exists (no unversioned
#      libcudnn.so), hence the explicit libcudnn.so.9 name. See GputrainPipWheels.cmake.
# The headers are taken next to the library first (<lib>/../include), so both come from one install.
#
# Results: CUDNN_FOUND, CUDNN_LIBRARY, CUDNN_INCLUDE_DIR, CUDNN_LIBRARY_DIR, CUDNN_VERSION (from
# cudnn_version.h), CUDNN_SOURCE (where it came from, in words, for the configure line) and the
# imported target CUDNN::cudnn. Linking the library by its full path gives executables a build-tree
# RPATH to its folder, so a wheel's libcudnn.so.9 loads without LD_LIBRARY_PATH; libcudnn.so.9 loads
# its sub-libraries (libcudnn_graph.so.9, ...) through its own RUNPATH $ORIGIN.
include(FindPackageHandleStandardArgs)
include(${CMAKE_CURRENT_LIST_DIR}/GputrainPipWheels.cmake)

set(_cudnn_names cudnn libcudnn.so.9)
set(_cudnn_roots "")
foreach(_root IN ITEMS "${CUDNN_ROOT}" "$ENV{CUDNN_ROOT}")
  if(_root)
    list(APPEND _cudnn_roots "${_root}")
  endif()
endforeach()
set(_cudnn_toolkit_dirs "")
if(CUDAToolkit_LIBRARY_DIR)
  list(APPEND _cudnn_toolkit_dirs "${CUDAToolkit_LIBRARY_DIR}")
endif()
if(CUDAToolkit_LIBRARY_ROOT)
  list(APPEND _cudnn_toolkit_dirs "${CUDAToolkit_LIBRARY_ROOT}")
endif()

# Where a cached CUDNN_LIBRARY came from: one this module found keeps the source it recorded; any
# other value was given by the user (-DCUDNN_LIBRARY=... or the cache editor).
set(CUDNN_SOURCE "")
if(CUDNN_LIBRARY)
  if(CUDNN_LIBRARY STREQUAL "${_CUDNN_FOUND_LIBRARY}")
    set(CUDNN_SOURCE "${_CUDNN_FOUND_SOURCE}")
  else()
    set(CUDNN_SOURCE "-DCUDNN_LIBRARY")
  endif()
endif()

if(NOT CUDNN_LIBRARY)
  if(_cudnn_roots)
    find_library(CUDNN_LIBRARY NAMES ${_cudnn_names} NAMES_PER_DIR PATHS ${_cudnn_roots}
                 PATH_SUFFIXES lib64 lib NO_DEFAULT_PATH)
    if(CUDNN_LIBRARY)
      set(CUDNN_SOURCE "CUDNN_ROOT")
    endif()
  endif()
endif()
if(NOT CUDNN_LIBRARY)
  find_library(CUDNN_LIBRARY NAMES ${_cudnn_names} NAMES_PER_DIR HINTS ${_cudnn_toolkit_dirs}
               PATH_SUFFIXES lib64 lib)
  if(CUDNN_LIBRARY)
    gputrain_path_in_dirs(_in_toolkit "${CUDNN_LIBRARY}" ${_cudnn_toolkit_dirs})
    if(_in_toolkit)
      set(CUDNN_SOURCE "the CUDA toolkit")
    else()
      set(CUDNN_SOURCE "system paths")
    endif()
  endif()
endif()
set(_cudnn_wheel_dirs "")
if(NOT CUDNN_LIBRARY)
  gputrain_pip_wheel_dirs(_cudnn_wheel_dirs cudnn)
  if(_cudnn_wheel_dirs)
    find_library(CUDNN_LIBRARY NAMES ${_cudnn_names} NAMES_PER_DIR PATHS ${_cudnn_wheel_dirs}
                 PATH_SUFFIXES lib NO_DEFAULT_PATH)
    if(CUDNN_LIBRARY)
      set(CUDNN_SOURCE "pip wheel nvidia.cudnn of ${GPUTRAIN_WHEEL_PYTHON_USED}")
    endif()
  endif()
endif()

if(CUDNN_LIBRARY)
  get_filename_component(CUDNN_LIBRARY_DIR "${CUDNN_LIBRARY}" DIRECTORY)
  # Headers: beside the library first (the same install), then the usual places.
  find_path(CUDNN_INCLUDE_DIR cudnn.h
            HINTS "${CUDNN_LIBRARY_DIR}/../include" "${CUDNN_LIBRARY_DIR}/../../include"
                  ${_cudnn_roots} ${CUDAToolkit_INCLUDE_DIRS}
            PATH_SUFFIXES include)
  set(_CUDNN_FOUND_LIBRARY "${CUDNN_LIBRARY}" CACHE INTERNAL "")
  set(_CUDNN_FOUND_SOURCE "${CUDNN_SOURCE}" CACHE INTERNAL "")
endif()

set(CUDNN_VERSION "")
if(CUDNN_INCLUDE_DIR)
  foreach(_header cudnn_version.h cudnn.h)
    if(NOT CUDNN_VERSION AND EXISTS "${CUDNN_INCLUDE_DIR}/${_header}")
      file(STRINGS "${CUDNN_INCLUDE_DIR}/${_header}" _cudnn_defines
           REGEX "^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) +[0-9]+")
      foreach(_part MAJOR MINOR PATCHLEVEL)
        string(REGEX MATCH "CUDNN_${_part} +([0-9]+)" _match "${_cudnn_defines}")
        set(_cudnn_${_part} "${CMAKE_MATCH_1}")
      endforeach()
      if(NOT _cudnn_MAJOR STREQUAL "")
        set(CUDNN_VERSION "${_cudnn_MAJOR}.${_cudnn_MINOR}.${_cudnn_PATCHLEVEL}")
      endif()
    endif()
  endforeach()
endif()

find_package_handle_standard_args(CUDNN REQUIRED_VARS CUDNN_LIBRARY CUDNN_INCLUDE_DIR
                                  VERSION_VAR CUDNN_VERSION)

if(CUDNN_FOUND AND NOT TARGET CUDNN::cudnn)
  add_library(CUDNN::cudnn UNKNOWN IMPORTED)
  set_target_properties(CUDNN::cudnn PROPERTIES IMPORTED_LOCATION "${CUDNN_LIBRARY}"
                                                INTERFACE_INCLUDE_DIRECTORIES "${CUDNN_INCLUDE_DIR}")
endif()
mark_as_advanced(CUDNN_LIBRARY CUDNN_INCLUDE_DIR)
