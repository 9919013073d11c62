"""gputrain under each OpenBLAS build the machine has (Debian installs them side by side and its
alternatives pick one for libopenblas.so.0; LD_LIBRARY_PATH forces another): the training log's
first line names the build and how its threads run, and training gives the same result under each.

The CPU backend calls every GEMM from inside its own OpenMP regions, one thread per call: the OpenMP
build does that by itself, the pthread build is set to 1 thread (its own pool would oversubscribe
the cores), the serial build has nothing to set. So all builds run the same single-threaded kernels
in the same order and the weights come out bitwise identical."""

import re
from pathlib import Path

import pytest

import cli_helpers as h

LIB_DIR = Path("/usr/lib/x86_64-linux-gnu")
# folder -> the threading gputrain must report with 2 OpenMP threads
VARIANTS = {
    "openblas-openmp": "openmp, 2 threads",
    "openblas-pthread": "pthreads, 1 thread",
    "openblas-serial": "sequential, 1 thread",
}

# A net whose linear layers are large enough to be split across threads (>= 2^20 multiply-adds).
LAYERS = [
    {"type": "conv2d", "name": "conv1", "out_channels": 8, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"},
    {"type": "linear", "name": "fc1", "out_features": 96},
    {"type": "relu"},
    {"type": "linear", "name": "fc2", "out_features": 10},
]

BLAS_LINE = re.compile(r"training on cpu, 2 threads, OpenBLAS (\d+\.\d+\.\d+) \(([^)]*)\)")


def available():
    return [v for v in VARIANTS if (LIB_DIR / v / "libopenblas.so.0").is_file()]


def train(make_config, tmp_path, variant):
    out = tmp_path / variant
    cfg = make_config(name=f"{variant}.yaml", out_dir=out, layers=LAYERS, epochs=2, batch_size=64,
                      threads=2, lr=0.05, momentum=0.9)
    env = {"LD_LIBRARY_PATH": str(LIB_DIR / variant)} if variant else {}
    res = h.run_gputrain(["train", "--config", cfg], env=env)
    h.assert_ok(res)
    return res, out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_log_names_the_loaded_blas_and_its_threading(variant, make_config, tmp_path):
    if variant not in available():
        pytest.skip(f"{LIB_DIR / variant} is not installed here")
    res, out = train(make_config, tmp_path, variant)
    match = BLAS_LINE.search(res.stdout + res.stderr)
    assert match, "no 'training on cpu, 2 threads, OpenBLAS x.y.z (...)' line" + h.describe(res)
    assert match.group(2) == VARIANTS[variant], h.describe(res)
    metrics = h.read_metrics(out / "metrics.jsonl")
    assert len(metrics) == 2
    assert metrics[-1]["test_acc"] > 0.8, metrics[-1]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]


def test_every_build_gives_bitwise_the_same_weights(make_config, tmp_path):
    variants = available()
    if len(variants) < 2:
        pytest.skip("fewer than two OpenBLAS builds installed here")
    outs = [train(make_config, tmp_path, v)[1] for v in variants]
    for other in outs[1:]:
        h.assert_bitwise_equal(outs[0] / "model.safetensors", other / "model.safetensors")


def test_default_blas_is_described(make_config, tmp_path):
    """Without LD_LIBRARY_PATH: whatever the system's alternatives give is named."""
    res, _ = train(make_config, tmp_path, "")
    match = BLAS_LINE.search(res.stdout + res.stderr)
    assert match and match.group(2) in VARIANTS.values(), h.describe(res)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_info_names_the_loaded_blas_and_its_threading(variant):
    if variant not in available():
        pytest.skip(f"{LIB_DIR / variant} is not installed here")
    res = h.run_gputrain(["info"], env={"LD_LIBRARY_PATH": str(LIB_DIR / variant)})
    h.assert_ok(res)
    match = re.search(r"^cpu: OpenBLAS \d+\.\d+\.\d+ \(([a-z]+), \d+ threads?\)$", res.stdout,
                      re.MULTILINE)
    assert match, "no 'cpu: OpenBLAS x.y.z (threading, N threads)' line" + h.describe(res)
    assert match.group(1) == VARIANTS[variant].split(",")[0], h.describe(res)
