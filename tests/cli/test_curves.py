"""curves.png (scripts/plot_curves.py, matplotlib): `gputrain plot`, and the run folder's curves
redrawn after every epoch by a helper process that training never waits for."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import cli_helpers as h

pytest.importorskip("matplotlib", reason="python3-matplotlib draws the curves")
from PIL import Image  # noqa: E402  (python3-pil, installed with the test packages)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as img:
        img.load()
        assert 600 <= img.width <= 4000 and 300 <= img.height <= 3000, img.size
        return np.asarray(img.convert("RGB"))


def test_plot_overlays_runs(tmp_path, dataset):
    for name, lr in (("a", 0.05), ("b", 0.01)):
        cfg = h.write_config(tmp_path / f"{name}.yaml", dataset.dir, tmp_path / name, epochs=2,
                             lr=lr)
        h.assert_ok(h.run_gputrain(["train", "--config", cfg]))
    target = tmp_path / "ab.png"
    res = h.run_gputrain(["plot", tmp_path / "a" / "metrics.jsonl",
                          tmp_path / "b" / "metrics.jsonl", "--out", target])
    h.assert_ok(res)
    read_png(target)
    missing = tmp_path / "nope" / "metrics.jsonl"
    h.assert_user_error(h.run_gputrain(["plot", missing, "--out", target]),
                        must_contain=[str(missing)])


# ---- curves.png in the run folder (output.curves) ----

def test_run_draws_curves_png_that_changes_with_each_epoch(make_config, tmp_path):
    cfg = make_config(epochs=1, curves=True)
    out = tmp_path / "run"
    first = h.run_gputrain(["train", "--config", cfg, "--out", out])
    h.assert_ok(first)
    assert "curves.png" not in first.stderr, first.stderr
    after_one = read_png(out / "curves.png")
    h.assert_no_temp_files(out)
    h.assert_ok(h.run_gputrain(["train", "--resume", out / "checkpoint.safetensors",
                                "--set", "train.epochs=2", "--quiet"]))
    after_two = read_png(out / "curves.png")
    h.assert_no_temp_files(out)
    assert after_one.shape == after_two.shape
    changed = np.any(after_one != after_two, axis=2).mean()
    assert changed > 0.002, f"only {changed:.4%} of the pixels changed from epoch 1 to 2"
    # Not an empty canvas: lines in several colours over the white background.
    assert len(np.unique(after_two.reshape(-1, 3), axis=0)) > 20


def test_output_curves_false_draws_nothing(make_config, tmp_path):
    cfg = make_config(epochs=1, curves=True)
    out = tmp_path / "run"
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                                "--set", "output.curves=false"]))
    assert not (out / "curves.png").exists()
    assert "curves: false" in (out / "config.yaml").read_text()


def write_executable(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("plotter", ["no-python", "no-matplotlib"])
def test_a_missing_plotter_is_one_warning_and_the_run_succeeds(plotter, make_config, tmp_path):
    if plotter == "no-python":
        python = tmp_path / "nowhere" / "python3"
        expected = "could not be started"
    else:
        # Debian's python3 without its site packages: the standard library, no matplotlib.
        python = write_executable(tmp_path / "bare-python3",
                                  "#!/bin/sh\nexec /usr/bin/python3 -S \"$@\"\n")
        expected = "matplotlib is not installed"
    cfg = make_config(epochs=3, curves=True)
    out = tmp_path / "run"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet"],
                         env={"GPUTRAIN_PLOT_PYTHON": str(python)})
    h.assert_ok(res)
    assert res.stderr.count("curves.png") == 1, res.stderr
    assert expected in res.stderr, res.stderr
    assert len(h.read_metrics(out / "metrics.jsonl")) == 3
    assert (out / "model.safetensors").is_file()
    assert not (out / "curves.png").exists()
    h.assert_no_temp_files(out)


# A stand-in for plot_curves.py, a shell script (it starts in a millisecond, so it logs even when
# it is killed soon after): logs its pid, the epochs in the metrics and its nice value, then writes
# half of a PNG into the temporary file, sleeps $PLOT_DELAY s, writes the rest and renames it.
SLOW_PLOTTER = """
out=$2 tmp=$4 metrics=$5
echo "$$ $(grep -c . "$metrics") $(nice)" >> "$PLOT_LOG"
head -c 100 "$PLOT_PNG" > "$tmp"
sleep "$PLOT_DELAY"
cat "$PLOT_PNG" > "$tmp"
mv "$tmp" "$out"
"""


def slow_plotter_env(tmp_path, delay):
    script = tmp_path / "slow_plot.sh"
    script.write_text(SLOW_PLOTTER)
    sample = tmp_path / "sample.png"
    Image.new("RGB", (800, 400), (255, 255, 255)).save(sample)
    log = tmp_path / "plot.log"
    return log, {"GPUTRAIN_PLOT_PYTHON": "/bin/sh", "GPUTRAIN_PLOT_SCRIPT": str(script),
                 "PLOT_LOG": str(log), "PLOT_PNG": str(sample), "PLOT_DELAY": str(delay)}


def test_a_slow_plotter_never_holds_up_training(make_config, tmp_path):
    # Each drawing takes 1.5 s; the epochs are far shorter. Training does not wait: drawings are
    # skipped while one runs (at low priority), and the end of the run draws every epoch.
    log, env = slow_plotter_env(tmp_path, 1.5)
    cfg = make_config(epochs=6, train_limit=256, test_limit=64, curves=True)
    out = tmp_path / "run"
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet"], env=env))
    starts = [line.split() for line in log.read_text().splitlines()]
    assert 2 <= len(starts) < 6, starts  # the first epoch's, then (at most) some, then the last
    assert int(starts[-1][1]) == 6, f"the last drawing saw {starts[-1][1]} of 6 epochs"
    nice = os.nice(0)  # gputrain's own: it inherits this process's
    assert int(starts[0][2]) == min(nice + 10, 19), f"a per-epoch drawing ran at nice {starts[0]}"
    assert int(starts[-1][2]) == nice, "the final drawing (training over) runs at full speed"
    read_png(out / "curves.png")
    h.assert_no_temp_files(out)


def test_sigint_during_a_drawing_exits_at_once_without_a_half_written_png(make_config, tmp_path):
    log, env = slow_plotter_env(tmp_path, 60)
    cfg = make_config(epochs=1000, train_limit=256, test_limit=64, curves=True)
    out = tmp_path / "run"
    proc = subprocess.Popen([str(h.binary_path()), "train", "--config", str(cfg), "--out",
                             str(out), "--quiet"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=h._default_sigint)
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and log.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no drawing started within 60 s"
            time.sleep(0.02)
        time.sleep(0.3)  # the helper is now inside its 60 s write
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, stderr = proc.communicate(timeout=15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert took <= 1.0, f"exit {took:.2f} s after SIGINT, expected within 1 s"
    h.assert_no_temp_files(out)
    assert not (out / "curves.png").exists(), "a drawing that never finished left curves.png"
    for line in log.read_text().splitlines():
        pid = int(line.split()[0])
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", \
            f"the plotter {pid} outlived the interrupted run"
