# Where the Python on PATH keeps NVIDIA's pip wheels (nvidia-cudnn-cu13, nvidia-cublas, ...).
#
# On many GPU servers cuDNN and cuBLAS exist only as the wheels that `pip install torch` pulled in:
# <site-packages>/nvidia/cudnn/{include,lib} with versioned-only libcudnn.so.9, and cuBLAS in
# nvidia/cu13/{include,lib} (CUDA 13 wheels) or nvidia/cublas/{include,lib} (CUDA 12 wheels). The
# find modules ask that Python where its `nvidia.<name>` packages are, as a last resort after the
# system, the CUDA toolkit and explicit hints.
#
#   gputrain_pip_wheel_dirs(<out-var> <name>...)
#     <out-var>: the package folders of nvidia.<name> for each <name>, in that order, existing ones
#     only. A package may be a namespace package (no __init__.py: only __path__, no __file__), and
#     one name may have several folders.
#   GPUTRAIN_WHEEL_PYTHON (cache, optional): the Python to ask; default: python3 on PATH, then python.
#   GPUTRAIN_WHEEL_PYTHON_USED (set by the function): the Python that was asked, for messages.
include_guard(GLOBAL)

set(GPUTRAIN_WHEEL_PYTHON "" CACHE FILEPATH
    "Python whose nvidia.* pip wheels may provide cuDNN/cuBLAS (default: python3 on PATH)")

function(gputrain_pip_wheel_dirs out_var)
  set(python "${GPUTRAIN_WHEEL_PYTHON}")
  if(NOT python)
    # PATH only, not CMAKE_PREFIX_PATH: "the Python on PATH" is the one `pip install torch` used.
    # Not cached, so a later configure with another PATH asks the Python it now finds. By hand
    # rather than find_program, which would drop PATH entries under CMAKE_IGNORE_PATH prefixes.
    string(REPLACE ":" ";" path_dirs "$ENV{PATH}")
    foreach(name python3 python)
      foreach(dir IN LISTS path_dirs)
        if(NOT python AND dir AND EXISTS "${dir}/${name}" AND NOT IS_DIRECTORY "${dir}/${name}")
          set(python "${dir}/${name}")
        endif()
      endforeach()
    endforeach()
  endif()
  set(dirs "")
  if(python)
    set(code [=[
import importlib, os, sys
for name in sys.argv[1:]:
    try:
        mod = importlib.import_module("nvidia." + name)
    except Exception:
        continue
    paths = list(getattr(mod, "__path__", None) or [])
    if not paths and getattr(mod, "__file__", None):
        paths = [os.path.dirname(mod.__file__)]
    for p in paths:
        if os.path.isdir(p):
            print(os.path.abspath(p))
]=])
    execute_process(COMMAND "${python}" -c "${code}" ${ARGN}
                    OUTPUT_VARIABLE out ERROR_QUIET RESULT_VARIABLE rc TIMEOUT 60)
    if(rc EQUAL 0 AND out)
      string(STRIP "${out}" out)
      string(REPLACE "\n" ";" dirs "${out}")
      list(REMOVE_DUPLICATES dirs)
    endif()
  endif()
  set(${out_var} "${dirs}" PARENT_SCOPE)
  set(GPUTRAIN_WHEEL_PYTHON_USED "${python}" PARENT_SCOPE)
endfunction()

# True when <path> lies inside one of the folders that follow it, compared as written and with
# symbolic links resolved (a wheel folder may be reached through a linked site-packages, and a file
# in it may be a link to elsewhere).
function(gputrain_path_in_dirs out_var path)
  set(${out_var} FALSE PARENT_SCOPE)
  get_filename_component(abs "${path}" ABSOLUTE)
  get_filename_component(real "${path}" REALPATH)
  foreach(d IN LISTS ARGN)
    get_filename_component(d_real "${d}" REALPATH)
    foreach(pair IN ITEMS "${abs}|${d}" "${real}|${d_real}" "${abs}|${d_real}")
      string(REPLACE "|" ";" pair "${pair}")
      list(GET pair 0 file)
      list(GET pair 1 dir)
      string(FIND "${file}" "${dir}/" at)
      if(at EQUAL 0)
        set(${out_var} TRUE PARENT_SCOPE)
        return()
      endif()
    endforeach()
  endforeach()
endfunction()
