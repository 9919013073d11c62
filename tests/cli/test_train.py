"""gputrain train / eval end to end on a small generated IDX data set (CPU backend)."""

import gzip
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

import cli_helpers as h

EPOCHS = 3
LR = 0.05
METRIC_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "images_per_s",
               "seconds", "lr", "steps")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset):
    """One 3-epoch run of the small net, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("trained")
    out = root / "out"
    cfg = h.write_config(root / "config.yaml", dataset.dir, root / "unused-out", epochs=EPOCHS,
                         lr=LR, batch_size=32)
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet"], cwd=root)
    h.assert_ok(res)
    return SimpleNamespace(root=root, out=out, config=cfg, res=res)


def eval_json(config, weights, *extra, cwd=None):
    res = h.run_gputrain(["eval", "--config", config, "--weights", weights, "--json", *extra],
                         cwd=cwd)
    h.assert_ok(res)
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"eval --json stdout is not one JSON object: {e}" + h.describe(res))


def test_reaches_high_accuracy(trained):
    metrics = h.read_metrics(trained.out / "metrics.jsonl")
    assert len(metrics) == EPOCHS, f"metrics.jsonl has {len(metrics)} lines, expected {EPOCHS}"
    assert metrics[-1]["test_acc"] >= 0.9, f"final epoch: {metrics[-1]}"
    assert metrics[-1]["train_acc"] >= 0.85, f"final epoch: {metrics[-1]}"
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"], metrics
    assert metrics[-1]["test_loss"] < math.log(10) / 2, metrics


def test_metrics_lines(trained):
    metrics = h.read_metrics(trained.out / "metrics.jsonl")
    steps_per_epoch = math.ceil(h.TRAIN_COUNT / 32)
    for i, m in enumerate(metrics, 1):
        missing = [k for k in METRIC_KEYS if k not in m]
        assert not missing, f"metrics line {i} lacks {missing}: {m}"
        for k in METRIC_KEYS:
            assert h.is_finite_number(m[k]), f"metrics line {i}: {k} = {m[k]!r}"
        assert m["epoch"] == i, f"epochs should be numbered 1..{EPOCHS}: {m}"
        for k in ("train_acc", "test_acc"):
            assert 0.0 <= m[k] <= 1.0, m
        for k in ("train_loss", "test_loss"):
            assert m[k] >= 0.0, m
        assert m["images_per_s"] > 0 and m["seconds"] > 0, m
        assert m["lr"] == pytest.approx(LR, rel=1e-6), m
        # steps: per epoch or cumulative; the last batch holds the remainder (not dropped).
        assert m["steps"] in (steps_per_epoch, i * steps_per_epoch), \
            f"steps {m['steps']}, expected {steps_per_epoch} per epoch (2000 images, batch 32)"


def test_output_files(trained):
    names = {p.name for p in trained.out.iterdir()}
    for f in ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "config.yaml"):
        assert f in names, f"{f} missing from the output folder: {sorted(names)}"
    h.assert_no_temp_files(trained.out)


def test_model_safetensors_names_shapes_metadata(trained, dataset):
    st = h.read_safetensors(trained.out / "model.safetensors")
    assert st.shapes() == h.param_shapes(h.SMALL_LAYERS), st.shapes()
    for name, info in st.header.items():
        if name != "__metadata__":
            assert info["dtype"] == "F32", f"{name}: {info['dtype']}"
    assert st.metadata, "model.safetensors has no __metadata__"
    mean = json.loads(st.metadata["normalize_mean"])
    std = json.loads(st.metadata["normalize_std"])
    assert isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 1
    pixels = dataset.arrays["train_images"].astype(np.float64) / 255.0
    assert mean[0] == pytest.approx(pixels.mean(), rel=1e-4)
    assert std[0] == pytest.approx(pixels.std(), rel=1e-4)  # population std
    for name, t in st.tensors.items():
        assert np.all(np.isfinite(t)), name


def test_checkpoint_holds_final_weights_and_momentum(trained):
    model = h.read_safetensors(trained.out / "model.safetensors")
    ckpt = h.read_safetensors(trained.out / "checkpoint.safetensors")
    for name, raw in model.raw.items():
        assert name in ckpt.raw, f"checkpoint lacks {name}: {sorted(ckpt.names())}"
        assert ckpt.raw[name] == raw, f"checkpoint {name} differs from model.safetensors"
        mom = "momentum." + name
        assert mom in ckpt.tensors, f"checkpoint lacks {mom}: {sorted(ckpt.names())}"
        assert list(ckpt.tensors[mom].shape) == list(model.tensors[name].shape)
        assert np.any(ckpt.tensors[mom] != 0), f"{mom} is all zeros after training with momentum"
    assert ckpt.metadata, "checkpoint.safetensors has no __metadata__"


def test_model_matches_reference_forward(trained, dataset):
    """The saved weights, run through a NumPy forward pass with PyTorch's layouts, reproduce the
    final epoch's test accuracy and loss."""
    st = h.read_safetensors(trained.out / "model.safetensors")
    mean = json.loads(st.metadata["normalize_mean"])
    std = json.loads(st.metadata["normalize_std"])
    logits = h.forward(h.SMALL_LAYERS, st.tensors, dataset.arrays["test_images"], mean, std)
    acc, loss, _ = h.score(logits, dataset.arrays["test_labels"])
    last = h.read_metrics(trained.out / "metrics.jsonl")[-1]
    n = h.TEST_COUNT
    assert abs(round(acc * n) - round(last["test_acc"] * n)) <= 1, (acc, last)
    assert last["test_loss"] == pytest.approx(loss, rel=2e-3, abs=1e-4), (loss, last)


