"""Determinism, --resume and SIGINT: interrupted-and-resumed runs equal uninterrupted ones bitwise."""

import signal
import subprocess
import time

import pytest

import cli_helpers as h


def train(cfg, out, *extra, cwd):
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet", *extra], cwd=cwd)
    h.assert_ok(res)
    return res


@pytest.mark.parametrize("threads", [1, 2])
def test_same_config_and_seed_is_bitwise_identical(threads, make_config, tmp_path):
    cfg = make_config(epochs=2 if threads == 1 else 1, threads=threads)
    train(cfg, tmp_path / "a", cwd=tmp_path)
    train(cfg, tmp_path / "b", cwd=tmp_path)
    h.assert_bitwise_equal(tmp_path / "a/model.safetensors", tmp_path / "b/model.safetensors")
    h.assert_bitwise_equal(tmp_path / "a/checkpoint.safetensors",
                           tmp_path / "b/checkpoint.safetensors")


def test_seed_and_shuffle_change_the_run(make_config, tmp_path):
    cfg = make_config(epochs=1)
    train(cfg, tmp_path / "base", cwd=tmp_path)
    train(cfg, tmp_path / "seed", "--set", "train.seed=8", cwd=tmp_path)
    train(cfg, tmp_path / "noshuffle", "--set", "train.shuffle=false", cwd=tmp_path)
    base = tmp_path / "base/model.safetensors"
    assert h.any_tensor_differs(base, tmp_path / "seed/model.safetensors"), \
        "train.seed had no effect"
    assert h.any_tensor_differs(base, tmp_path / "noshuffle/model.safetensors"), \
        "train.shuffle=false gave the same weights as a shuffled run"


def test_resume_at_epoch_boundary_equals_uninterrupted(make_config, tmp_path):
    cfg = make_config(epochs=2)
    train(cfg, tmp_path / "full", cwd=tmp_path)
    train(cfg, tmp_path / "first", "--set", "train.epochs=1", cwd=tmp_path)
    first_model = (tmp_path / "first/model.safetensors").read_bytes()
    train(cfg, tmp_path / "resumed", "--resume", tmp_path / "first/checkpoint.safetensors",
          "--set", "train.epochs=2", cwd=tmp_path)
    h.assert_bitwise_equal(tmp_path / "full/model.safetensors",
                           tmp_path / "resumed/model.safetensors")
    # checkpoint metadata may differ (the config's epochs); its tensors must not
    full = h.read_safetensors(tmp_path / "full/checkpoint.safetensors")
    resumed = h.read_safetensors(tmp_path / "resumed/checkpoint.safetensors")
    assert full.raw == resumed.raw, "checkpoint tensors (weights, momentum) differ after resume"
    last_full = h.read_metrics(tmp_path / "full/metrics.jsonl")[-1]
    last_resumed = h.read_metrics(tmp_path / "resumed/metrics.jsonl")[-1]
    for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc"):
        assert last_resumed[k] == pytest.approx(last_full[k], rel=1e-7, abs=0), (k, last_full,
                                                                                   last_resumed)
    # resuming must not touch the run it started from
    assert (tmp_path / "first/model.safetensors").read_bytes() == first_model


def test_resume_rejects_a_changed_config(make_config, tmp_path):
    cfg = make_config(epochs=1)
    train(cfg, tmp_path / "first", cwd=tmp_path)
    out = tmp_path / "changed"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                          "--resume", tmp_path / "first/checkpoint.safetensors",
                          "--set", "train.epochs=2", "--set", "optimizer.lr=0.5"], cwd=tmp_path)
    h.assert_user_error(res, must_contain=["lr"])
    h.assert_no_outputs(out)


def test_resume_missing_checkpoint(make_config, tmp_path):
    cfg = make_config(epochs=1)
    missing = tmp_path / "nope" / "checkpoint.safetensors"
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet", "--resume", missing],
                         cwd=tmp_path)
    h.assert_user_error(res, must_contain=["checkpoint.safetensors"])
    h.assert_no_outputs(out)


def test_resume_from_a_weights_only_file_is_rejected(make_config, tmp_path):
    cfg = make_config(epochs=1)
    train(cfg, tmp_path / "first", cwd=tmp_path)
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                          "--resume", tmp_path / "first/model.safetensors",
                          "--set", "train.epochs=2"], cwd=tmp_path)
    h.assert_user_error(res, must_contain=["model.safetensors"])
    h.assert_no_outputs(out)


