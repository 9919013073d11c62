#!/usr/bin/env python3
"""Writes CIFAR-10-shaped binary files of random pixels (labels i % 10) for benchmarks and GPU checks
where the real set is absent: DIR/data_batch_1..5.bin with PER_BATCH records each and
DIR/test_batch.bin with TEST records; a record is 1 label byte + 3072 pixel bytes (3×32×32).

usage: make_random_cifar10.py DIR PER_BATCH TEST
"""
import argparse
import os


def write(path, n):
    pixels = os.urandom(n * 3072)
    rec = bytearray(n * 3073)
    for i in range(n):
        rec[i * 3073] = i % 10
        rec[i * 3073 + 1:(i + 1) * 3073] = pixels[i * 3072:(i + 1) * 3072]
    with open(path, "wb") as f:
        f.write(rec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="output folder (created)")
    parser.add_argument("per_batch", type=int, help="records in each of data_batch_1..5.bin")
    parser.add_argument("test", type=int, help="records in test_batch.bin")
    args = parser.parse_args()
    if args.per_batch < 1 or args.test < 1:
        parser.error("PER_BATCH and TEST must be at least 1")
    d, per_batch, test = args.dir, args.per_batch, args.test
    os.makedirs(d, exist_ok=True)
    for b in range(1, 6):
        write(os.path.join(d, f"data_batch_{b}.bin"), per_batch)
    write(os.path.join(d, "test_batch.bin"), test)


if __name__ == "__main__":
    main()
