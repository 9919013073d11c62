"""data.format: cifar10 on a small generated set in the CIFAR-10 binary layout (3 channels)."""

import json

import numpy as np
import pytest

import cli_helpers as h

PER_BATCH, TEST = 60, 100
LAYERS = [
    {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 4, "stride": 4, "padding": 0},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "name": "fc1", "out_features": 10},
]


def make_cifar(seed=11):
    """Class c: a per-class colour and a per-class random 8×8 block pattern (upscaled), noise."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(10, 3))
    patterns = np.kron(rng.random((10, 8, 8)) < 0.4, np.ones((4, 4)))  # 10×32×32

    def draw(n):
        labels = rng.integers(0, 10, size=n)
        img = colours[labels][:, :, None, None] * (0.6 + 0.4 * patterns[labels][:, None])
        img = img + rng.normal(0, 20, size=img.shape)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels.astype(np.uint8)

    return [draw(PER_BATCH) for _ in range(5)], draw(TEST)


def records(images, labels):
    return np.concatenate([labels[:, None], images.reshape(len(labels), -1)], axis=1).tobytes()


@pytest.fixture
def cifar(tmp_path):
    batches, test = make_cifar()
    d = tmp_path / "cifar"
    d.mkdir()
    for i, (x, y) in enumerate(batches, 1):
        (d / f"data_batch_{i}.bin").write_bytes(records(x, y))
    (d / "test_batch.bin").write_bytes(records(*test))
    train_x = np.concatenate([b[0] for b in batches])
    return d, train_x, test


def cifar_config(tmp_path, data_dir, **kw):
    text = h.config_text(data_dir, tmp_path / "unused", layers=LAYERS, input_shape=(3, 32, 32),
                         batch_size=20, **kw)
    text = text.replace("format: idx", "format: cifar10")
    path = tmp_path / "cifar.yaml"
    path.write_text(text)
    return path


def test_cifar10_format_trains_and_evaluates(cifar, tmp_path):
    d, train_x, (test_x, test_y) = cifar
    cfg = cifar_config(tmp_path, d, epochs=4, lr=0.02)
    out = tmp_path / "out"
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet"], cwd=tmp_path))
    st = h.read_safetensors(out / "model.safetensors")
    assert st.shapes() == h.param_shapes(LAYERS, (3, 32, 32))
    mean = json.loads(st.metadata["normalize_mean"])
    std = json.loads(st.metadata["normalize_std"])
    pixels = train_x.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), rtol=1e-4)
    metrics = h.read_metrics(out / "metrics.jsonl")
    assert len(metrics) == 4
    assert metrics[0]["steps"] == 5 * PER_BATCH // 20
    assert metrics[-1]["test_acc"] >= 0.8, metrics[-1]

    res = h.run_gputrain(["eval", "--config", cfg, "--weights", out / "model.safetensors",
                          "--json"], cwd=tmp_path)
    h.assert_ok(res)
    result = json.loads(res.stdout)
    assert result["samples"] == TEST
    logits = h.forward(LAYERS, st.tensors, test_x.reshape(TEST, 3, 32, 32), mean, std)
    acc, loss, _ = h.score(logits, test_y)
    assert abs(round(result["accuracy"] * TEST) - round(acc * TEST)) <= 1
    assert result["loss"] == pytest.approx(loss, rel=2e-3, abs=1e-4)
    assert round(result["accuracy"] * TEST) == round(metrics[-1]["test_acc"] * TEST)


@pytest.mark.parametrize("case", ["truncated-batch", "missing-batch", "label-10"])
def test_cifar10_data_errors(case, cifar, tmp_path):
    d, _, _ = cifar
    if case == "truncated-batch":
        name = "data_batch_3.bin"
        (d / name).write_bytes((d / name).read_bytes()[:-5])
    elif case == "missing-batch":
        name = "data_batch_5.bin"
        (d / name).unlink()
    else:
        name = "test_batch.bin"
        blob = bytearray((d / name).read_bytes())
        blob[3073 * 7] = 10
        (d / name).write_bytes(bytes(blob))
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cifar_config(tmp_path, d, epochs=1), "--out", out,
                          "--quiet"], cwd=tmp_path)
    h.assert_user_error(res, must_contain=[name])
    h.assert_no_outputs(out)
