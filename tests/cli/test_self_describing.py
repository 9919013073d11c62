"""Weights that describe themselves: class names and the resolved config in __metadata__, so that
eval (and predict) need no --config."""

import json
import shutil

import cli_helpers as h

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def train_run(tmp_path, data_dir, out, **kw):
    cfg = h.write_config(tmp_path / f"{out.name}.yaml", data_dir, out, epochs=1, **kw)
    h.assert_ok(h.run_gputrain(["train", "--config", cfg]))
    return cfg


def test_weights_record_classes_and_config_and_eval_needs_no_config(tmp_path, dataset):
    out = tmp_path / "run"
    cfg = train_run(tmp_path, dataset.dir, out)
    for name in ("model.safetensors", "model_best.safetensors"):
        meta = h.read_safetensors(out / name).metadata
        assert json.loads(meta["classes"]) == [str(i) for i in range(10)], meta
        assert "model:" in meta["config"] and str(dataset.dir) in meta["config"]
    final_acc = h.read_metrics(out / "metrics.jsonl")[-1]["test_acc"]

    res = h.run_gputrain(["eval", "--weights", out / "model.safetensors", "--json"])
    h.assert_ok(res)
    report = json.loads(res.stdout)
    assert abs(report["accuracy"] - final_acc) < 1e-12
    assert report["classes"] == [str(i) for i in range(10)]
    with_config = h.run_gputrain(["eval", "--config", cfg, "--weights", out / "model.safetensors",
                                  "--json"])
    h.assert_ok(with_config)
    assert json.loads(with_config.stdout)["accuracy"] == report["accuracy"]

    # --data: another folder with the same files scores the same.
    other = tmp_path / "elsewhere"
    shutil.copytree(dataset.dir, other)
    res = h.run_gputrain(["eval", "--weights", out / "model.safetensors", "--data", other])
    h.assert_ok(res)
    assert str(other) in res.stdout and f"{final_acc:.4f}" in res.stdout, h.describe(res)


def test_fashion_mnist_folder_gets_its_names_printed_by_eval(tmp_path, dataset):
    data = tmp_path / "fashion-mnist-like"
    shutil.copytree(dataset.dir, data)
    out = tmp_path / "run"
    train_run(tmp_path, data, out)
    meta = h.read_safetensors(out / "model.safetensors").metadata
    assert json.loads(meta["classes"]) == FASHION
    res = h.run_gputrain(["eval", "--weights", out / "model.safetensors"])
    h.assert_ok(res)
    for name in FASHION:
        assert name in res.stdout, h.describe(res)


def test_eval_without_config_of_weights_that_record_none_is_one_clear_error(tmp_path, dataset):
    out = tmp_path / "run"
    train_run(tmp_path, dataset.dir, out)
    st = h.read_safetensors(out / "model.safetensors")
    bare = tmp_path / "bare.safetensors"
    h.write_safetensors(bare, st.tensors, metadata={"format": "pt"})
    h.assert_user_error(h.run_gputrain(["eval", "--weights", bare]),
                        must_contain=[str(bare), "--config"])
