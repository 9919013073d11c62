"""Data-parallel training under mpirun on the CPU backend (issue 12): a 2-rank run follows the
single-process trajectory with the same global batch, only rank 0 writes, SIGTERM to the launcher
stops every rank with a checkpoint that resumes on 1 or 2 ranks, and a bad config fails fast with
one message. Skipped only where mpirun is absent outside CI."""

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

import cli_helpers as h

MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(MPIRUN is None and not os.environ.get("CI"),
                                reason="mpirun not installed (apt-get install openmpi-bin)")
REL = 1e-5
RUN_FILES = ("model.safetensors", "model_best.safetensors", "checkpoint.safetensors",
             "metrics.jsonl", "config.yaml", "train_batch.png", "curves.png")


def mpirun_cmd(ranks, args):
    assert MPIRUN, "mpirun missing (scripts/setup.sh installs openmpi-bin)"
    # --oversubscribe: CI machines may have fewer cores than ranks; root in CI containers.
    return [MPIRUN, "-np", str(ranks), "--oversubscribe", "--allow-run-as-root",
            "--mca", "btl", "self,vader,tcp", str(h.binary_path()), *[str(a) for a in args]]


def mpi_env():
    env = dict(os.environ)
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    # Containers (CI) often forbid the cross-process memory attach of the shared-memory transport.
    env["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
    return env


def run_mpi(ranks, args, cwd, timeout=240):
    return subprocess.run(mpirun_cmd(ranks, args), cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, env=mpi_env())


def assert_close_weights(path_a, path_b, rel=REL):
    a, b = h.read_safetensors(path_a), h.read_safetensors(path_b)
    assert a.shapes() == b.shapes()
    for name in a.tensors:
        x, y = a.tensors[name], b.tensors[name]
        scale = max(float(np.max(np.abs(x))), 1e-12)
        diff = float(np.max(np.abs(x - y)))
        assert diff <= rel * scale, f"{name}: max |diff| {diff:.3g} > {rel} × max |w| {scale:.3g}"


def assert_close_metrics(path_a, path_b, rel=REL,
                         keys=("train_loss", "train_acc", "test_loss", "test_acc", "lr", "steps",
                               "global_step")):
    a, b = h.read_metrics(path_a), h.read_metrics(path_b)
    assert [m["epoch"] for m in a] == [m["epoch"] for m in b]
    for ma, mb in zip(a, b):
        for k in keys:
            assert mb[k] == pytest.approx(ma[k], rel=rel, abs=1e-7), (k, ma, mb)


def single(cfg, out, cwd, *extra):
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet", *extra], cwd=cwd)
    h.assert_ok(res)


@pytest.mark.parametrize("batch_size", [32, 37])  # 2000 % 37 = 2: a partial last batch
def test_two_ranks_follow_the_single_process_run(batch_size, make_config, tmp_path):
    cfg = make_config(epochs=2, batch_size=batch_size, threads=1, log_interval=10,
                      curves=True)
    single(cfg, tmp_path / "one", tmp_path)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    res = run_mpi(2, ["train", "--config", cfg, "--out", tmp_path / "two"], cwd=workdir)
    assert res.returncode == 0, h.describe(res)
    h.assert_no_crash_text(res)
    assert_close_weights(tmp_path / "one/model.safetensors", tmp_path / "two/model.safetensors")
    assert_close_metrics(tmp_path / "one/metrics.jsonl", tmp_path / "two/metrics.jsonl")
    # Only rank 0 wrote: the run's files once each, nothing in the working folder, and only
    # rank 0's log lines (the others log warnings and errors only, prefixed with their rank).
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(RUN_FILES)
    assert list(workdir.iterdir()) == []
    assert len(h.read_metrics(tmp_path / "two/metrics.jsonl")) == 2
    assert res.stdout.count("done:") == 1, res.stdout
    assert "rank 1" not in res.stdout
    first = res.stdout.splitlines()[0]
    assert "rank 0 of MPI (" in first and "2 ranks" in first, first
    # ... this rank's device and what sums the gradients.
    assert "this rank on cpu, 1 thread" in first, first
    assert "(local rank 0 of 2 on this node)" in first, first
    assert "gradients summed by MPI_Allreduce" in first, first


def test_odd_batch_where_the_last_batch_is_smaller_than_the_world(make_config, tmp_path):
    # 2000 % 1999 = 1: the last step of each epoch has one image, rank 1 none.
    cfg = make_config(epochs=2, batch_size=1999, threads=1, lr=0.01)
    single(cfg, tmp_path / "one", tmp_path)
    res = run_mpi(2, ["train", "--config", cfg, "--out", tmp_path / "two", "--quiet"],
                  cwd=tmp_path)
    assert res.returncode == 0, h.describe(res)
    assert_close_weights(tmp_path / "one/model.safetensors", tmp_path / "two/model.safetensors")
    assert_close_metrics(tmp_path / "one/metrics.jsonl", tmp_path / "two/metrics.jsonl")


def wait_for(path, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_to_mpirun_checkpoints_and_resumes_on_one_or_two_ranks(make_config, tmp_path):
    # SIGTERM (after the first epoch) must land part way through even on an idle machine, where an
    # epoch of the small net takes ~30 ms: a wider conv makes each epoch slower, not the trajectory
    # longer (hundreds of epochs would let summation-order differences grow past the tolerance).
    epochs = 60
    wide = [dict(layer) for layer in h.SMALL_LAYERS]
    wide[0]["out_channels"] = 96
    cfg = make_config(epochs=epochs, batch_size=32, threads=1, layers=wide)
    single(cfg, tmp_path / "full", tmp_path)
    out = tmp_path / "stopped"
    proc = subprocess.Popen(mpirun_cmd(2, ["train", "--config", cfg, "--out", out, "--quiet"]),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=mpi_env())
    try:
        # Stop part way through the run (the folder is prepared when training starts).
        assert wait_for(out / "metrics.jsonl", 120), "the run never started writing"
        # metrics.jsonl appears when training starts (before the first epoch's line).
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, (stdout, stderr)
    assert elapsed < 15, f"mpirun took {elapsed:.1f} s to end after SIGTERM"
    for marker in ("terminate called", "Segmentation fault", "core dumped"):
        assert marker not in stderr, stderr[-3000:]
    checkpoint = out / "checkpoint.safetensors"
    assert checkpoint.is_file(), stderr[-3000:]
    # Written by the stop, part way through the run: not the end of the last epoch.
    meta = h.read_safetensors(checkpoint).metadata
    assert int(meta["epoch"]) < epochs, meta

    for ranks in (1, 2):
        resumed = tmp_path / f"resumed{ranks}"
        shutil.copytree(out, resumed)
        args = ["train", "--resume", resumed / "checkpoint.safetensors", "--quiet"]
        if ranks == 1:
            h.assert_ok(h.run_gputrain(args, cwd=tmp_path))
        else:
            res = run_mpi(2, args, cwd=tmp_path)
            assert res.returncode == 0, h.describe(res)
        assert_close_weights(tmp_path / "full/model.safetensors", resumed / "model.safetensors")
        # `steps` counts the steps of the invocation: fewer in the resumed epoch.
        assert_close_metrics(tmp_path / "full/metrics.jsonl", resumed / "metrics.jsonl",
                             keys=("train_loss", "train_acc", "test_loss", "test_acc", "lr",
                                   "global_step"))


def rank_pids(mpirun_pid):
    """{rank: pid} of the gputrain processes mpirun started (their OMPI_COMM_WORLD_RANK)."""
    ranks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != mpirun_pid:
                continue
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for var in env:
            if var.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(var.split(b"=", 1)[1])] = int(entry)
    return ranks


def test_a_dying_rank_ends_every_rank_promptly(make_config, tmp_path):
    cfg = make_config(epochs=50, batch_size=32, threads=1)
    proc = subprocess.Popen(mpirun_cmd(2, ["train", "--config", cfg, "--out", tmp_path / "out",
                                           "--quiet"]),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=mpi_env())
    try:
        assert wait_for(tmp_path / "out/metrics.jsonl", 120), "the run never started"
        ranks = rank_pids(proc.pid)
        assert set(ranks) == {0, 1}, ranks
        started = time.monotonic()
        os.kill(ranks[1], signal.SIGKILL)
        proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert elapsed < 15, f"the other rank lived {elapsed:.1f} s after rank 1 died"
    def alive(pid):
        try:
            return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
        except OSError:
            return False
    # mpirun may return a moment before the last rank's exit is complete.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid in ranks.values()):
        time.sleep(0.05)
    assert not any(alive(pid) for pid in ranks.values())


def test_bad_config_fails_on_every_rank_with_one_message(make_config, tmp_path):
    cfg = make_config(epochs=1, batch_size=0)
    started = time.monotonic()
    res = run_mpi(2, ["train", "--config", cfg, "--out", tmp_path / "out"], cwd=tmp_path,
                  timeout=60)
    assert time.monotonic() - started < 30
    assert res.returncode == 2, h.describe(res)
    assert res.stderr.count("gputrain: error:") == 1, res.stderr
    assert "train.batch_size" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_info_and_version_name_the_world_and_mpi(tmp_path):
    res = run_mpi(2, ["info"], cwd=tmp_path, timeout=60)
    assert res.returncode == 0, h.describe(res)
    assert res.stdout.count("world: MPI (") == 2 and "2 ranks" in res.stdout, res.stdout
    alone = h.run_gputrain(["info"], cwd=tmp_path)
    h.assert_ok(alone)
    assert "world: 1 process; MPI: " in alone.stdout, alone.stdout
    version = h.run_gputrain(["--version"], cwd=tmp_path)
    assert "MPI: " in version.stdout, version.stdout


BN_LAYERS = [
    {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "batchnorm2d", "name": "bn1"},
    {"type": "relu"},
    {"type": "avgpool2d", "kernel": 2},
    {"type": "flatten"},
    {"type": "dropout", "p": 0.2},
    {"type": "linear", "name": "fc1", "out_features": 10},
]


def test_batchnorm_ranks_evaluate_with_rank_0s_running_statistics(make_config, tmp_path):
    # Each rank's running statistics follow its own half of every batch; before evaluating, every
    # rank takes rank 0's (as DDP's broadcast_buffers), which model.safetensors holds. So the
    # test metrics the 2 ranks report together are those of a one-process eval of the weights.
    cfg = make_config(epochs=2, batch_size=32, threads=1, layers=BN_LAYERS)
    res = run_mpi(2, ["train", "--config", cfg, "--out", tmp_path / "two", "--quiet"],
                  cwd=tmp_path)
    assert res.returncode == 0, h.describe(res)
    weights = h.read_safetensors(tmp_path / "two/model.safetensors")
    assert int(weights.tensors["bn1.num_batches_tracked"]) == 2 * (h.TRAIN_COUNT // 32 + 1)
    last = h.read_metrics(tmp_path / "two/metrics.jsonl")[-1]
    ev = h.run_gputrain(["eval", "--config", cfg, "--weights", tmp_path / "two/model.safetensors",
                         "--json"], cwd=tmp_path)
    h.assert_ok(ev)
    import json
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    assert result["accuracy"] == pytest.approx(last["test_acc"], abs=1e-12)
    assert result["loss"] == pytest.approx(last["test_loss"], rel=1e-6)
