"""Runs users can trust (issue 8): no silent overwrite, resume from the checkpoint alone, metrics
appended line by line, best weights kept, `~/` paths, no folder for a run that fails its checks."""

import json
import os

import pytest

import cli_helpers as h


def train(args, cwd, env=None):
    res = h.run_gputrain(["train", "--quiet", *args], cwd=cwd, env=env)
    h.assert_ok(res)
    return res


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_used_folder_is_refused_untouched_and_overwrite_replaces_it(make_config, tmp_path):
    cfg = make_config(epochs=1, train_limit=400)
    out = tmp_path / "run"
    train(["--config", cfg, "--out", out], cwd=tmp_path)
    before = snapshot(out)
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--set", "train.seed=3"],
                         cwd=tmp_path)
    line = h.assert_user_error(res, must_contain=[str(out), "--overwrite", "--resume"])
    assert "already holds a run" in line
    assert snapshot(out) == before, "a refused run changed files of the earlier run"

    train(["--config", cfg, "--out", out, "--set", "train.seed=3", "--overwrite"], cwd=tmp_path)
    metrics = h.read_metrics(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1], "--overwrite kept lines of the earlier run"
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"], \
        "--overwrite with another seed left the earlier weights"
    assert metrics[0]["run_id"] != json.loads(before["metrics.jsonl"].decode())["run_id"]


def test_resume_from_the_checkpoint_alone_continues_in_its_folder(make_config, tmp_path):
    cfg = make_config(epochs=2, train_limit=600)
    work = tmp_path / "work"
    work.mkdir()
    train(["--config", cfg, "--out", tmp_path / "full"], cwd=work)
    out = tmp_path / "x"
    train(["--config", cfg, "--out", out, "--set", "train.epochs=1"], cwd=work)
    ino = os.stat(out / "metrics.jsonl").st_ino
    train(["--resume", out / "checkpoint.safetensors", "--set", "train.epochs=2"], cwd=work)

    h.assert_bitwise_equal(tmp_path / "full/model.safetensors", out / "model.safetensors")
    metrics = h.read_metrics(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert len({m["run_id"] for m in metrics}) == 1, "the resumed epochs carry another run_id"
    assert os.stat(out / "metrics.jsonl").st_ino == ino, "metrics.jsonl was replaced, not appended"
    for m in metrics:
        for key in ("time", "global_step", "run_id"):
            assert key in m, f"metrics line without {key}: {m}"
        assert m["time"].endswith("Z") and "T" in m["time"]
    assert metrics[1]["global_step"] > metrics[0]["global_step"]
    # Nothing else was created: not in the working directory, not the config's output.dir.
    assert list(work.iterdir()) == []
    assert not (tmp_path / "out-from-config").exists()
    # config.yaml is the run's truth: it records the folder the run wrote.
    text = (out / "config.yaml").read_text()
    assert f"dir: \"{out}\"" in text, text
    assert metrics[0]["run_id"] in text


def test_config_yaml_reproduces_the_run(make_config, tmp_path):
    cfg = make_config(epochs=1, train_limit=300)
    out = tmp_path / "a"
    train(["--config", cfg, "--out", out], cwd=tmp_path)
    # The recorded config names folder a: reproduce into another folder with --out.
    train(["--config", out / "config.yaml", "--out", tmp_path / "b"], cwd=tmp_path)
    h.assert_bitwise_equal(out / "model.safetensors", tmp_path / "b/model.safetensors")


def test_resume_with_out_elsewhere_leaves_the_original_alone(make_config, tmp_path):
    cfg = make_config(epochs=1, train_limit=300)
    a = tmp_path / "a"
    train(["--config", cfg, "--out", a], cwd=tmp_path)
    before = snapshot(a)
    b = tmp_path / "b"
    train(["--resume", a / "checkpoint.safetensors", "--set", "train.epochs=2", "--out", b],
          cwd=tmp_path)
    assert snapshot(a) == before
    assert [m["epoch"] for m in h.read_metrics(b / "metrics.jsonl")] == [2]


def test_best_weights_evaluate_to_the_best_accuracy(make_config, tmp_path):
    # A high learning rate late in training makes the last epoch worse than an earlier one often
    # enough; whichever epoch is best, model_best must hold it.
    cfg = make_config(epochs=3, train_limit=500, lr=0.2)
    out = tmp_path / "run"
    train(["--config", cfg, "--out", out], cwd=tmp_path)
    metrics = h.read_metrics(out / "metrics.jsonl")
    best = max(metrics, key=lambda m: m["test_acc"])
    first_best = next(m for m in metrics if m["test_acc"] == best["test_acc"])
    meta = h.read_safetensors(out / "model_best.safetensors").metadata
    assert int(meta["best_epoch"]) == first_best["epoch"]
    res = h.run_gputrain(["eval", "--config", cfg, "--weights", out / "model_best.safetensors",
                          "--json"], cwd=tmp_path)
    h.assert_ok(res)
    assert json.loads(res.stdout)["accuracy"] == pytest.approx(best["test_acc"], abs=1e-12)


def test_home_paths_expand_and_a_failed_check_creates_no_folder(make_config, tmp_path, data_copy):
    home = tmp_path / "h"
    home.mkdir()
    cfg = make_config(epochs=1, train_limit=200, out_dir="~/x")
    train(["--config", cfg], cwd=tmp_path, env={"HOME": str(home)})
    assert (home / "x/model.safetensors").is_file()
    assert not (tmp_path / "~").exists()

    (data_copy / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01")  # truncated
    bad = make_config(name="bad.yaml", data_dir=data_copy, out_dir=tmp_path / "never")
    res = h.run_gputrain(["train", "--config", bad], cwd=tmp_path)
    h.assert_user_error(res, must_contain=["t10k-labels"])
    assert not (tmp_path / "never").exists(), "a run that failed its data check made its folder"


def test_a_torn_metrics_line_and_later_epochs_are_dropped_on_resume(make_config, tmp_path):
    cfg = make_config(epochs=1, train_limit=300)
    out = tmp_path / "run"
    train(["--config", cfg, "--out", out], cwd=tmp_path)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_loss": 1.0')  # a crash mid-line
    train(["--resume", out / "checkpoint.safetensors", "--set", "train.epochs=2"], cwd=tmp_path)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
