"""Data parallelism on GPUs (issue 12): what runs without a GPU — NCCL built into the default build
where the CUDA toolkit and MPI are present, --version naming NCCL and MPI, each rank of a node
naming its own device by local rank, and `mpirun -np 2 ... --device cuda` on a machine without a
GPU ending cleanly with one message — and, where a GPU is present, a 1-rank NCCL run equal to the
run without mpirun (2 ranks on 2 GPUs equal to 1 GPU where there are two)."""

import json
import os
import time

import pytest

import cli_helpers as h
from test_mpi import MPIRUN, assert_close_metrics, assert_close_weights, run_mpi

BUILT_NCCL = os.environ.get("GPUTRAIN_BUILT_NCCL", "").upper() == "ON"
BUILT_CUDA = os.environ.get("GPUTRAIN_BUILT_CUDA", "").upper() == "ON"
BUILT_MPI = os.environ.get("GPUTRAIN_BUILT_MPI", "").upper() == "ON"
needs_mpirun = pytest.mark.skipif(MPIRUN is None and not os.environ.get("CI"),
                                  reason="mpirun not installed (apt-get install openmpi-bin)")


def visible_gpus():
    res = h.run_gputrain(["info", "--json"], timeout=60)
    h.assert_ok(res)
    return json.loads(res.stdout)


def test_the_default_build_has_nccl_where_cuda_and_mpi_are(gputrain_bin):
    """CI builds with the defaults (GPUTRAIN_NCCL=AUTO) on a machine with the CUDA toolkit (NCCL
    in it) and Open MPI: the NCCL path must be compiled and linked there, not silently left out."""
    if "GPUTRAIN_BUILT_NCCL" not in os.environ:
        pytest.skip("run through ctest (it says what the build has)")
    if BUILT_CUDA and BUILT_MPI and os.environ.get("CI"):
        assert BUILT_NCCL, "CUDA and MPI are built but NCCL is not: is nccl.h/libnccl missing?"
    if BUILT_NCCL:
        assert BUILT_CUDA and BUILT_MPI


def test_version_names_nccl_and_mpi(gputrain_bin):
    res = h.run_gputrain(["--version"])
    h.assert_ok(res)
    line = res.stdout.strip()
    if BUILT_NCCL:
        assert "MPI: Open MPI v" in line and "; NCCL: 2." in line, line
    elif BUILT_MPI:
        assert "MPI: " in line and "NCCL support not built" in line, line


@needs_mpirun
def test_each_rank_of_a_node_names_its_own_device(gputrain_bin, tmp_path):
    res = run_mpi(2, ["info"], cwd=tmp_path, timeout=60)
    assert res.returncode == 0, h.describe(res)
    lines = [l for l in res.stdout.splitlines() if l.startswith("this rank's device: ")]
    assert len(lines) == 2, res.stdout
    # Ranks 0 and 1 are local ranks 0 and 1 of this node (MPI_Comm_split_type(SHARED)).
    assert any("(local rank 0 of 2)" in l for l in lines), lines
    assert any("(local rank 1 of 2)" in l for l in lines), lines
    gpus = visible_gpus()
    if not gpus:
        assert all(l.startswith("this rank's device: cpu (no CUDA device)") for l in lines), lines
    elif len(gpus) >= 2:
        assert any(l.startswith("this rank's device: cuda:0 ") for l in lines), lines
        assert any(l.startswith("this rank's device: cuda:1 ") for l in lines), lines
    if BUILT_NCCL:
        assert res.stdout.count("; NCCL: 2.") == 2, res.stdout


@needs_mpirun
def test_two_ranks_on_cuda_without_a_gpu_end_cleanly(gputrain_bin, make_config, tmp_path):
    if visible_gpus():
        pytest.skip("a CUDA device is present")
    cfg = make_config(epochs=1, batch_size=32)
    started = time.monotonic()
    res = run_mpi(2, ["train", "--config", cfg, "--device", "cuda", "--out", tmp_path / "out"],
                  cwd=tmp_path, timeout=60)
    assert time.monotonic() - started < 30
    assert res.returncode == 2, h.describe(res)
    h.assert_no_crash_text(res)
    assert res.stderr.count("gputrain: error:") == 1, res.stderr
    assert "--device cuda: no usable CUDA device" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


# ---- on a GPU -------------------------------------------------------------------------------

def gpu_config(make_config, **kwargs):
    cfg = make_config(epochs=2, batch_size=64, log_interval=10, device="cuda", **kwargs)
    return cfg


@needs_mpirun
def test_one_rank_through_nccl_equals_the_run_without_mpirun(gputrain_bin, make_config, tmp_path):
    if not BUILT_NCCL or not visible_gpus():
        pytest.skip("needs a CUDA device and a build with NCCL")
    cfg = gpu_config(make_config)
    det = ["--set", "train.deterministic=true"]
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "alone", "--quiet",
                                *det], cwd=tmp_path))
    res = run_mpi(1, ["train", "--config", cfg, "--out", tmp_path / "nccl", *det], cwd=tmp_path)
    assert res.returncode == 0, h.describe(res)
    first = res.stdout.splitlines()[0]
    assert "rank 0 of MPI (" in first and "1 rank" in first, first
    assert "this rank on cuda:0" in first and "gradients summed by NCCL 2." in first, first
    assert_close_weights(tmp_path / "alone/model.safetensors", tmp_path / "nccl/model.safetensors")
    assert_close_metrics(tmp_path / "alone/metrics.jsonl", tmp_path / "nccl/metrics.jsonl")


@needs_mpirun
def test_two_gpus_follow_one(gputrain_bin, make_config, tmp_path):
    if not BUILT_NCCL or len(visible_gpus()) < 2:
        pytest.skip("needs two CUDA devices and a build with NCCL")
    cfg = gpu_config(make_config)
    det = ["--set", "train.deterministic=true"]
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "one", "--quiet",
                                *det], cwd=tmp_path))
    res = run_mpi(2, ["train", "--config", cfg, "--out", tmp_path / "two", *det], cwd=tmp_path)
    assert res.returncode == 0, h.describe(res)
    assert "gradients summed by NCCL" in res.stdout.splitlines()[0], res.stdout
    # Two shards summed in another order than one batch: float rounding, not 1e-5 exactly.
    assert_close_weights(tmp_path / "one/model.safetensors", tmp_path / "two/model.safetensors",
                         rel=1e-4)
    assert_close_metrics(tmp_path / "one/metrics.jsonl", tmp_path / "two/metrics.jsonl", rel=1e-4)
