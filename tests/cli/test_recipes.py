"""Training recipes end to end: AdamW, schedules, label smoothing, gradient clipping, the validation
split and early stopping (issue 10)."""

import math

import pytest

import cli_helpers as h


def train(cfg, out, *extra, cwd, quiet=True):
    args = ["train", "--config", cfg, "--out", out, *(["--quiet"] if quiet else []), *extra]
    res = h.run_gputrain(args, cwd=cwd)
    h.assert_ok(res)
    return res


def sets(*pairs):
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


def resume_equals_uninterrupted(cfg, tmp_path, recipe):
    """2 epochs in one go vs 1 epoch then --resume to 2: bitwise the same weights and state."""
    train(cfg, tmp_path / "full", *sets(*recipe), cwd=tmp_path)
    train(cfg, tmp_path / "first", *sets(*recipe, "train.epochs=1"), cwd=tmp_path)
    train(cfg, tmp_path / "resumed", "--resume", tmp_path / "first/checkpoint.safetensors",
          *sets(*recipe, "train.epochs=2"), cwd=tmp_path)
    h.assert_bitwise_equal(tmp_path / "full/model.safetensors",
                           tmp_path / "resumed/model.safetensors")
    full = h.read_safetensors(tmp_path / "full/checkpoint.safetensors")
    resumed = h.read_safetensors(tmp_path / "resumed/checkpoint.safetensors")
    assert full.raw == resumed.raw, "checkpoint tensors differ after resume"
    a = h.read_metrics(tmp_path / "full/metrics.jsonl")[-1]
    b = h.read_metrics(tmp_path / "resumed/metrics.jsonl")[-1]
    for k in a:
        if k not in ("time", "seconds", "eval_seconds", "images_per_s", "run_id", "steps"):
            assert b[k] == a[k], (k, a, b)
    return full


def test_adamw_trains_and_resumes_bitwise(make_config, tmp_path):
    cfg = make_config(epochs=2)
    # The whole section replaced: weight_decay takes AdamW's default (0.01).
    full = resume_equals_uninterrupted(cfg, tmp_path, ["optimizer={type: adamw, lr: 0.002}"])
    names = set(full.raw)
    assert any(str(n).startswith("adam.m.") for n in names), names
    assert any(str(n).startswith("adam.v.") for n in names), names
    m = h.read_metrics(tmp_path / "full/metrics.jsonl")
    assert m[-1]["test_acc"] > 0.3, m  # it learns
    cfg_text = (tmp_path / "full/config.yaml").read_text()
    assert "type: adamw" in cfg_text and "weight_decay: 0.01" in cfg_text, cfg_text


@pytest.mark.parametrize("schedule", [
    ["schedule.type=step", "schedule.step_size=1", "schedule.gamma=0.5",
     "schedule.warmup_epochs=0.7"],
    ["schedule.type=multistep", "schedule.milestones=[1]", "schedule.warmup_epochs=0.5",
     "schedule.warmup_start_factor=0.25"],
])
def test_schedule_resume_is_bitwise(schedule, make_config, tmp_path):
    cfg = make_config(epochs=2)
    resume_equals_uninterrupted(cfg, tmp_path, schedule)


def test_cosine_lr_per_epoch_follows_the_formula(make_config, tmp_path):
    # 2000 images, batch 32: 63 steps per epoch, the last one partial.
    cfg = make_config(epochs=3, lr=0.1)
    train(cfg, tmp_path / "run", *sets("schedule.type=cosine", "schedule.warmup_epochs=0.5",
                                       "schedule.eta_min=0.001"), cwd=tmp_path)
    spe, epochs, base, eta_min, f = 63, 3, 0.1, 0.001, 0.1
    total, warm = spe * epochs, round(0.5 * spe)
    m = h.read_metrics(tmp_path / "run/metrics.jsonl")
    for e, line in enumerate(m):
        s = (e + 1) * spe - 1
        mm = eta_min / base
        decay = mm + (1 - mm) * (1 + math.cos(math.pi * (s - warm) / (total - warm))) / 2
        assert line["lr"] == pytest.approx(base * decay, rel=1e-12), (e, line)


def test_cosine_run_cannot_be_extended_on_resume(make_config, tmp_path):
    cfg = make_config(epochs=1)
    train(cfg, tmp_path / "run", *sets("schedule.type=cosine"), cwd=tmp_path)
    res = h.run_gputrain(["train", "--resume", tmp_path / "run/checkpoint.safetensors", "--quiet",
                          "--set", "train.epochs=3"], cwd=tmp_path)
    h.assert_user_error(res, ["train.epochs", "cosine", "schedule's length"])


