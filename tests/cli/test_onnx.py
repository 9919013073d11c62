"""gputrain export --onnx, checked by onnxruntime against gputrain eval --dump-logits.

onnxruntime comes from PyPI into the virtual environment `.ci/run` creates (.venv-test); the test
finds it through GPUTRAIN_ONNX_PYTHON (that environment's python) or in this interpreter. Outside
CI it is skipped, with the reason, when neither has it; under CI (GPUTRAIN_REQUIRE_ONNXRUNTIME=1)
its absence is a failure."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cli_helpers as h

N_IMAGES = 256

# Every layer kind, with strides, padding, a pool whose stride differs from its kernel, and two
# linear layers.
LAYERS = [
    {"type": "conv2d", "name": "conv1", "out_channels": 6, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2, "stride": 2},
    {"type": "conv2d", "name": "conv2", "out_channels": 8, "kernel": 3, "stride": 2, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2, "stride": 1},
    {"type": "flatten"},
    {"type": "linear", "name": "fc1", "out_features": 16},
    {"type": "relu"},
    {"type": "linear", "name": "fc2", "out_features": 10},
]

# The issue-11 layers: batch norm (exported with its running statistics), average pooling with
# overlapping windows, global average pooling, dropout (the identity at inference).
BN_LAYERS = [
    {"type": "conv2d", "name": "conv1", "out_channels": 6, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "batchnorm2d", "name": "bn1"},
    {"type": "relu"},
    {"type": "avgpool2d", "kernel": 3, "stride": 2},
    {"type": "conv2d", "name": "conv2", "out_channels": 8, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "batchnorm2d", "name": "bn2", "momentum": 0.3, "eps": 1e-3},
    {"type": "relu"},
    {"type": "global_avgpool"},
    {"type": "flatten"},
    {"type": "dropout", "p": 0.25},
    {"type": "linear", "name": "fc1", "out_features": 10},
]

RUNNER = """
import sys, numpy as np, onnxruntime as ort
model, inp, out = sys.argv[1:4]
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
assert [i.name for i in s.get_inputs()] == ["images"], s.get_inputs()
assert [o.name for o in s.get_outputs()] == ["logits"], s.get_outputs()
np.save(out, s.run(["logits"], {"images": np.load(inp)})[0])
"""


def onnxruntime_python():
    env = os.environ.get("GPUTRAIN_ONNX_PYTHON")
    for python in ([env] if env else []) + [sys.executable]:
        ok = subprocess.run([python, "-c", "import onnxruntime"], capture_output=True)
        if ok.returncode == 0:
            return python
    if os.environ.get("GPUTRAIN_REQUIRE_ONNXRUNTIME") == "1":
        pytest.fail("onnxruntime is required here (GPUTRAIN_REQUIRE_ONNXRUNTIME=1) but neither "
                    f"GPUTRAIN_ONNX_PYTHON={env!r} nor {sys.executable} imports it")
    pytest.skip("onnxruntime not installed: .ci/run creates .venv-test with it; or set "
                "GPUTRAIN_ONNX_PYTHON to a python that has it")


def run_onnx(python, model, images, tmp_path):
    inp, out = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(inp, images)
    res = subprocess.run([python, "-c", RUNNER, str(model), str(inp), str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return np.load(out)


@pytest.mark.parametrize("layers", [LAYERS, BN_LAYERS], ids=["conv-pool-linear", "batchnorm-avgpool-dropout"])
def test_onnx_logits_match_eval_on_256_images(tmp_path, dataset, layers):
    python = onnxruntime_python()
    out = tmp_path / "run"
    cfg = h.write_config(tmp_path / "c.yaml", dataset.dir, out, layers=layers, epochs=1,
                         test_limit=N_IMAGES)
    h.assert_ok(h.run_gputrain(["train", "--config", cfg]))
    weights = out / "model.safetensors"
    dump = tmp_path / "logits.safetensors"
    h.assert_ok(h.run_gputrain(["eval", "--weights", weights, "--dump-logits", dump]))
    expected = h.read_safetensors(dump).tensors["logits"]
    assert expected.shape == (N_IMAGES, 10)

    pixels = dataset.arrays["test_images"][:N_IMAGES].reshape(N_IMAGES, 1, h.SIDE, h.SIDE)
    meta = h.read_safetensors(weights).metadata
    mean = np.array(json.loads(meta["normalize_mean"]), np.float32).reshape(1, -1, 1, 1)
    std = np.array(json.loads(meta["normalize_std"]), np.float32).reshape(1, -1, 1, 1)
    normalized = ((pixels.astype(np.float32) / np.float32(255)) - mean) / std

    model = tmp_path / "model.onnx"
    res = h.run_gputrain(["export", "--weights", weights, "--onnx", model])
    h.assert_ok(res)
    assert "opset 13" in res.stdout
    got = run_onnx(python, model, normalized.astype(np.float32), tmp_path)
    diff = float(np.abs(got - expected).max())
    print(f"ONNX (float input) vs eval: max abs diff {diff:.3g} over {N_IMAGES} images")
    assert diff <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()

    raw = tmp_path / "raw.onnx"
    h.assert_ok(h.run_gputrain(["export", "--weights", weights, "--onnx", raw, "--raw-input"]))
    got_raw = run_onnx(python, raw, pixels.astype(np.uint8), tmp_path)
    diff_raw = float(np.abs(got_raw - expected).max())
    print(f"ONNX (uint8 input) vs eval: max abs diff {diff_raw:.3g}")
    assert diff_raw <= 1e-4


def test_export_errors_are_one_line(tmp_path, dataset):
    missing = tmp_path / "absent.safetensors"
    h.assert_user_error(h.run_gputrain(["export", "--weights", missing, "--onnx",
                                        tmp_path / "m.onnx"]), must_contain=[str(missing)])
    assert not (tmp_path / "m.onnx").exists()