def test_eval_json_matches_metrics(trained, dataset):
    result = eval_json(trained.config, trained.out / "model.safetensors", cwd=trained.root)
    for k in ("samples", "loss", "accuracy", "per_class_accuracy", "confusion"):
        assert k in result, f"eval --json lacks {k}: {result}"
    last = h.read_metrics(trained.out / "metrics.jsonl")[-1]
    n = h.TEST_COUNT
    assert result["samples"] == n
    assert round(result["accuracy"] * n) == round(last["test_acc"] * n), (result["accuracy"], last)
    assert result["accuracy"] == pytest.approx(last["test_acc"], abs=1e-6)
    assert result["loss"] == pytest.approx(last["test_loss"], rel=1e-4, abs=1e-6)

    confusion = np.array(result["confusion"])
    assert confusion.shape == (h.CLASSES, h.CLASSES), confusion.shape
    assert confusion.sum() == n
    # rows are the true classes: their sums are the test set's label counts
    counts = np.bincount(dataset.arrays["test_labels"], minlength=h.CLASSES)
    assert list(confusion.sum(axis=1)) == list(counts), (confusion.sum(axis=1), counts)
    assert np.trace(confusion) == round(result["accuracy"] * n)
    per_class = np.array(result["per_class_accuracy"], dtype=np.float64)
    assert per_class.shape == (h.CLASSES,)
    np.testing.assert_allclose(per_class, np.diag(confusion) / counts, atol=1e-6)

    # the predictions agree with the NumPy forward pass (a near-tie may flip one sample)
    st = h.read_safetensors(trained.out / "model.safetensors")
    logits = h.forward(h.SMALL_LAYERS, st.tensors, dataset.arrays["test_images"],
                       json.loads(st.metadata["normalize_mean"]),
                       json.loads(st.metadata["normalize_std"]))
    _, _, pred = h.score(logits, dataset.arrays["test_labels"])
    ref = np.zeros((h.CLASSES, h.CLASSES), dtype=np.int64)
    np.add.at(ref, (dataset.arrays["test_labels"].astype(np.int64), pred), 1)
    assert np.abs(ref - confusion).sum() <= 2, f"confusion differs from the reference:\n{ref}\n{confusion}"


def test_eval_readable_summary(trained):
    acc = eval_json(trained.config, trained.out / "model.safetensors", cwd=trained.root)["accuracy"]
    res = h.run_gputrain(["eval", "--config", trained.config, "--weights",
                          trained.out / "model.safetensors"], cwd=trained.root)
    h.assert_ok(res)
    text = res.stdout + res.stderr
    assert "accuracy" in text.lower(), h.describe(res)
    nums = h.numbers_in(text)
    assert any(abs(x - acc) < 6e-4 or abs(x - 100 * acc) < 6e-2 for x in nums), \
        f"the summary should show the accuracy {acc}" + h.describe(res)
    with pytest.raises(json.JSONDecodeError):
        json.loads(res.stdout)


def test_eval_dump_logits(trained, dataset, tmp_path):
    dump = tmp_path / "logits.safetensors"
    result = eval_json(trained.config, trained.out / "model.safetensors", "--dump-logits", dump,
                       cwd=trained.root)
    st = h.read_safetensors(dump)
    assert st.header["logits"]["dtype"] == "F32" and st.header["labels"]["dtype"] == "F32"
    logits, labels = st.tensors["logits"], st.tensors["labels"]
    assert list(logits.shape) == [h.TEST_COUNT, h.CLASSES]
    assert list(labels.shape) == [h.TEST_COUNT]
    np.testing.assert_array_equal(labels, dataset.arrays["test_labels"].astype(np.float32))
    acc = float((logits.argmax(axis=1) == dataset.arrays["test_labels"]).mean())
    assert acc == pytest.approx(result["accuracy"], abs=1e-9)
    model = h.read_safetensors(trained.out / "model.safetensors")
    ref = h.forward(h.SMALL_LAYERS, model.tensors, dataset.arrays["test_images"],
                    json.loads(model.metadata["normalize_mean"]),
                    json.loads(model.metadata["normalize_std"]))
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-3)


