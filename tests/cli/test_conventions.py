"""CLI conventions: `gputrain` in usage, FILE/DIR type names, examples and exit codes in each
subcommand's help, `gputrain help [subcommand]`, --set suggested for flags that name config keys,
plain progress lines with images/s and ETA, a progress bar that fits the terminal, the Ctrl-C
message on its own line, `info --json` and `--device cuda:N`."""

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

import cli_helpers as h

SUBCOMMANDS = ("train", "eval", "info")


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help_has_usage_example_and_exit_codes(sub, gputrain_bin):
    for args in ([sub, "--help"], ["help", sub]):
        res = h.run_gputrain(args)
        h.assert_ok(res)
        text = res.stdout
        assert f"Usage: gputrain {sub} " in text, h.describe(res)
        assert str(h.binary_path()) not in text, "usage should name gputrain, not the build path"
        assert "TEXT" not in text, "options should name their type (FILE, DIR), not TEXT"
        example = text.index("Example:")
        codes = text.index("Exit codes:")
        assert example < codes, h.describe(res)
        assert f"gputrain {sub}" in text[example:codes]
        assert re.search(r"^\s+2\s+bad usage", text[codes:], re.MULTILINE), h.describe(res)
    if sub == "train":
        assert re.search(r"--config FILE", text) and re.search(r"--out DIR", text), text
        assert "130" in text and "143" in text and "129" in text, text


def test_help_without_subcommand_and_main_usage(gputrain_bin):
    for args in (["help"], ["--help"]):
        res = h.run_gputrain(args)
        h.assert_ok(res)
        assert "Usage: gputrain [OPTIONS] SUBCOMMAND" in res.stdout, h.describe(res)
        for sub in SUBCOMMANDS:
            assert sub in res.stdout


def test_help_of_an_unknown_subcommand_is_exit_2(gputrain_bin):
    res = h.run_gputrain(["help", "fly"])
    h.assert_user_error(res, must_contain=["fly", "train"])


@pytest.mark.parametrize("args,suggestion", [
    (["--epochs", "1"], "--set train.epochs=1"),
    (["--lr=0.5"], "--set optimizer.lr=0.5"),
    (["--batch-size", "8"], "--set train.batch_size=8"),
    (["--train.seed", "3"], "--set train.seed=3"),
])
def test_a_flag_that_names_a_config_key_suggests_set(args, suggestion, gputrain_bin, tmp_path):
    res = h.run_gputrain(["train", "--config", "x.yaml", *args], cwd=tmp_path)
    line = h.assert_user_error(res, must_contain=[suggestion, args[0].split("=")[0]])
    assert "not expected" not in line, line


def test_an_unrelated_unknown_flag_keeps_the_plain_message(gputrain_bin, tmp_path):
    res = h.run_gputrain(["train", "--config", "x.yaml", "--frobnicate"], cwd=tmp_path)
    line = h.assert_user_error(res, must_contain=["--frobnicate"])
    assert "--set" not in line


def test_plain_progress_lines_carry_speed_and_eta(make_config, tmp_path):
    res = h.run_gputrain(["train", "--config", make_config(epochs=1, log_interval=5), "--out",
                          tmp_path / "out"], cwd=tmp_path)
    h.assert_ok(res)
    steps = [line for line in res.stdout.splitlines() if re.search(r"step \d+/\d+", line)]
    assert len(steps) >= 3, h.describe(res)
    # The first log line of an epoch may have no rate yet ("--"); later ones must.
    for line in steps[1:]:
        assert re.search(r"\b\d+ images/s\b", line), line
        assert re.search(r"\bETA \d+:\d\d\b", line), line


def test_info_json_lists_devices(gputrain_bin):
    res = h.run_gputrain(["info", "--json"])
    h.assert_ok(res)
    devices = json.loads(res.stdout)
    assert isinstance(devices, list), res.stdout
    for i, d in enumerate(devices):
        assert d["index"] == i and d["name"] and d["memory_bytes"] > 0, d
        assert re.fullmatch(r"\d+\.\d+", d["compute_capability"]), d
    if not os.path.exists("/dev/nvidia0"):
        assert devices == [], res.stdout


