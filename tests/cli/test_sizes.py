"""Sizes that cannot overflow (issue 8, item 11): a config whose derived sizes do not fit in the
integers the ops use, in int64, or in this machine's memory is a config error — exit 2, one stderr
line naming the layer (or model.input) and the size, no signal, and no output folder — found before
anything is allocated. Before, `padding: 2147483647` overflowed int in the plan and in im2col and
ended in SIGSEGV, a huge model.input overflowed the plan, and out_channels/out_features of 2^31-1
died with a bare "out of memory"."""

import pytest

import cli_helpers as h

INT_MAX = 2147483647


def conv_net(**conv):
    first = {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "stride": 1,
             "padding": 1}
    first.update(conv)
    return [first, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2}, {"type": "flatten"},
            {"type": "linear", "name": "fc1", "out_features": 10}]


CASES = {
    # name: (config kwargs, strings the error line must contain)
    "conv padding 2^31-1": (dict(layers=conv_net(padding=INT_MAX)), ["conv1", "padding"]),
    "conv out_channels 2^31-1": (dict(layers=conv_net(out_channels=INT_MAX)), ["conv1"]),
    "conv kernel 2^31-1 with padding": (
        dict(layers=conv_net(kernel=INT_MAX, padding=INT_MAX // 2)), ["conv1"]),
    "linear out_features 2^31-1": (
        dict(layers=[{"type": "flatten"},
                     {"type": "linear", "name": "fc1", "out_features": INT_MAX}]), ["fc1"]),
    "model.input 3 x 2^31-1": (dict(input_shape=(INT_MAX, INT_MAX, INT_MAX)), ["model.input"]),
    "model.input 65536x65536": (dict(input_shape=(1, 65536, 65536)), ["model.input"]),
    "batch 2^31-1": (dict(batch_size=INT_MAX), ["batch"]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["train", "eval"])
def test_sizes_that_do_not_fit_are_config_errors(case, command, make_config, tmp_path):
    kwargs, must_contain = CASES[case]
    out = tmp_path / "out"
    cfg = make_config(out_dir=out, epochs=1, threads=2, **kwargs)
    if command == "train":
        res = h.run_gputrain(["train", "--config", cfg], cwd=tmp_path, timeout=60)
    else:
        weights = tmp_path / "weights.safetensors"  # never read: the plan fails first or the
        h.write_safetensors(weights, {})             # weights do not match (exit 2 either way)
        res = h.run_gputrain(["eval", "--config", cfg, "--weights", weights], cwd=tmp_path,
                             timeout=60)
    assert res.returncode >= 0, f"killed by signal {-res.returncode}" + h.describe(res)
    line = h.assert_user_error(res)
    if command == "train":
        for needle in must_contain:
            assert needle in line, f"the error line should name {needle!r}" + h.describe(res)
        assert cfg.name in line, h.describe(res)
    assert not out.exists(), f"{out} was created" + h.describe(res)


def test_memory_error_names_the_layer_and_what_is_available(make_config, tmp_path):
    """A model that fits the integers but not the memory: the line says which layer needs how much
    and how much memory is available."""
    out = tmp_path / "out"
    layers = [{"type": "flatten"}, {"type": "linear", "name": "fc1", "out_features": INT_MAX}]
    cfg = make_config(out_dir=out, layers=layers, epochs=1)
    res = h.run_gputrain(["train", "--config", cfg], cwd=tmp_path, timeout=60)
    line = h.assert_user_error(res, must_contain=["fc1", "needs", "available", "GiB"])
    assert "out of memory" not in line
    assert not out.exists()


def test_large_but_valid_sizes_still_train(make_config, tmp_path):
    """The checks reject only what does not fit: a wide padding and a wide layer still train."""
    out = tmp_path / "out"
    layers = conv_net(padding=7, out_channels=6)
    layers[-1:] = [{"type": "linear", "name": "fc1", "out_features": 4096}, {"type": "relu"},
                   {"type": "linear", "name": "fc2", "out_features": 10}]
    cfg = make_config(out_dir=out, layers=layers, epochs=1, train_limit=256, test_limit=64)
    res = h.run_gputrain(["train", "--config", cfg], cwd=tmp_path)
    h.assert_ok(res)
    assert (out / "model.safetensors").is_file()