def test_resolved_config_loads_back_and_reproduces(trained, tmp_path):
    resolved = trained.out / "config.yaml"
    out2 = tmp_path / "again"
    res = h.run_gputrain(["train", "--config", resolved, "--out", out2, "--quiet"], cwd=tmp_path)
    h.assert_ok(res)
    h.assert_bitwise_equal(trained.out / "model.safetensors", out2 / "model.safetensors")
    a = eval_json(resolved, trained.out / "model.safetensors", cwd=tmp_path)
    b = eval_json(trained.config, trained.out / "model.safetensors", cwd=tmp_path)
    assert (a["samples"], a["accuracy"], a["confusion"]) == (b["samples"], b["accuracy"], b["confusion"])
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_output_dir_from_config(make_config, tmp_path):
    out = tmp_path / "configured-out"
    cfg = make_config(out_dir=out, epochs=1)
    res = h.run_gputrain(["train", "--config", cfg, "--quiet"], cwd=tmp_path)
    h.assert_ok(res)
    for f in ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "config.yaml"):
        assert (out / f).is_file(), f"{f} not written to output.dir {out}"


def test_gzipped_idx_gives_the_same_run(make_config, dataset, tmp_path):
    gz_dir = h.write_dataset(tmp_path / "gz", dataset.arrays, gz=True)
    assert all(p.name.endswith(".gz") for p in gz_dir.iterdir())
    with gzip.open(gz_dir / (h.IDX_NAMES["train_images"] + ".gz")) as f:
        assert f.read(4) == b"\x00\x00\x08\x03"
    raw_cfg = make_config("raw.yaml", epochs=1)
    gz_cfg = make_config("gz.yaml", data_dir=gz_dir, epochs=1)
    for cfg, out in ((raw_cfg, "out-raw"), (gz_cfg, "out-gz")):
        h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / out, "--quiet"],
                                   cwd=tmp_path))
    h.assert_bitwise_equal(tmp_path / "out-raw/model.safetensors",
                           tmp_path / "out-gz/model.safetensors")


def test_limits_and_partial_last_batch(make_config, dataset, tmp_path):
    cfg = make_config(epochs=2, batch_size=64)
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                          "--set", "data.train_limit=500", "--set", "data.test_limit=123"],
                         cwd=tmp_path)
    h.assert_ok(res)
    metrics = h.read_metrics(out / "metrics.jsonl")
    assert len(metrics) == 2
    per_epoch = math.ceil(500 / 64)  # 8: seven full batches and one of 52
    assert metrics[0]["steps"] == per_epoch, metrics[0]
    assert metrics[1]["steps"] in (per_epoch, 2 * per_epoch), metrics[1]
    # auto normalization over the training images actually used
    st = h.read_safetensors(out / "model.safetensors")
    used = dataset.arrays["train_images"][:500].astype(np.float64) / 255.0
    assert json.loads(st.metadata["normalize_mean"])[0] == pytest.approx(used.mean(), rel=1e-4)
    assert json.loads(st.metadata["normalize_std"])[0] == pytest.approx(used.std(), rel=1e-4)
    result = eval_json(cfg, out / "model.safetensors", "--set", "data.test_limit=123", cwd=tmp_path)
    assert result["samples"] == 123
    assert np.array(result["confusion"]).sum() == 123
    counts = np.bincount(dataset.arrays["test_labels"][:123], minlength=h.CLASSES)
    assert list(np.array(result["confusion"]).sum(axis=1)) == list(counts)
    assert round(result["accuracy"] * 123) == round(metrics[-1]["test_acc"] * 123)


def test_explicit_normalization_via_set(make_config, tmp_path):
    cfg = make_config(epochs=1)
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                          "--set", "data.mean=[0.25]", "--set", "data.std=[0.5]"], cwd=tmp_path)
    h.assert_ok(res)
    st = h.read_safetensors(out / "model.safetensors")
    assert json.loads(st.metadata["normalize_mean"]) == pytest.approx([0.25], rel=1e-6)
    assert json.loads(st.metadata["normalize_std"]) == pytest.approx([0.5], rel=1e-6)


