"""output.tensorboard: events.out.tfevents.* in the run folder, read back by a reader written here
from the format's description (TFRecord framing with masked CRC-32C; Event and Summary protobuf
messages decoded from the wire format), and by TensorBoard's own reader where it is installed
(.ci/run installs it).
A gputrain built without protobuf rejects the key with one config error instead."""

import math
import os
import shutil
import struct
import subprocess
import sys

import pytest

import cli_helpers as h

BUILT_WITH_PROTOBUF = shutil.which("protoc") is not None  # what CMake looked for when it built


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_the_reader_s_crc32c_is_castagnoli():
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C


def read_records(path):
    data = path.read_bytes()
    pos, records = 0, []
    while pos < len(data):
        assert pos + 12 <= len(data), f"{path}: a torn record header at byte {pos}"
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert length_crc == masked_crc32c(header), f"{path}: bad length CRC at byte {pos}"
        body = data[pos + 12:pos + 12 + length]
        assert len(body) == length, f"{path}: a torn record at byte {pos}"
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert body_crc == masked_crc32c(body), f"{path}: bad data CRC at byte {pos}"
        records.append(body)
        pos += 16 + length
    return records


def varint(buf, pos):
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def fields(buf):
    """(field number, value) of a protobuf message: ints, bytes, or raw 4/8-byte strings."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        yield number, value


def parse_event(buf):
    """tensorflow.Event: wall_time (1), step (2), file_version (3), summary (5) of Values with a
    tag (1) and simple_value (2)."""
    event = {"step": 0, "scalars": {}}
    for number, value in fields(buf):
        if number == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2:
            event["step"] = value
        elif number == 3:
            event["file_version"] = value.decode()
        elif number == 5:
            for n, v in fields(value):
                assert n == 1
                tag = val = None
                for vn, vv in fields(v):
                    if vn == 1:
                        tag = vv.decode()
                    elif vn == 2:
                        val = struct.unpack("<f", vv)[0]
                event["scalars"][tag] = val
    return event


def event_files(out):
    return sorted(p for p in out.iterdir() if p.name.startswith("events.out.tfevents."))


@pytest.mark.skipif(not BUILT_WITH_PROTOBUF, reason="built without protobuf (protoc absent)")
def test_tensorboard_events_hold_every_log_interval_and_epoch(make_config, tmp_path):
    # 2000 images in batches of 32: 63 steps per epoch, a log line every 20 steps.
    cfg = make_config(epochs=2, log_interval=20)
    out = tmp_path / "run"
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                                "--set", "output.tensorboard=true"]))
    files = event_files(out)
    assert len(files) == 1, files
    events = [parse_event(r) for r in read_records(files[0])]
    assert events[0].get("file_version") == "brain.Event:2", events[0]
    metrics = h.read_metrics(out / "metrics.jsonl")
    steps_per_epoch = metrics[0]["steps"]
    logs = [e for e in events[1:] if "train/loss" in e["scalars"]]
    epochs = [e for e in events[1:] if "epoch/test_acc" in e["scalars"]]
    assert len(logs) + len(epochs) == len(events) - 1
    want_log_steps = [epoch * steps_per_epoch + s for epoch in range(2)
                      for s in range(20, steps_per_epoch, 20)]
    assert [e["step"] for e in logs] == want_log_steps
    for e in logs:
        s = e["scalars"]
        assert set(s) == {"train/loss", "train/accuracy", "train/lr"}
        assert math.isfinite(s["train/loss"]) and 0 <= s["train/accuracy"] <= 1
        assert s["train/lr"] == pytest.approx(0.05, rel=1e-6)
    assert [e["step"] for e in epochs] == [1, 2]
    for e, m in zip(epochs, metrics):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert e["scalars"][f"epoch/{key}"] == pytest.approx(m[key], rel=1e-6), key
    walls = [e["wall_time"] for e in events]
    assert walls == sorted(walls) and abs(walls[-1] - walls[0]) < 600

    # TensorBoard's own reader, where it is installed (.ci/run puts it into .venv-test, whose
    # python GPUTRAIN_ONNX_PYTHON names, and requires it with GPUTRAIN_REQUIRE_TENSORBOARD=1).
    python = os.environ.get("GPUTRAIN_ONNX_PYTHON") or sys.executable
    probe = subprocess.run([python, "-c", "import tensorboard"], capture_output=True)
    assert probe.returncode == 0 or os.environ.get("GPUTRAIN_REQUIRE_TENSORBOARD") != "1", \
        f"tensorboard is required here (GPUTRAIN_REQUIRE_TENSORBOARD=1) but {python} lacks it"
    if probe.returncode == 0:
        code = ("import sys\nfrom tensorboard.backend.event_processing.event_accumulator "
                "import EventAccumulator\na = EventAccumulator(sys.argv[1]); a.Reload()\n"
                "print([(x.step, x.value) for x in a.Scalars('epoch/test_acc')])")
        res = subprocess.run([python, "-c", code, str(out)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        got = eval(res.stdout)  # a list of (step, value) tuples printed above
        assert [s for s, _ in got] == [1, 2]
        assert [v for _, v in got] == pytest.approx([m["test_acc"] for m in metrics], rel=1e-6)

    # A resumed run adds a file of its own; --overwrite removes the earlier run's files.
    h.assert_ok(h.run_gputrain(["train", "--resume", out / "checkpoint.safetensors", "--quiet",
                                "--set", "train.epochs=3"]))
    assert len(event_files(out)) == 2
    resumed = [parse_event(r) for r in read_records(event_files(out)[-1])]
    assert [e["step"] for e in resumed if "epoch/test_acc" in e["scalars"]] == [3]
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                                "--overwrite", "--set", "train.epochs=1"]))
    assert event_files(out) == [], "output.tensorboard off: the earlier run's events removed"


@pytest.mark.skipif(BUILT_WITH_PROTOBUF, reason="built with protobuf")
def test_tensorboard_without_protobuf_is_a_config_error(make_config, tmp_path):
    cfg = make_config(epochs=1)
    out = tmp_path / "run"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out,
                          "--set", "output.tensorboard=true"])
    h.assert_user_error(res, must_contain=["output.tensorboard", "protobuf"])
    h.assert_no_outputs(out)
