#!/usr/bin/env bash
# Build dependencies for a machine without package access (e.g. a lent GPU machine that has the CUDA
# toolkit, CMake and Python but none of Debian's -dev packages and no network).
#
#   scripts/offline_deps.sh download [DIR]   here, with apt: Debian's .deb files into DIR (.deps)
#   scripts/offline_deps.sh unpack [DIR]     there: unpacks them into DIR/root (no root needed,
#                                            nothing outside DIR touched) and prints the settings
#
# scripts/gpu_check.sh uses DIR/root by itself when it exists. By hand:
#   cmake -S . -B build -DCMAKE_PREFIX_PATH=$PWD/.deps/root/usr
#   export LD_LIBRARY_PATH=$PWD/.deps/root/usr/lib/x86_64-linux-gnu:$PWD/.deps/root/usr/lib/x86_64-linux-gnu/openblas-openmp
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
dir="${2:-.deps}"
# What gpu_check.sh needs there: the build's -dev packages and the run-time libraries a binary built
# here links (gputrain's ldd: spdlog, fmt, yaml-cpp, OpenBLAS with its gfortran and quadmath), the
# Fashion-MNIST set (parity suite), and ninja-build in case the machine has no `ninja` (gpu_check
# builds with Ninja; its unpacked bin/ is put at the end of PATH, so a local ninja wins). Not
# libgomp1 or libstdc++: a GPU machine's compiler brings newer ones, which must not be shadowed.
PACKAGES=(libcli11-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 catch2 libyaml-cpp-dev
          libyaml-cpp0.7 libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libquadmath0
          zlib1g-dev dataset-fashion-mnist ninja-build)
case "$mode" in
  download)
    mkdir -p "$dir"
    (cd "$dir" && apt-get download "${PACKAGES[@]}")
    debs=("$dir"/*.deb)
    echo "offline_deps: ${#debs[@]} packages in $dir ($(du -sh "$dir" | cut -f1))"
    ;;
  unpack)
    shopt -s nullglob
    debs=("$dir"/*.deb)
    [[ ${#debs[@]} -gt 0 ]] || { echo "offline_deps: no .deb files in $dir" >&2; exit 2; }
    mkdir -p "$dir/root"
    for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$dir/root" 2>/dev/null || dpkg -x "$deb" "$dir/root"; done
    root=$(cd "$dir/root" && pwd)
    arch_lib="$root/usr/lib/x86_64-linux-gnu"
    # The -dev packages point libopenblas.so at /etc/alternatives; give the build a direct link.
    ln -sf openblas-openmp/libopenblas.so.0 "$arch_lib/libopenblas.so"
    ln -sf openblas-openmp/cblas.h "$root/usr/include/x86_64-linux-gnu/cblas.h" 2>/dev/null || true
    # zlib1g-dev's libz.so points at a libz.so.1.x that zlib1g (not packed: every system has one,
    # and a packed copy would shadow it) would bring: link it to this machine's libz.so.1 instead.
    if [[ -L "$arch_lib/libz.so" && ! -e "$arch_lib/libz.so" ]]; then
      system_libz=$( (ldconfig -p 2>/dev/null || true) | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')
      [[ -n "$system_libz" ]] && ln -sf "$system_libz" "$arch_lib/libz.so"
    fi
    echo "offline_deps: unpacked ${#debs[@]} packages into $root"
    echo "CMAKE_PREFIX_PATH=$root/usr"
    echo "LD_LIBRARY_PATH=$arch_lib:$arch_lib/openblas-openmp"
    echo "GPUTRAIN_FASHION_DIR=$root/usr/share/datasets/fashion-mnist"
    ;;
  *)
    echo "usage: $0 download|unpack [DIR]" >&2
    exit 2
    ;;
esac