def test_set_overrides_a_layer(make_config, tmp_path):
    cfg = make_config(epochs=1)
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                          "--set", "model.layers.0.out_channels=8"], cwd=tmp_path)
    h.assert_ok(res)
    layers = [dict(l) for l in h.SMALL_LAYERS]
    layers[0]["out_channels"] = 8
    shapes = h.read_safetensors(out / "model.safetensors").shapes()
    assert shapes == h.param_shapes(layers), shapes
    assert shapes["fc1.weight"] == [10, 8 * 6 * 6]


ARCHITECTURES = {
    "conv-stride2-nopad": [
        {"type": "conv2d", "name": "conv1", "out_channels": 6, "kernel": 3, "stride": 2, "padding": 0},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "linear", "name": "fc1", "out_features": 10},
    ],
    "two-convs-pool3s2-two-linears": [
        {"type": "conv2d", "name": "c1", "out_channels": 3, "kernel": 5, "padding": 2},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel": 3, "stride": 2},
        {"type": "conv2d", "name": "c2", "out_channels": 5, "kernel": 2},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "linear", "name": "hidden", "out_features": 16},
        {"type": "relu"},
        {"type": "linear", "name": "head", "out_features": 10},
    ],
    "linear-only": [
        {"type": "flatten"},
        {"type": "linear", "name": "fc", "out_features": 10},
    ],
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_architectures_match_reference(arch, make_config, dataset, tmp_path):
    """Other layer settings: names/shapes as PyTorch's, and eval agrees with the NumPy forward."""
    layers = ARCHITECTURES[arch]
    cfg = make_config(layers=layers, epochs=3, lr=0.02)
    out = tmp_path / "out"
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet"], cwd=tmp_path))
    st = h.read_safetensors(out / "model.safetensors")
    assert st.shapes() == h.param_shapes(layers)
    result = eval_json(cfg, out / "model.safetensors", cwd=tmp_path)
    logits = h.forward(layers, st.tensors, dataset.arrays["test_images"],
                       json.loads(st.metadata["normalize_mean"]),
                       json.loads(st.metadata["normalize_std"]))
    acc, loss, _ = h.score(logits, dataset.arrays["test_labels"])
    assert abs(round(result["accuracy"] * h.TEST_COUNT) - round(acc * h.TEST_COUNT)) <= 1, \
        (result["accuracy"], acc)
    assert result["loss"] == pytest.approx(loss, rel=2e-3, abs=1e-4)
    assert acc > 0.5, f"{arch}: three epochs should learn the easy task (reference accuracy {acc})"


def test_default_initialization_is_pytorchs(make_config, tmp_path):
    """With a vanishing lr the model is its initialization: PyTorch's uniform ±1/sqrt(fan_in)."""
    cfg = make_config(epochs=1, lr=1e-30, momentum=0.0)
    outs = []
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}"
        h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet",
                                    "--set", f"train.seed={seed}"], cwd=tmp_path))
        outs.append(out / "model.safetensors")
    fan_in = {"conv1": 1 * 3 * 3, "fc1": 4 * 6 * 6}
    st = h.read_safetensors(outs[0])
    for name, t in st.tensors.items():
        bound = 1.0 / math.sqrt(fan_in[name.split(".")[0]])
        assert np.all(np.abs(t) <= bound * (1 + 1e-5)), f"{name}: |w| beyond 1/sqrt(fan_in)={bound}"
        assert np.abs(t).max() > 0.5 * bound, f"{name}: values do not span the init range"
        assert len(np.unique(t)) > 0.9 * t.size, f"{name}: values are not random"
    assert h.any_tensor_differs(outs[0], outs[1]), "different seeds gave the same initialization"


def test_non_finite_loss_exits_1_naming_the_step(make_config, tmp_path):
    cfg = make_config(epochs=2, lr=1e30, momentum=0.0)
    out = tmp_path / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet"], cwd=tmp_path)
    line = h.error_line(res, 1)
    assert "step" in line.lower() and any(ch.isdigit() for ch in line), \
        "the message should name the step" + h.describe(res)
    model = out / "model.safetensors"
    if model.exists():  # whatever it wrote must not be the diverged weights
        for name, t in h.read_safetensors(model).tensors.items():
            assert np.all(np.isfinite(t)), f"{model}: {name} holds non-finite values"


def test_relative_output_folder_with_spaces(make_config, tmp_path):
    """--out relative to the working directory, a name with spaces, all cores (threads 0)."""
    cfg = make_config(epochs=1, threads=0)
    res = h.run_gputrain(["train", "--config", cfg, "--out", "runs/my run", "--quiet"],
                         cwd=tmp_path)
    h.assert_ok(res)
    out = tmp_path / "runs" / "my run"
    for f in ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "config.yaml"):
        assert (out / f).is_file(), f"{f} not in {out}"
    assert h.read_metrics(out / "metrics.jsonl")[-1]["test_acc"] >= 0.5
