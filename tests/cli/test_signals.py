"""SIGPIPE: a reader of stdout or stderr that goes away (`gputrain train ... | head -1`) does not
stop a run; logging stops and training finishes with every output written."""

import subprocess

import cli_helpers as h


def run_with_closed_stream(cmd, cwd, which):
    """Runs `cmd` with `which` ("stdout" or "stderr") a pipe whose reader goes away (after the
    first line of stdout, as `| head -1` does; at once for stderr, which a normal run hardly
    writes) and the other stream captured; returns (exit code, first line, other stream)."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, text=True,
                            preexec_fn=h._default_sigint, **pipes)
    closing = proc.stdout if which == "stdout" else proc.stderr
    other = proc.stderr if which == "stdout" else proc.stdout
    first = closing.readline() if which == "stdout" else ""
    closing.close()  # the reader goes away: later writes get EPIPE
    try:
        rest = other.read()
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, first, rest


def test_stdout_closed_by_head_still_finishes_the_run(make_config, tmp_path):
    # Three epochs and a log line every 5 steps: plenty written after the reader has gone.
    cfg = make_config(epochs=3, log_interval=5, curves=True)
    out = tmp_path / "out"
    rc, first, stderr = run_with_closed_stream(
        [h.binary_path(), "train", "--config", cfg, "--out", out], tmp_path, "stdout")
    assert first, "the run should print at least one line before the pipe closes"
    assert rc == 0, f"exit {rc} after stdout's reader went away (141 = killed by SIGPIPE):\n" + \
        stderr[-2000:]
    for marker in h.CRASH_MARKERS:
        assert marker not in stderr, stderr[-2000:]
    for name in ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "config.yaml"):
        assert (out / name).is_file(), f"{name} missing: {sorted(p.name for p in out.iterdir())}"
    assert len(h.read_metrics(out / "metrics.jsonl")) == 3


def test_stdout_closed_gives_the_same_weights(make_config, tmp_path):
    cfg = make_config(epochs=2, log_interval=5, curves=True)
    rc, _, _ = run_with_closed_stream(
        [h.binary_path(), "train", "--config", cfg, "--out", tmp_path / "piped"], tmp_path,
        "stdout")
    assert rc == 0
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "plain", "--quiet"],
                               cwd=tmp_path))
    h.assert_bitwise_equal(tmp_path / "plain/model.safetensors",
                           tmp_path / "piped/model.safetensors")


def test_stderr_closed_still_finishes_the_run(make_config, tmp_path):
    cfg = make_config(epochs=2, log_interval=5, curves=True)
    out = tmp_path / "out"
    rc, _, stdout = run_with_closed_stream(
        [h.binary_path(), "train", "--config", cfg, "--out", out], tmp_path, "stderr")
    assert rc == 0, f"exit {rc} after stderr's reader went away"
    assert "done:" in stdout, stdout[-2000:]
    assert (out / "model.safetensors").is_file()


def test_shell_pipeline_into_head(make_config, tmp_path):
    """The literal pipeline of the issue: `gputrain train ... | head -1`."""
    cfg = make_config(epochs=2, log_interval=5, curves=True)
    out = tmp_path / "out"
    script = (f"'{h.binary_path()}' train --config '{cfg}' --out '{out}' | head -1; "
              "exit ${PIPESTATUS[0]}")
    res = subprocess.run(["bash", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=180)
    assert res.returncode == 0, h.describe(res)
    assert len(res.stdout.splitlines()) == 1
    assert (out / "model.safetensors").is_file()