def test_label_smoothing_and_grad_clip(make_config, tmp_path):
    cfg = make_config(epochs=2)
    train(cfg, tmp_path / "plain", cwd=tmp_path)
    train(cfg, tmp_path / "smooth", *sets("loss.label_smoothing=0.1", "optimizer.grad_clip=0.5"),
          cwd=tmp_path)
    plain = h.read_metrics(tmp_path / "plain/metrics.jsonl")
    smooth = h.read_metrics(tmp_path / "smooth/metrics.jsonl")
    assert "grad_norm" not in plain[0]
    for line in smooth:
        assert line["grad_norm"] > 0 and math.isfinite(line["grad_norm"]), line
    # The smoothed training loss is bounded below by the smoothing's entropy term: never near 0.
    assert smooth[-1]["train_loss"] > 0.1, smooth
    assert h.any_tensor_differs(tmp_path / "plain/model.safetensors",
                                tmp_path / "smooth/model.safetensors")


def test_val_split_is_scored_and_picks_the_best_weights(make_config, tmp_path):
    cfg = make_config(epochs=2)
    res = train(cfg, tmp_path / "run", *sets("data.val_split=300"), cwd=tmp_path, quiet=False)
    m = h.read_metrics(tmp_path / "run/metrics.jsonl")
    for line in m:
        assert 0 <= line["val_acc"] <= 1 and line["val_loss"] > 0, line
        assert "stopped_early" not in line
    # 1700 training images at batch 32: 54 steps per epoch.
    assert m[0]["steps"] == 54, m[0]
    best = h.read_safetensors(tmp_path / "run/model_best.safetensors")
    meta = best.metadata
    assert meta["best_monitor"] == "val_acc", meta
    best_epoch = int(meta["best_epoch"])
    assert m[best_epoch - 1]["val_acc"] == max(line["val_acc"] for line in m)
    assert "val" in res.stderr + res.stdout


def test_val_split_resume_is_bitwise(make_config, tmp_path):
    cfg = make_config(epochs=2)
    resume_equals_uninterrupted(cfg, tmp_path, ["data.val_split=200", "train.seed=3"])


def test_val_split_as_large_as_the_training_set_is_refused(make_config, tmp_path):
    cfg = make_config(epochs=1)
    res = h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "out", "--quiet",
                          "--set", "data.val_split=2000"], cwd=tmp_path)
    h.assert_user_error(res, ["data.val_split", "2000"])
    h.assert_no_outputs(tmp_path / "out")


def test_early_stopping_stops_exits_0_and_resumes(make_config, tmp_path):
    cfg = make_config(epochs=6)
    # min_delta 1: no later epoch can improve val_acc by more than 1, so it stops after epoch 3.
    recipe = sets("data.val_split=200", "train.early_stopping.patience=2",
                  "train.early_stopping.min_delta=1")
    res = train(cfg, tmp_path / "run", *recipe, cwd=tmp_path, quiet=False)
    m = h.read_metrics(tmp_path / "run/metrics.jsonl")
    assert len(m) == 3, m
    assert m[-1].get("stopped_early") is True, m[-1]
    assert all("stopped_early" not in line for line in m[:-1]), m
    assert "stopped early" in res.stderr + res.stdout
    ckpt = h.read_safetensors(tmp_path / "run/checkpoint.safetensors")
    assert ckpt.metadata["stopped_early"] == "1"
    assert ckpt.metadata["epoch"] == "3"
    # The checkpoint resumes: patience starts over, so two more epochs, then it stops again.
    res = h.run_gputrain(["train", "--resume", tmp_path / "run/checkpoint.safetensors",
                          "--quiet"], cwd=tmp_path)
    h.assert_ok(res)
    m = h.read_metrics(tmp_path / "run/metrics.jsonl")
    assert [line["epoch"] for line in m] == [1, 2, 3, 4, 5], m
    assert m[-1].get("stopped_early") is True, m[-1]


def test_early_stopping_on_val_loss_with_patience_left_runs_every_epoch(make_config, tmp_path):
    cfg = make_config(epochs=2)
    train(cfg, tmp_path / "run", *sets("data.val_split=200", "train.early_stopping.patience=5",
                                       "train.early_stopping.monitor=val_loss"), cwd=tmp_path)
    m = h.read_metrics(tmp_path / "run/metrics.jsonl")
    assert len(m) == 2 and all("stopped_early" not in line for line in m), m
