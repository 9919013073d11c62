"""--version, --help, info and --device: auto falls back to the CPU, cuda without a GPU is exit 2."""

import json
import os
import re
import subprocess

import numpy as np
import pytest

import cli_helpers as h


def gpu_expected():
    """A usable CUDA device is expected: an NVIDIA device node and a binary linked against CUDA."""
    if not os.path.exists("/dev/nvidia0"):
        return False
    try:
        ldd = subprocess.run(["ldd", str(h.binary_path())], stdout=subprocess.PIPE, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libcudart" in ldd or "libcudnn" in ldd


no_gpu_only = pytest.mark.skipif("gpu_expected()", reason="a CUDA device is present")
gpu_only = pytest.mark.skipif("not gpu_expected()", reason="no CUDA device")


def test_version(gputrain_bin):
    res = h.run_gputrain(["--version"])
    h.assert_ok(res)
    assert h.project_version() in res.stdout, \
        f"--version should print {h.project_version()}" + h.describe(res)


def test_help(gputrain_bin):
    res = h.run_gputrain(["--help"])
    h.assert_ok(res)
    for word in ("train", "eval", "info"):
        assert word in res.stdout, f"--help should mention {word}" + h.describe(res)


@no_gpu_only
def test_info_says_no_device(gputrain_bin):
    res = h.run_gputrain(["info"])
    h.assert_ok(res)
    text = (res.stdout + res.stderr).lower()
    assert re.search(r"\bno\b[^\n]*\b(cuda|gpu|device)|(cuda|gpu|device)[^\n]*\b(not found|none)\b",
                     text), "info should say that no device was found" + h.describe(res)


@gpu_only
def test_info_lists_the_device(gputrain_bin):
    res = h.run_gputrain(["info"])
    h.assert_ok(res)
    assert re.search(r"nvidia|h100|h200|a100|geforce|rtx", (res.stdout + res.stderr).lower()), \
        "info should name the device" + h.describe(res)


@no_gpu_only
@pytest.mark.parametrize("where", ["flag", "config"])
def test_device_cuda_without_gpu_is_exit_2(where, make_config, tmp_path):
    out = tmp_path / "out"
    if where == "flag":
        args = ["train", "--config", make_config(epochs=1), "--device", "cuda"]
    else:
        args = ["train", "--config", make_config(epochs=1, device="cuda")]
    res = h.run_gputrain(args + ["--out", out, "--quiet"], cwd=tmp_path)
    line = h.assert_user_error(res)
    assert re.search(r"cuda|gpu|device", line, re.IGNORECASE), \
        "the message should say that no CUDA device is usable" + h.describe(res)
    h.assert_no_outputs(out)


@no_gpu_only
def test_eval_device_cuda_without_gpu_is_exit_2(make_config, tmp_path):
    weights = tmp_path / "w.safetensors"
    h.write_safetensors(weights, {n: np.zeros(s, np.float32)
                                  for n, s in h.param_shapes(h.SMALL_LAYERS).items()})
    res = h.run_gputrain(["eval", "--config", make_config(), "--weights", weights,
                          "--device", "cuda"], cwd=tmp_path)
    line = h.assert_user_error(res)
    assert re.search(r"cuda|gpu|device", line, re.IGNORECASE), h.describe(res)


@no_gpu_only
def test_device_auto_trains_on_the_cpu(make_config, tmp_path):
    cfg = make_config(epochs=1, device="cuda")  # the flag overrides the config
    for device in ("auto", "cpu"):
        res = h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / device,
                              "--device", device, "--quiet"], cwd=tmp_path)
        h.assert_ok(res)
    assert h.read_metrics(tmp_path / "auto/metrics.jsonl")[-1]["test_acc"] >= 0.5
    h.assert_bitwise_equal(tmp_path / "auto/model.safetensors", tmp_path / "cpu/model.safetensors")


@no_gpu_only
def test_device_auto_in_config(make_config, tmp_path):
    res = h.run_gputrain(["train", "--config", make_config(epochs=1, device="auto"), "--out",
                          tmp_path / "out", "--quiet"], cwd=tmp_path)
    h.assert_ok(res)
    assert (tmp_path / "out/model.safetensors").is_file()


@gpu_only
def test_cuda_training_matches_cpu_eval(make_config, tmp_path):
    cfg = make_config(epochs=3)
    res = h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "cuda", "--device", "cuda",
                          "--quiet"], cwd=tmp_path)
    h.assert_ok(res)
    last = h.read_metrics(tmp_path / "cuda/metrics.jsonl")[-1]
    assert last["test_acc"] >= 0.9, last
    weights = tmp_path / "cuda/model.safetensors"
    results = {}
    for device in ("cuda", "cpu"):
        r = h.run_gputrain(["eval", "--config", cfg, "--weights", weights, "--json", "--device",
                            device], cwd=tmp_path)
        h.assert_ok(r)
        results[device] = json.loads(r.stdout)
    assert abs(results["cuda"]["accuracy"] - results["cpu"]["accuracy"]) * h.TEST_COUNT <= 1.01
    assert results["cuda"]["loss"] == pytest.approx(results["cpu"]["loss"], rel=1e-3)
    assert round(last["test_acc"] * h.TEST_COUNT) == round(results["cuda"]["accuracy"] * h.TEST_COUNT)