def interrupt(args, out, tmp_path, tag, after_s=1.5, sig=signal.SIGINT):
    """Starts `gputrain train ARGS --out OUT --quiet`, sends `sig` (SIGINT, SIGTERM as a job
    scheduler would, or SIGHUP as a closing ssh session would) once `after_s` seconds have passed and OUT exists (training has clearly
    started), and checks the interrupted exit: 128 + sig (130 for SIGINT) within 1 s, a whole
    checkpoint.safetensors, no temporary files, no crash text."""
    stdout_path, stderr_path = tmp_path / f"{tag}.stdout", tmp_path / f"{tag}.stderr"
    cmd = [str(h.binary_path()), "train", *[str(a) for a in args], "--out", str(out), "--quiet"]
    with open(stdout_path, "w") as log_out, open(stderr_path, "w") as log_err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log_out, stderr=log_err,
                                preexec_fn=h._default_sigint)
        try:
            while True:
                assert proc.poll() is None, \
                    f"{tag}: the run ended before the interrupt (exit {proc.returncode}): " + \
                    stderr_path.read_text()[-2000:]
                elapsed = time.monotonic() - start
                if elapsed >= after_s and out.is_dir():
                    break
                assert elapsed < 30, f"{tag}: the output folder did not appear within 30 s"
                time.sleep(0.02)
            proc.send_signal(sig)
            sent = time.monotonic()
            try:
                rc = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{tag}: no exit within 15 s of {sig.name}")
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = stderr_path.read_text()
    want = 128 + int(sig)
    assert rc == want, \
        f"{tag}: exit code {rc} after {sig.name}, expected {want}; stderr:\n{stderr[-2000:]}"
    assert took <= 1.0, f"{tag}: exit {took:.2f} s after {sig.name}, expected within 1 s"
    for marker in h.CRASH_MARKERS:
        assert marker not in stderr, f"{tag}: stderr contains {marker!r}:\n{stderr[-2000:]}"
    assert (out / "checkpoint.safetensors").is_file(), \
        f"{tag}: no checkpoint.safetensors after {sig.name}: {sorted(p.name for p in out.iterdir())}"
    h.assert_no_temp_files(out)
    h.read_safetensors(out / "checkpoint.safetensors")  # whole and valid


@pytest.mark.parametrize("interrupts,after_s,sig",
                         [(1, 1.5, signal.SIGINT), (2, 1.5, signal.SIGINT),
                          (1, 0.05, signal.SIGINT), (1, 1.5, signal.SIGTERM),
                          (1, 1.5, signal.SIGHUP)],
                         ids=["once", "twice", "early", "sigterm", "sighup"])
def test_sigint_checkpoints_and_resume_equals_uninterrupted(interrupts, after_s, sig, make_config,
                                                            tmp_path):
    # A run far too long to finish: 1000 epochs of 125 small batches.
    cfg = make_config(epochs=1000, batch_size=16, lr=0.01, momentum=0.9, curves=True)
    out = tmp_path / "interrupted"
    interrupt(["--config", cfg], out, tmp_path, "first", after_s=after_s, sig=sig)
    if interrupts == 2:  # interrupt the resumed run too
        interrupt(["--config", cfg, "--resume", out / "checkpoint.safetensors"], out, tmp_path,
                  "second")

    metrics_path = out / "metrics.jsonl"
    completed = len(h.read_metrics(metrics_path)) if metrics_path.exists() else 0
    total = completed + 1  # finish the epoch the interrupt fell in

    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                          "--resume", out / "checkpoint.safetensors",
                          "--set", f"train.epochs={total}"], cwd=tmp_path)
    h.assert_ok(res)
    ref = tmp_path / "uninterrupted"
    train(cfg, ref, "--set", f"train.epochs={total}", cwd=tmp_path)
    h.assert_bitwise_equal(ref / "model.safetensors", out / "model.safetensors")
    ref_ckpt = h.read_safetensors(ref / "checkpoint.safetensors")
    out_ckpt = h.read_safetensors(out / "checkpoint.safetensors")
    assert ref_ckpt.raw == out_ckpt.raw, "checkpoint tensors (weights, momentum) differ"
    ref_metrics = h.read_metrics(ref / "metrics.jsonl")
    out_metrics = h.read_metrics(out / "metrics.jsonl")
    assert len(out_metrics) == total, \
        f"metrics.jsonl of the resumed run has {len(out_metrics)} lines, expected {total}"
    for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc"):
        assert out_metrics[-1][k] == pytest.approx(ref_metrics[-1][k], rel=1e-7, abs=0), \
            (k, ref_metrics[-1], out_metrics[-1])


AUGMENT = ["--set", "data.augment.crop_padding=2", "--set", "data.augment.hflip=true"]


