"""Bad usage, config, data, weights and output folders: exit 2, one stderr line naming the file or
key, no crash, and nothing left in the output folder."""

import gzip
import json
import re
import shutil
import struct
from types import SimpleNamespace

import numpy as np
import pytest

import cli_helpers as h

# ---------------------------------------------------------------------------------------------
# train: config problems. Each case returns (args after "train", must_contain, any_of, line).

CONFIG_CASES = {}


def config_case(fn):
    CONFIG_CASES[fn.__name__.replace("_", "-")] = fn
    return fn


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return path


@config_case
def missing_config_file(c):
    path = c.tmp / "missing-config.yaml"
    return ["--config", path], [path.name], [], None


@config_case
def config_is_a_directory(c):
    path = c.tmp / "a-config-dir"
    path.mkdir()
    return ["--config", path], ["a-config-dir"], [], None


@config_case
def config_under_a_regular_file(c):
    regular = c.tmp / "plain-file.txt"
    regular.write_text("not a folder\n")
    return ["--config", regular / "config.yaml"], ["plain-file.txt"], [], None


@config_case
def yaml_syntax_error(c):
    path = _edit(c.make("broken-syntax.yaml"), "  epochs: 3\n", "  epochs: [3\n  seed: {\n")
    return ["--config", path], ["broken-syntax.yaml"], [], None


@config_case
def unknown_key_in_file(c):
    path = _edit(c.make(), "  shuffle: true\n", "  shuffle: true\n  epoch_count: 4\n")
    return ["--config", path], ["epoch_count"], [], h.line_of(path, "epoch_count")


@config_case
def unknown_section_in_file(c):
    path = c.make()
    path.write_text(path.read_text() + "scheduler:\n  type: cosine\n")
    return ["--config", path], ["scheduler"], [], h.line_of(path, "scheduler")


@config_case
def unknown_layer_key_in_file(c):
    path = _edit(c.make(), "- {type: relu}", "- {type: relu, inplace: true}")
    return ["--config", path], ["inplace"], [], h.line_of(path, "inplace")


@config_case
def unknown_layer_type(c):
    path = _edit(c.make(), "- {type: relu}", "- {type: gelu}")
    return ["--config", path], [], ["gelu", "type"], None


@config_case
def unknown_key_via_set(c):
    return ["--config", c.make(), "--set", "train.bogus_key=1"], ["bogus_key"], [], None


@config_case
def unknown_section_via_set(c):
    return ["--config", c.make(), "--set", "trainer.epochs=1"], ["trainer"], [], None


@config_case
def wrong_type_in_file(c):
    path = _edit(c.make(), "  batch_size: 32\n", "  batch_size: abc\n")
    return ["--config", path], ["batch_size"], [], h.line_of(path, "batch_size: abc")


@config_case
def wrong_type_via_set(c):
    return ["--config", c.make(), "--set", "train.batch_size=abc"], ["batch_size"], [], None


@config_case
def float_for_int_via_set(c):
    return ["--config", c.make(), "--set", "train.epochs=1.5"], ["epochs"], [], None


@config_case
def wrong_bool_via_set(c):
    return ["--config", c.make(), "--set", "train.shuffle=maybe"], ["shuffle"], [], None


@config_case
def wrong_input_shape_type(c):
    return ["--config", c.make(), "--set", "model.input=[1, 12]"], ["input"], [], None


def _range_case(key, value, needle):
    def case(c):
        return ["--config", c.make(), "--set", f"{key}={value}"], [needle], [], None
    return case