def test_no_graph_flag_is_accepted_on_the_cpu(make_config, tmp_path):
    cfg = make_config(epochs=1)
    for name, extra in (("graph", []), ("nograph", ["--no-graph"])):
        h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / name, "--quiet",
                                    "--device", "cpu", *extra], cwd=tmp_path))
    h.assert_bitwise_equal(tmp_path / "graph/model.safetensors",
                           tmp_path / "nograph/model.safetensors")


@no_gpu_only
def test_no_gpu_at_all_is_not_a_warning(make_config, tmp_path):
    # No NVIDIA device node: the CPU is the expected engine, so --quiet prints nothing at all.
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("an NVIDIA driver node exists: a fallback here is a warning")
    res = h.run_gputrain(["train", "--config", make_config(epochs=1), "--out", tmp_path / "out",
                          "--device", "auto", "--quiet"], cwd=tmp_path)
    h.assert_ok(res)
    assert res.stderr == "" and res.stdout == "", h.describe(res)


@gpu_only
def test_unusable_gpu_falls_back_with_a_warning_even_when_quiet(make_config, tmp_path):
    # CUDA_VISIBLE_DEVICES="" leaves CUDA no device while the GPU is plainly there (/dev/nvidia0),
    # as a too-old driver would: `auto` trains on the CPU and must say so on stderr.
    res = h.run_gputrain(["train", "--config", make_config(epochs=1), "--out", tmp_path / "out",
                          "--device", "auto", "--quiet"], cwd=tmp_path,
                         env={"CUDA_VISIBLE_DEVICES": ""})
    h.assert_ok(res)
    assert res.stdout == "", h.describe(res)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "CPU" in lines[0], h.describe(res)
    assert (tmp_path / "out/model.safetensors").is_file()


@gpu_only
def test_device_cuda_0_is_the_first_visible_gpu(make_config, tmp_path):
    cfg = make_config(epochs=1)
    for device in ("cuda", "cuda:0"):
        res = h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / device.replace(":", "_"),
                              "--device", device], cwd=tmp_path)
        h.assert_ok(res)
        assert re.search(r"training on cuda:0 ", res.stdout), h.describe(res)
    res = h.run_gputrain(["info", "--json"])
    h.assert_ok(res)
    assert len(json.loads(res.stdout)) >= 1, h.describe(res)


def test_precision_on_cpu_warns_and_trains_in_fp32(make_config, tmp_path):
    # train.precision asks for TF32/BF16 arithmetic, which only the CUDA engine has: on the CPU the
    # run says so on stderr (even with --quiet) and its weights are exactly the fp32 run's.
    cfg = make_config(epochs=1)
    h.assert_ok(h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "fp32",
                                "--device", "cpu", "--quiet"], cwd=tmp_path))
    for mode in ("bf16", "tf32"):
        res = h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / mode, "--device", "cpu",
                              "--quiet", "--set", f"train.precision={mode}"], cwd=tmp_path)
        h.assert_ok(res)
        assert res.stdout == "", h.describe(res)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "warning" in lines[0] and f"train.precision: {mode}" in lines[0] \
            and "fp32" in lines[0], h.describe(res)
        h.assert_bitwise_equal(tmp_path / "fp32/model.safetensors",
                               tmp_path / mode / "model.safetensors")
    res = h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "bad", "--device", "cpu",
                          "--set", "train.precision=fp16"], cwd=tmp_path)
    h.assert_user_error(res, must_contain=("train.precision", "fp32, tf32, bf16"))


def test_verbose_is_accepted_and_quiet_wins(make_config, tmp_path):
    # The CPU engine has no details to add: --verbose changes nothing there but must be accepted by
    # train and eval; with --quiet nothing but warnings is printed.
    cfg = make_config(epochs=1)
    res = h.run_gputrain(["train", "--config", cfg, "--out", tmp_path / "v", "--device", "cpu",
                          "--verbose", "--quiet"], cwd=tmp_path)
    h.assert_ok(res)
    assert res.stdout == "" and res.stderr == "", h.describe(res)
    res = h.run_gputrain(["eval", "--config", cfg, "--weights", tmp_path / "v/model.safetensors",
                          "--device", "cpu", "--verbose"], cwd=tmp_path)
    h.assert_ok(res)


@gpu_only
def test_verbose_logs_the_cudnn_algorithms(make_config, tmp_path):
    res = h.run_gputrain(["train", "--config", make_config(epochs=1), "--out", tmp_path / "v",
                          "--device", "cuda", "--verbose"], cwd=tmp_path)
    h.assert_ok(res)
    assert "cuDNN algorithms" in res.stdout and "math" in res.stdout, h.describe(res)
