#!/usr/bin/env python3
"""Writes CIFAR-10-shaped binary files of random pixels (labels i % 10) for benchmarks and GPU checks
where the real set is absent: DIR/data_batch_1..5.bin with PER_BATCH records each and
DIR/test_batch.bin with TEST records; a record is 1 label byte + 3072 pixel bytes (3×32×32).

usage: make_random_cifar10.py DIR PER_BATCH TEST
"""
import os
import sys


def write(path, n):
    pixels = os.urandom(n * 3072)
    rec = bytearray(n * 3073)
    for i in range(n):
        rec[i * 3073] = i % 10
        rec[i * 3073 + 1:(i + 1) * 3073] = pixels[i * 3072:(i + 1) * 3072]
    with open(path, "wb") as f:
        f.write(rec)


def main():
    d, per_batch, test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(d, exist_ok=True)
    for b in range(1, 6):
        write(os.path.join(d, f"data_batch_{b}.bin"), per_batch)
    write(os.path.join(d, "test_batch.bin"), test)


if __name__ == "__main__":
    main()