for _key, _value, _needle in [
        ("optimizer.lr", "0", "lr"), ("optimizer.lr", "-1", "lr"),
        ("optimizer.lr", ".nan", "lr"),
        ("train.batch_size", "0", "batch_size"), ("train.batch_size", "-5", "batch_size"),
        ("train.epochs", "0", "epochs"), ("optimizer.momentum", "1", "momentum"),
        ("optimizer.momentum", "-0.5", "momentum"), ("optimizer.weight_decay", "-0.1", "weight_decay"),
        ("data.train_limit", "-1", "train_limit"), ("train.threads", "-1", "threads"),
        ("train.log_interval", "0", "log_interval"), ("train.seed", "-3", "seed"),
        ("model.layers.0.out_channels", "0", "out_channels"), ("model.layers.0.padding", "-1", "padding"),
        ("model.layers.0.stride", "0", "stride"), ("model.layers.4.out_features", "0", "out_features"),
        ("data.mean", "[0.1, 0.2]", "mean"), ("data.std", "[0.0]", "std"),
        ("optimizer.type", "adam", "type"), ("data.format", "png", "format"),
        ("device", "tpu", "device")]:
    CONFIG_CASES[f"out-of-range-{_key}={_value}"] = _range_case(_key, _value, _needle)


@config_case
def nesterov_without_momentum(c):
    return ["--config", c.make(), "--set", "optimizer.nesterov=true",
            "--set", "optimizer.momentum=0"], ["nesterov"], [], None


@config_case
def kernel_larger_than_padded_input(c):
    # 12×12 input padded by 1 is 14×14: a 15×15 kernel does not fit
    return ["--config", c.make(), "--set", "model.layers.0.kernel=15"], [], ["kernel", "conv1"], None


@config_case
def pool_larger_than_its_input(c):
    return ["--config", c.make(), "--set", "model.layers.2.kernel=13"], [], ["kernel", "layers.2",
                                                                            "maxpool"], None


@config_case
def linear_without_flatten(c):
    layers = [l for l in h.SMALL_LAYERS if l["type"] != "flatten"]
    return ["--config", c.make(layers=layers)], [], ["fc1", "flatten", "linear"], None


@config_case
def duplicate_parameter_names(c):
    layers = [dict(l) for l in h.SMALL_LAYERS]
    layers[-1]["name"] = "conv1"
    return ["--config", c.make(layers=layers)], ["conv1"], [], None


@config_case
def empty_layer_list(c):
    return ["--config", c.make(), "--set", "model.layers=[]"], ["layers"], [], None


@config_case
def set_without_equals(c):
    return ["--config", c.make(), "--set", "train.epochs"], ["train.epochs"], [], None


@config_case
def set_with_bad_yaml(c):
    return ["--config", c.make(), "--set", "data.mean=[0.5"], ["data.mean"], [], None


@pytest.fixture
def ctx(tmp_path, dataset, make_config):
    return SimpleNamespace(tmp=tmp_path, dataset=dataset, make=make_config)


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_train_config_error(case, ctx):
    args, must, any_of, line = CONFIG_CASES[case](ctx)
    out = ctx.tmp / "out"
    res = h.run_gputrain(["train", *args, "--out", out, "--quiet"], cwd=ctx.tmp)
    msg = h.assert_user_error(res, must_contain=must, any_of=any_of)
    if line is not None:
        assert re.search(rf"(?<!\d){line}(?!\d)", msg), \
            f"the message should give the line {line}" + h.describe(res)
    h.assert_no_outputs(out)


def test_missing_config_without_quiet(ctx):
    path = ctx.tmp / "absent.yaml"
    res = h.run_gputrain(["train", "--config", path, "--out", ctx.tmp / "out"], cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=["absent.yaml"])
    h.assert_no_outputs(ctx.tmp / "out")


def test_eval_config_error(ctx, tmp_path):
    weights = tmp_path / "w.safetensors"
    h.write_safetensors(weights, {n: np.zeros(s, np.float32)
                                  for n, s in h.param_shapes(h.SMALL_LAYERS).items()})
    res = h.run_gputrain(["eval", "--config", ctx.make(), "--weights", weights,
                          "--set", "data.bogus=1"], cwd=tmp_path)
    h.assert_user_error(res, must_contain=["bogus"])


# ---------------------------------------------------------------------------------------------
# train: data problems. Each case corrupts the data folder `d` (a private copy) and returns
# (config overrides, must_contain, any_of).

