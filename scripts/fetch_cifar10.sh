#!/usr/bin/env bash
# Downloads the CIFAR-10 binary version into data/cifar-10-batches-bin (what configs/cifar10.yaml
# reads), for machines with internet access. Verifies the archive's MD5 before unpacking.
set -euo pipefail
dest="${1:-data}"
url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
md5="c32a1d4ab5d03f1284b67883e8d87530"
mkdir -p "$dest"
if [[ -f "$dest/cifar-10-batches-bin/test_batch.bin" ]]; then
  echo "fetch_cifar10: $dest/cifar-10-batches-bin already present"
  exit 0
fi
tmp="$(mktemp "$dest/cifar-10-binary.XXXXXX.tar.gz")"
trap 'rm -f "$tmp"' EXIT
echo "fetch_cifar10: downloading $url"
if command -v curl >/dev/null; then curl -fL --retry 3 -o "$tmp" "$url"; else wget -O "$tmp" "$url"; fi
echo "$md5  $tmp" | md5sum -c --quiet
tar -xzf "$tmp" -C "$dest"
echo "fetch_cifar10: unpacked into $dest/cifar-10-batches-bin"
