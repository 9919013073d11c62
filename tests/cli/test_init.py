"""--init WEIGHTS and eval --weights of a weights file written here (PyTorch state_dict layout)."""

import json

import numpy as np
import pytest

import cli_helpers as h

MEAN, STD = 0.5, 0.25


def handmade_weights(templates, seed=3):
    """Weights of the small net that classify by template matching: conv1 channel 0 passes the
    pixel through, fc1 correlates channel 0's pooled map with each class's pooled template; the
    other channels get small random weights. Layouts: conv O×I×k×k, linear out×in, flatten C,H,W."""
    rng = np.random.default_rng(seed)
    conv_w = rng.uniform(-0.3, 0.3, size=(4, 1, 3, 3)).astype(np.float32)
    conv_w[0] = 0.0
    conv_w[0, 0, 1, 1] = 1.0
    conv_b = rng.uniform(-0.1, 0.1, size=4).astype(np.float32)
    conv_b[0] = 0.0
    pooled = templates.reshape(10, 6, 2, 6, 2).max(axis=(2, 4))  # 10×6×6
    fc_w = rng.uniform(-0.01, 0.01, size=(10, 4, 6, 6))
    fc_w[:, 0] = pooled - pooled.mean(axis=(1, 2), keepdims=True)
    fc_w = fc_w.reshape(10, 144).astype(np.float32)
    fc_b = np.zeros(10, dtype=np.float32)
    return {"conv1.weight": conv_w, "conv1.bias": conv_b, "fc1.weight": fc_w, "fc1.bias": fc_b}


@pytest.fixture
def init_file(tmp_path, dataset):
    weights = handmade_weights(dataset.arrays["templates"])
    path = tmp_path / "init.safetensors"
    h.write_safetensors(path, weights, metadata={"normalize_mean": json.dumps([MEAN]),
                                                 "normalize_std": json.dumps([STD]),
                                                 "format": "pt"})
    return path, weights


@pytest.fixture
def cfg(make_config):
    return make_config(epochs=1, mean=[MEAN], std=[STD])


def test_eval_of_given_weights_is_determinate(cfg, init_file, dataset, tmp_path):
    path, weights = init_file
    res = h.run_gputrain(["eval", "--config", cfg, "--weights", path, "--json"], cwd=tmp_path)
    h.assert_ok(res)
    result = json.loads(res.stdout)
    logits = h.forward(h.SMALL_LAYERS, weights, dataset.arrays["test_images"], [MEAN], [STD])
    acc, loss, pred = h.score(logits, dataset.arrays["test_labels"])
    assert acc > 0.3, f"the hand-made weights should classify (reference accuracy {acc})"
    assert result["samples"] == h.TEST_COUNT
    assert abs(round(result["accuracy"] * h.TEST_COUNT) - round(acc * h.TEST_COUNT)) <= 1, \
        (result["accuracy"], acc)
    assert result["loss"] == pytest.approx(loss, rel=1e-3)
    ref = np.zeros((h.CLASSES, h.CLASSES), dtype=np.int64)
    np.add.at(ref, (dataset.arrays["test_labels"].astype(np.int64), pred), 1)
    assert np.abs(np.array(result["confusion"]) - ref).sum() <= 2, \
        f"confusion differs from the reference:\n{ref}\n{np.array(result['confusion'])}"


def test_init_with_vanishing_lr_keeps_the_weights(cfg, init_file, tmp_path):
    path, weights = init_file
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet", "--init", path,
                          "--set", "train.epochs=1", "--set", "optimizer.lr=1e-30"], cwd=tmp_path)
    h.assert_ok(res)
    st = h.read_safetensors(out / "model.safetensors")
    assert st.names() == set(weights)
    for name, w in weights.items():
        np.testing.assert_allclose(st.tensors[name], w, rtol=1e-6, atol=1e-7, err_msg=name)
    assert json.loads(st.metadata["normalize_mean"]) == pytest.approx([MEAN])
    assert json.loads(st.metadata["normalize_std"]) == pytest.approx([STD])
    # and the run's test accuracy is the weights' own
    res = h.run_gputrain(["eval", "--config", cfg, "--weights", path, "--json"], cwd=tmp_path)
    h.assert_ok(res)
    last = h.read_metrics(out / "metrics.jsonl")[-1]
    assert round(last["test_acc"] * h.TEST_COUNT) == \
        round(json.loads(res.stdout)["accuracy"] * h.TEST_COUNT)


def test_init_then_training_learns(cfg, init_file, tmp_path):
    path, weights = init_file
    with_init, without = tmp_path / "with-init", tmp_path / "without"
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", with_init, "--quiet",
                                "--init", path, "--set", "train.epochs=3"], cwd=tmp_path))
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", without, "--quiet",
                                "--set", "train.epochs=3"], cwd=tmp_path))
    st = h.read_safetensors(with_init / "model.safetensors")
    assert any(not np.array_equal(st.tensors[n], w) for n, w in weights.items()), \
        "training from --init did not change the weights"
    assert h.any_tensor_differs(with_init / "model.safetensors", without / "model.safetensors"), \
        "--init had no effect: same weights as the randomly initialized run"
    assert h.read_metrics(with_init / "metrics.jsonl")[-1]["test_acc"] >= 0.9


def _broken_init(tmp_path, dataset, mutate):
    weights = handmade_weights(dataset.arrays["templates"])
    mutate(weights)
    path = tmp_path / "broken-init.safetensors"
    h.write_safetensors(path, weights)
    return path


@pytest.mark.parametrize("case", ["wrong-shape", "missing-tensor", "huge-header"])
def test_init_with_wrong_weights_is_exit_2(case, cfg, dataset, tmp_path):
    if case == "huge-header":
        path = tmp_path / "huge-header.safetensors"
        h.write_safetensors(path, handmade_weights(dataset.arrays["templates"]),
                            header_override=1 << 60)
        names = []
    elif case == "wrong-shape":
        path = _broken_init(tmp_path, dataset, lambda w: w.update(
            {"conv1.weight": np.zeros((4, 1, 5, 5), dtype=np.float32)}))
        names = ["conv1.weight"]
    else:
        path = _broken_init(tmp_path, dataset, lambda w: w.pop("fc1.bias"))
        names = ["fc1.bias"]
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet", "--init", path],
                         cwd=tmp_path)
    h.assert_user_error(res, any_of=[path.name] + names)
    h.assert_no_outputs(out)


def test_init_missing_file_is_exit_2(cfg, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "no-such-init.safetensors"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet", "--init", missing],
                         cwd=tmp_path)
    h.assert_user_error(res, must_contain=[missing.name])
    h.assert_no_outputs(out)
