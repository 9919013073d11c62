# cuBLAS and cuBLASLt as the targets CUDA::cublas and CUDA::cublasLt, wherever users have them.
#
# find_package(CUDAToolkit) defines those targets when the toolkit holds cuBLAS. Where it does not
# (a toolkit with nvcc but without the math libraries, next to `pip install torch`), this looks in
# CMake's usual paths, then in the pip wheels of the Python on PATH: nvidia/cu13/{lib,include}
# (CUDA 13 wheels: libcublas.so.13 only, no unversioned .so) or nvidia/cublas/{lib,include} (CUDA
# 12 wheels), and defines the two targets from what it found, so the build links them unchanged.
#
#   gputrain_find_cublas()   after find_package(CUDAToolkit) (which may have failed or not run)
# Sets CUBLAS_FOUND, CUBLAS_LIBRARY, CUBLASLT_LIBRARY, CUBLAS_SOURCE (in words), and defines the
# targets when found.
include_guard(GLOBAL)
include(${CMAKE_CURRENT_LIST_DIR}/GputrainPipWheels.cmake)

function(gputrain_find_cublas)
  if(TARGET CUDA::cublas AND TARGET CUDA::cublasLt)
    get_target_property(lib CUDA::cublas IMPORTED_LOCATION)
    get_target_property(lt CUDA::cublasLt IMPORTED_LOCATION)
    set(source "the CUDA toolkit")
    if(lib STREQUAL "${_GPUTRAIN_CUBLAS_FOUND_LIBRARY}")
      set(source "${_GPUTRAIN_CUBLAS_SOURCE}")   # targets defined by an earlier call
    endif()
  else()
    set(names_blas cublas libcublas.so.13 libcublas.so.12)
    set(names_lt cublasLt libcublasLt.so.13 libcublasLt.so.12)
    set(source "system paths")
    if(GPUTRAIN_CUBLAS_LIBRARY AND GPUTRAIN_CUBLAS_LIBRARY STREQUAL "${_GPUTRAIN_CUBLAS_FOUND_LIBRARY}")
      set(source "${_GPUTRAIN_CUBLAS_SOURCE}")   # found by an earlier configure: cached
    endif()
    find_library(GPUTRAIN_CUBLAS_LIBRARY NAMES ${names_blas} NAMES_PER_DIR)
    find_library(GPUTRAIN_CUBLASLT_LIBRARY NAMES ${names_lt} NAMES_PER_DIR)
    find_path(GPUTRAIN_CUBLAS_INCLUDE_DIR cublas_v2.h)
    if(NOT GPUTRAIN_CUBLAS_LIBRARY OR NOT GPUTRAIN_CUBLASLT_LIBRARY OR NOT GPUTRAIN_CUBLAS_INCLUDE_DIR)
      gputrain_pip_wheel_dirs(wheel_dirs cu13 cublas cu12)
      if(wheel_dirs)
        unset(GPUTRAIN_CUBLAS_LIBRARY CACHE)
        unset(GPUTRAIN_CUBLASLT_LIBRARY CACHE)
        unset(GPUTRAIN_CUBLAS_INCLUDE_DIR CACHE)
        find_library(GPUTRAIN_CUBLAS_LIBRARY NAMES ${names_blas} NAMES_PER_DIR PATHS ${wheel_dirs}
                     PATH_SUFFIXES lib NO_DEFAULT_PATH)
        find_library(GPUTRAIN_CUBLASLT_LIBRARY NAMES ${names_lt} NAMES_PER_DIR PATHS ${wheel_dirs}
                     PATH_SUFFIXES lib NO_DEFAULT_PATH)
        find_path(GPUTRAIN_CUBLAS_INCLUDE_DIR cublas_v2.h PATHS ${wheel_dirs} PATH_SUFFIXES include
                  NO_DEFAULT_PATH)
        set(source "pip wheel (nvidia.cu13 / nvidia.cublas) of ${GPUTRAIN_WHEEL_PYTHON_USED}")
      endif()
    endif()
    set(lib "${GPUTRAIN_CUBLAS_LIBRARY}")
    set(lt "${GPUTRAIN_CUBLASLT_LIBRARY}")
    if(lib AND lt AND GPUTRAIN_CUBLAS_INCLUDE_DIR)
      foreach(pair "cublas|${lib}" "cublasLt|${lt}")
        string(REPLACE "|" ";" pair "${pair}")
        list(GET pair 0 name)
        list(GET pair 1 file)
        add_library(CUDA::${name} UNKNOWN IMPORTED GLOBAL)
        set_target_properties(CUDA::${name} PROPERTIES IMPORTED_LOCATION "${file}"
                              INTERFACE_INCLUDE_DIRECTORIES "${GPUTRAIN_CUBLAS_INCLUDE_DIR}")
        if(TARGET CUDA::cudart)
          set_property(TARGET CUDA::${name} APPEND PROPERTY INTERFACE_LINK_LIBRARIES CUDA::cudart)
        endif()
      endforeach()
      set(_GPUTRAIN_CUBLAS_SOURCE "${source}" CACHE INTERNAL "")
      set(_GPUTRAIN_CUBLAS_FOUND_LIBRARY "${lib}" CACHE INTERNAL "")
    endif()
  endif()
  if(lib AND lt)
    set(CUBLAS_FOUND TRUE PARENT_SCOPE)
  else()
    set(CUBLAS_FOUND FALSE PARENT_SCOPE)
    set(source "")
  endif()
  set(CUBLAS_LIBRARY "${lib}" PARENT_SCOPE)
  set(CUBLASLT_LIBRARY "${lt}" PARENT_SCOPE)
  set(CUBLAS_SOURCE "${source}" PARENT_SCOPE)
endfunction()