def interrupt_resume_and_reference(cfg, extra, tmp_path):
    """SIGINT a run of `cfg` + `extra` mid-epoch, resume it to one epoch past the checkpoint, and
    train the same number of epochs uninterrupted. Returns (reference dir, resumed dir, epochs)."""
    out = tmp_path / "interrupted"
    interrupt(["--config", cfg, *extra], out, tmp_path, "first", after_s=1.5)
    metrics_path = out / "metrics.jsonl"
    total = (len(h.read_metrics(metrics_path)) if metrics_path.exists() else 0) + 1
    res = h.run_gputrain(["train", "--config", cfg, *extra, "--out", out, "--quiet",
                          "--resume", out / "checkpoint.safetensors",
                          "--set", f"train.epochs={total}"], cwd=tmp_path)
    h.assert_ok(res)
    ref = tmp_path / "uninterrupted"
    train(cfg, ref, *extra, "--set", f"train.epochs={total}", cwd=tmp_path)
    return ref, out, total


def test_sigint_mid_epoch_with_augmentation_resumes_bitwise(make_config, tmp_path):
    # Augmented images are keyed by (seed, epoch, sample): a resumed epoch draws the same crops
    # and flips as the uninterrupted one.
    cfg = make_config(epochs=1000, batch_size=16, lr=0.01, momentum=0.9, curves=True)
    ref, out, total = interrupt_resume_and_reference(cfg, AUGMENT, tmp_path)
    h.assert_bitwise_equal(ref / "model.safetensors", out / "model.safetensors")
    assert h.read_safetensors(ref / "checkpoint.safetensors").raw == \
        h.read_safetensors(out / "checkpoint.safetensors").raw
    # Augmentation changes the run (so the equality above is not that of an unaugmented run).
    plain = tmp_path / "plain"
    train(cfg, plain, "--set", f"train.epochs={total}", cwd=tmp_path)
    assert h.any_tensor_differs(ref / "model.safetensors", plain / "model.safetensors")


BN_DROPOUT_LAYERS = [
    {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "batchnorm2d", "name": "bn1"},
    {"type": "relu"},
    {"type": "avgpool2d", "kernel": 2},
    {"type": "conv2d", "name": "conv2", "out_channels": 6, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "batchnorm2d", "name": "bn2", "momentum": 0.2},
    {"type": "relu"},
    {"type": "global_avgpool"},
    {"type": "flatten"},
    {"type": "dropout", "p": 0.3},
    {"type": "linear", "name": "fc1", "out_features": 10},
]


def test_sigint_mid_epoch_with_batchnorm_dropout_augmentation_resumes_bitwise(make_config, tmp_path):
    # Batch-norm running statistics and num_batches_tracked travel in the checkpoint; dropout's
    # masks, like the augmentation, are keyed by (seed, epoch, sample, layer): a resumed epoch
    # drops the same units.
    cfg = make_config(epochs=1000, batch_size=16, lr=0.01, momentum=0.9, layers=BN_DROPOUT_LAYERS)
    ref, out, total = interrupt_resume_and_reference(cfg, AUGMENT, tmp_path)
    h.assert_bitwise_equal(ref / "model.safetensors", out / "model.safetensors")
    ref_ckpt = h.read_safetensors(ref / "checkpoint.safetensors")
    assert ref_ckpt.raw == h.read_safetensors(out / "checkpoint.safetensors").raw
    # The buffers are there, num_batches_tracked as an int64 count of every step of the run.
    steps = total * (h.TRAIN_COUNT // 16 + (1 if h.TRAIN_COUNT % 16 else 0))
    for bn in ("bn1", "bn2"):
        assert ref_ckpt.header[f"{bn}.num_batches_tracked"]["dtype"] == "I64"
        # aligned as the reference writer aligns (loaders may view the bytes in place)
        assert ref_ckpt.header[f"{bn}.num_batches_tracked"]["data_offsets"][0] % 8 == 0
        assert int(ref_ckpt.tensors[f"{bn}.num_batches_tracked"]) == steps
        assert f"{bn}.running_mean" in ref_ckpt.tensors and f"{bn}.running_var" in ref_ckpt.tensors
    # Dropout changes the run (so the equality above is not that of a run without it).
    no_dropout = tmp_path / "no-dropout"
    layers = [dict(l, p=0.0) if l["type"] == "dropout" else l for l in BN_DROPOUT_LAYERS]
    train(make_config(name="p0.yaml", epochs=total, batch_size=16, lr=0.01, momentum=0.9, layers=layers),
          no_dropout, *AUGMENT, cwd=tmp_path)
    assert h.any_tensor_differs(ref / "model.safetensors", no_dropout / "model.safetensors")