DATA_CASES = {}


def data_case(fn):
    DATA_CASES[fn.__name__.replace("_", "-")] = fn
    return fn


def _arrays(c):
    return c.dataset.arrays


@data_case
def missing_data_folder(c, d):
    shutil.rmtree(d)
    return [], [d.name], []


@data_case
def data_folder_is_a_file(c, d):
    shutil.rmtree(d)
    d.write_text("x")
    return [], [d.name], []


@data_case
def missing_test_images(c, d):
    (d / h.IDX_NAMES["test_images"]).unlink()
    return [], [h.IDX_NAMES["test_images"]], []


@data_case
def wrong_magic_train_images(c, d):
    h.write_idx(d / h.IDX_NAMES["train_images"], _arrays(c)["train_images"],
                magic_override=0x00000804)
    return [], [h.IDX_NAMES["train_images"]], []


@data_case
def wrong_magic_type_byte(c, d):
    # 0x0B = int16 elements instead of 0x08 = unsigned byte
    h.write_idx(d / h.IDX_NAMES["train_images"], _arrays(c)["train_images"],
                magic_override=0x00000B03)
    return [], [h.IDX_NAMES["train_images"]], []


@data_case
def wrong_magic_leading_bytes(c, d):
    h.write_idx(d / h.IDX_NAMES["test_images"], _arrays(c)["test_images"],
                magic_override=0x01000803)
    return [], [h.IDX_NAMES["test_images"]], []


@data_case
def labels_file_in_place_of_images(c, d):
    h.write_idx(d / h.IDX_NAMES["train_images"], _arrays(c)["train_labels"])  # magic 0x801
    return [], [h.IDX_NAMES["train_images"]], []


@data_case
def wrong_magic_test_labels(c, d):
    (d / h.IDX_NAMES["test_labels"]).write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 600)
    return [], [h.IDX_NAMES["test_labels"]], []


@data_case
def truncated_train_images(c, d):
    p = d / h.IDX_NAMES["train_images"]
    p.write_bytes(p.read_bytes()[:-1000])
    return [], [h.IDX_NAMES["train_images"]], []


@data_case
def truncated_header(c, d):
    p = d / h.IDX_NAMES["train_images"]
    p.write_bytes(p.read_bytes()[:10])
    return [], [h.IDX_NAMES["train_images"]], []


@data_case
def truncated_test_labels(c, d):
    p = d / h.IDX_NAMES["test_labels"]
    p.write_bytes(p.read_bytes()[:-7])
    return [], [h.IDX_NAMES["test_labels"]], []


@data_case
def empty_train_labels(c, d):
    (d / h.IDX_NAMES["train_labels"]).write_bytes(b"")
    return [], [h.IDX_NAMES["train_labels"]], []


@data_case
def count_mismatch(c, d):
    h.write_idx(d / h.IDX_NAMES["train_labels"], _arrays(c)["train_labels"][:-1])
    return [], [], [h.IDX_NAMES["train_labels"], h.IDX_NAMES["train_images"]]


@data_case
def label_out_of_range(c, d):
    labels = _arrays(c)["train_labels"].copy()
    labels[17] = 10  # the net has 10 outputs
    h.write_idx(d / h.IDX_NAMES["train_labels"], labels)
    return [], [h.IDX_NAMES["train_labels"]], []


@data_case
def label_beyond_a_smaller_head(c, d):
    # the data's labels go to 9, the net has 5 outputs
    return ["--set", "model.layers.4.out_features=5"], [], [h.IDX_NAMES["train_labels"],
                                                           "out_features", "fc1"]


@data_case
def images_do_not_match_model_input(c, d):
    return ["--set", "model.input=[1, 14, 14]"], [], ["input", h.IDX_NAMES["train_images"]]