def test_device_cuda_n_beyond_the_visible_gpus_is_exit_2(make_config, tmp_path):
    devices = json.loads(h.run_gputrain(["info", "--json"]).stdout)
    n = len(devices) + 2
    out = tmp_path / "out"
    for args in (["--device", f"cuda:{n}"], ["--set", f"device=cuda:{n}"]):
        res = h.run_gputrain(["train", "--config", make_config(epochs=1), "--out", out, *args],
                             cwd=tmp_path)
        h.assert_user_error(res, must_contain=[f"cuda:{n}"])
        h.assert_no_outputs(out)


def test_device_spelling_is_checked(make_config, tmp_path):
    for bad in ("cuda:", "cuda:x", "gpu:0"):
        res = h.run_gputrain(["train", "--config", make_config(epochs=1), "--device", bad],
                             cwd=tmp_path)
        h.assert_user_error(res, must_contain=["cuda:N", bad])


def run_on_terminal(args, cwd, columns, interrupt_after_s=None, timeout=60):
    """Runs gputrain on a pseudo-terminal `columns` wide; returns (exit code, what it showed).
    With `interrupt_after_s`, sends SIGINT once that long has passed and a bar is showing."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([str(h.binary_path()), *[str(a) for a in args]], cwd=cwd,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            preexec_fn=h._default_sigint)
    os.close(slave)
    shown = b""
    start = time.monotonic()
    sent = False
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
                if not chunk:
                    break
                shown += chunk
            if (interrupt_after_s is not None and not sent and
                    time.monotonic() - start > interrupt_after_s and b"images/s" in shown):
                proc.send_signal(signal.SIGINT)
                sent = True
            if proc.poll() is not None and not ready:
                break
            assert time.monotonic() - start < timeout, "no exit in time"
        rc = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return rc, shown.decode("utf-8", "replace")


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_progress_bar_fits_the_terminal(columns, make_config, tmp_path):
    cfg = make_config(epochs=1, batch_size=8)
    rc, shown = run_on_terminal(["train", "--config", cfg, "--out", tmp_path / "out"], tmp_path,
                                columns)
    assert rc == 0, shown[-2000:]
    bars = [seg for seg in re.split(r"[\r\n]", shown) if "ETA" in seg and "[" in seg]
    assert bars, "no progress bar drawn:\n" + shown[-2000:]
    for seg in bars:
        assert len(seg.rstrip()) < columns, f"a bar of {len(seg.rstrip())} columns on a " \
                                            f"{columns}-column terminal: {seg!r}"


def test_ctrl_c_message_starts_on_its_own_line(make_config, tmp_path):
    # Epochs of seconds (a wide convolution, small batches): the signal lands while a bar shows.
    wide = [{"type": "conv2d", "name": "conv1", "out_channels": 64, "kernel": 3, "padding": 1},
            {"type": "relu"},
            {"type": "conv2d", "name": "conv2", "out_channels": 64, "kernel": 3, "padding": 1},
            {"type": "relu"}, {"type": "flatten"},
            {"type": "linear", "name": "fc", "out_features": 10}]
    cfg = make_config(epochs=1000, batch_size=2, layers=wide)
    rc, shown = run_on_terminal(["train", "--config", cfg, "--out", tmp_path / "out"], tmp_path,
                                100, interrupt_after_s=1.0)
    assert rc == 130, shown[-2000:]
    at = shown.index("gputrain: ")
    # What the terminal shows on the message's line before it: nothing, or a bar that was wiped
    # (overwritten with spaces, cursor back at column 0), never a bar the message would join.
    line_start = shown[:at].rsplit("\n", 1)[-1]
    segments = [seg for seg in line_start.split("\r") if seg]
    assert not line_start or (line_start.endswith("\r") and not segments[-1].strip()), \
        f"the message should start a line; shown before it: {shown[max(0, at - 200):at]!r}"