@data_case
def other_size_test_images(c, d):
    imgs = np.zeros((h.TEST_COUNT, 14, 14), dtype=np.uint8)
    h.write_idx(d / h.IDX_NAMES["test_images"], imgs)
    return [], [], [h.IDX_NAMES["test_images"], "input"]


@data_case
def corrupt_gzip(c, d):
    (d / h.IDX_NAMES["train_images"]).unlink()
    (d / (h.IDX_NAMES["train_images"] + ".gz")).write_bytes(b"\x1f\x8b\x08\x00garbage" * 20)
    return [], [h.IDX_NAMES["train_images"]], []


@data_case
def truncated_gzip(c, d):
    p = d / h.IDX_NAMES["train_labels"]
    blob = gzip.compress(p.read_bytes())
    p.unlink()
    (d / (h.IDX_NAMES["train_labels"] + ".gz")).write_bytes(blob[: len(blob) // 2])
    return [], [h.IDX_NAMES["train_labels"]], []


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_train_data_error(case, ctx, data_copy):
    overrides, must, any_of = DATA_CASES[case](ctx, data_copy)
    cfg = ctx.make(data_dir=data_copy)
    out = ctx.tmp / "out"
    res = h.run_gputrain(["train", "--config", cfg, "--out", out, "--quiet", *overrides],
                         cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=must, any_of=any_of)
    h.assert_no_outputs(out)


def test_data_error_without_quiet(ctx, data_copy):
    DATA_CASES["wrong-magic-train-images"](ctx, data_copy)
    out = ctx.tmp / "out"
    res = h.run_gputrain(["train", "--config", ctx.make(data_dir=data_copy), "--out", out],
                         cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=[h.IDX_NAMES["train_images"]])
    h.assert_no_outputs(out)


# ---------------------------------------------------------------------------------------------
# train: output folders that cannot be written


def test_output_folder_in_proc(ctx):
    res = h.run_gputrain(["train", "--config", ctx.make(epochs=1), "--out", "/proc/gputrain-test",
                          "--quiet"], cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=["/proc/gputrain-test"])


def test_output_folder_under_a_regular_file(ctx):
    regular = ctx.tmp / "regular-file"
    regular.write_text("x")
    res = h.run_gputrain(["train", "--config", ctx.make(epochs=1), "--out", regular / "sub",
                          "--quiet"], cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=["regular-file"])
    assert regular.read_text() == "x"


def test_output_folder_is_a_regular_file(ctx):
    regular = ctx.tmp / "out-is-a-file"
    regular.write_text("x")
    res = h.run_gputrain(["train", "--config", ctx.make(epochs=1), "--out", regular, "--quiet"],
                         cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=["out-is-a-file"])
    assert regular.read_text() == "x"


def test_output_folder_from_config_unwritable(ctx):
    regular = ctx.tmp / "cfg-regular"
    regular.write_text("x")
    res = h.run_gputrain(["train", "--config", ctx.make(epochs=1, out_dir=regular / "runs"),
                          "--quiet"], cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=["cfg-regular"])


# ---------------------------------------------------------------------------------------------
# eval --weights: broken weights files. Each case writes `path` and returns (must, any_of).

WEIGHT_CASES = {}


def weights_case(fn):
    WEIGHT_CASES[fn.__name__.replace("_", "-")] = fn
    return fn


def _good_weights():
    rng = np.random.default_rng(5)
    return {n: rng.uniform(-0.1, 0.1, size=s).astype(np.float32)
            for n, s in h.param_shapes(h.SMALL_LAYERS).items()}


@weights_case
def missing_file(path):
    return [path.name], []


@weights_case
def empty_file(path):
    path.write_bytes(b"")
    return [path.name], []


@weights_case
def random_bytes(path):
    path.write_bytes(np.random.default_rng(9).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return [path.name], []


@weights_case
def header_claims_2_pow_60_bytes(path):
    h.write_safetensors(path, _good_weights(), header_override=1 << 60)
    return [path.name], []


@weights_case
def header_longer_than_file(path):
    h.write_safetensors(path, _good_weights())
    size = path.stat().st_size
    blob = path.read_bytes()
    path.write_bytes(struct.pack("<Q", size) + blob[8:])
    return [path.name], []


@weights_case
def header_not_json(path):
    text = b"{this is not json" + b" " * 7
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\x00" * 64)
    return [path.name], []


@weights_case
def data_truncated(path):
    h.write_safetensors(path, _good_weights())
    path.write_bytes(path.read_bytes()[:-100])
    return [path.name], []


@weights_case
def offsets_outside_the_data(path):
    weights = _good_weights()
    h.write_safetensors(path, weights)
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header["fc1.bias"]["data_offsets"] = [10 ** 9, 10 ** 9 + 40]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n:])
    return [path.name], []


@weights_case
def wrong_shape(path):
    weights = _good_weights()
    weights["fc1.weight"] = np.zeros((10, 100), dtype=np.float32)
    h.write_safetensors(path, weights)
    return [], [path.name, "fc1.weight"]


@weights_case
def missing_tensor(path):
    weights = _good_weights()
    del weights["conv1.bias"]
    h.write_safetensors(path, weights)
    return [], [path.name, "conv1.bias"]


@weights_case
def f16_tensors(path):
    h.write_safetensors(path, _good_weights(), dtype="F16")
    return [], [path.name, "F16"]


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_eval_weights_error(case, ctx):
    path = ctx.tmp / f"weights-{case}.safetensors"
    must, any_of = WEIGHT_CASES[case](path)
    res = h.run_gputrain(["eval", "--config", ctx.make(), "--weights", path, "--json"],
                         cwd=ctx.tmp, timeout=60)
    h.assert_user_error(res, must_contain=must, any_of=any_of)
    assert res.stdout.strip() == "", "a failed eval printed a result" + h.describe(res)


def test_eval_dump_logits_unwritable(ctx):
    path = ctx.tmp / "good.safetensors"
    h.write_safetensors(path, _good_weights())
    res = h.run_gputrain(["eval", "--config", ctx.make(), "--weights", path, "--dump-logits",
                          "/proc/gputrain-logits.safetensors"], cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=["gputrain-logits.safetensors"])


def test_eval_good_weights_control(ctx):
    """The broken-weights cases above differ from this working file only in the break."""
    path = ctx.tmp / "good.safetensors"
    h.write_safetensors(path, _good_weights())
    h.assert_ok(h.run_gputrain(["eval", "--config", ctx.make(), "--weights", path, "--json"],
                               cwd=ctx.tmp))


# ---------------------------------------------------------------------------------------------
# command line usage

USAGE_CASES = {
    "no-arguments": ([], [], []),
    "unknown-subcommand": (["frobnicate"], [], ["frobnicate"]),
    "train-without-config": (["train", "--quiet"], [], ["--config", "config"]),
    # eval takes its config from the weights when --config is absent (issue 13): the missing
    # weights file is the error (weights recording no config: test_self_describing.py).
    "eval-without-config": (["eval", "--weights", "w.safetensors"], ["w.safetensors"], []),
    "train-unknown-option": (["train", "--config", "CFG", "--bogus-flag"], ["--bogus-flag"], []),
    "train-bad-device": (["train", "--config", "CFG", "--device", "tpu"], [], ["tpu", "device"]),
    "train-config-without-value": (["train", "--config"], [], ["--config", "config"]),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_error(case, ctx):
    args, must, any_of = USAGE_CASES[case]
    cfg = ctx.make()
    args = [cfg if a == "CFG" else a for a in args]
    res = h.run_gputrain(args, cwd=ctx.tmp)
    h.assert_user_error(res, must_contain=must, any_of=any_of)
    assert not (ctx.tmp / "out-from-config").exists(), "a usage error started training"


def test_eval_without_weights(ctx):
    res = h.run_gputrain(["eval", "--config", ctx.make()], cwd=ctx.tmp)
    h.assert_user_error(res, any_of=["--weights", "weights"])
