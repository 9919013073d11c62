"""Helpers for the end-to-end tests of the gputrain binary (tests/cli).

Everything here is independent of gputrain's own code: safetensors files (through the suites' shared
tests/support/safetensors_io.py), an IDX writer, a
synthetic data set, config text (PyYAML, through tests/support/yaml_io.py), a NumPy forward pass of the configured network (PyTorch semantics),
and the checks on how the binary runs and fails.
"""

import gzip
import json
import math
import os
import re
import signal
import struct
import subprocess
from pathlib import Path

import numpy as np

import safetensors_io
import yaml_io

REPO_ROOT = Path(__file__).resolve().parents[2]

# Fixed geometry of the synthetic task.
CLASSES = 10
SIDE = 12
TRAIN_COUNT = 2000
TEST_COUNT = 500
NOISE = 70.0      # std of the Gaussian pixel noise
MAX_SHIFT = 1     # patterns move by up to this many pixels

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Words that betray an uncaught exception, an abort or a crash instead of a clean error message.
CRASH_MARKERS = ("terminate called", "what():", "Traceback", "Aborted", "core dumped",
                 "Segmentation fault", "AddressSanitizer", "stack trace", "std::")

# Names a temporary file of an atomic write could have.
TEMP_PATTERN = re.compile(r"(\.tmp|\.temp|\.part|~$|^\.|\.swp$|tmp)", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# The binary


def binary_path():
    env = os.environ.get("GPUTRAIN_BIN")
    path = Path(env) if env else REPO_ROOT / "build" / "gputrain"
    return path


def run_gputrain(args, cwd=None, timeout=180, env=None):
    """Runs the binary with `args` (strings or paths); returns the CompletedProcess (text)."""
    cmd = [str(binary_path())] + [str(a) for a in args]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout,
                          preexec_fn=_default_sigint)


def _default_sigint():
    # A test runner started in the background may ignore SIGINT; the binary runs as from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def describe(res):
    """A readable account of a finished run, for assertion messages."""
    args = res.args if isinstance(res.args, str) else " ".join(str(a) for a in res.args)
    return (f"\n--- command: {args}\n--- exit code: {res.returncode}\n--- stdout (tail):\n"
            f"{res.stdout[-3000:]}\n--- stderr (tail):\n{res.stderr[-3000:]}")


def assert_ok(res):
    assert res.returncode == 0, "expected success" + describe(res)
    assert_no_crash_text(res)


def assert_no_crash_text(res):
    for marker in CRASH_MARKERS:
        assert marker not in res.stderr and marker not in res.stdout, \
            f"output contains {marker!r}" + describe(res)


def error_line(res, code):
    """Asserts exit `code`, exactly one non-empty stderr line and no crash text; returns the line."""
    assert res.returncode == code, f"expected exit code {code}" + describe(res)
    assert_no_crash_text(res)
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected exactly one non-empty line on stderr, got {len(lines)}" + \
        describe(res)
    return lines[0]


def assert_user_error(res, must_contain=(), any_of=()):
    """Exit 2, one stderr line, containing every string of `must_contain` and one of `any_of`."""
    line = error_line(res, 2)
    for needle in must_contain:
        assert str(needle) in line, f"the error line should name {needle!r}" + describe(res)
    if any_of:
        assert any(str(n) in line for n in any_of), \
            f"the error line should name one of {list(any_of)!r}" + describe(res)
    return line


def assert_no_outputs(out_dir):
    """A failed run leaves nothing in its output folder (it may exist, empty)."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    left = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*"))
    assert not left, f"a failed run left files in {out_dir}: {left}"


def assert_no_temp_files(out_dir):
    left = [p.name for p in Path(out_dir).iterdir() if TEMP_PATTERN.search(p.name)]
    assert not left, f"temporary files left in {out_dir}: {left}"


def project_version():
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    m = re.search(r"project\(\s*gputrain\s+VERSION\s+([0-9][0-9.]*)", text)
    assert m, "CMakeLists.txt: project(gputrain VERSION ...) not found"
    return m.group(1)


# ---------------------------------------------------------------------------------------------
# safetensors (https://github.com/huggingface/safetensors)

# One reader/writer for every Python suite: tests/support/safetensors_io.py (conftest.py puts
# tests/support on sys.path).
SafeTensors = safetensors_io.SafeTensors


def read_safetensors(path):
    """Reads and strictly validates a safetensors file (the rules of the safetensors library);
    a SafeTensors (.tensors, .metadata, .header, .raw) or SafetensorsError."""
    return safetensors_io.load(path)


def write_safetensors(path, tensors, metadata=None, dtype="F32", header_override=None):
    """Writes {name: array} as safetensors (F32 unless `dtype`), header padded to 8 bytes."""
    safetensors_io.write(path, tensors, metadata=metadata, dtype=dtype,
                         header_override=header_override)


def assert_bitwise_equal(path_a, path_b):
    a, b = read_safetensors(path_a), read_safetensors(path_b)
    assert a.shapes() == b.shapes(), f"{path_a} vs {path_b}: tensor names/shapes differ"
    differing = [name for name in a.raw if a.raw[name] != b.raw[name]]
    if differing:
        detail = ", ".join(
            f"{n} (max |diff| {np.max(np.abs(a.tensors[n] - b.tensors[n])):.3g})" for n in differing)
        raise AssertionError(f"{path_a} vs {path_b}: tensors differ: {detail}")


def any_tensor_differs(path_a, path_b):
    a, b = read_safetensors(path_a), read_safetensors(path_b)
    return any(a.raw[name] != b.raw.get(name) for name in a.raw)


# ---------------------------------------------------------------------------------------------
# IDX files and the synthetic data set


def idx_bytes(array, magic_override=None):
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x800 | array.ndim if magic_override is None else magic_override
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.tobytes()


def write_idx(path, array, gz=False, magic_override=None):
    b = idx_bytes(array, magic_override)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(b)
    else:
        Path(path).write_bytes(b)


def make_synthetic(train_count=TRAIN_COUNT, test_count=TEST_COUNT, seed=1234, noise=NOISE,
                   max_shift=MAX_SHIFT):
    """10 classes of 12×12 images: each class a fixed random blob pattern, shifted by up to one
    pixel, with Gaussian noise. Returns dict of uint8 arrays (images N×12×12, labels N)."""
    rng = np.random.default_rng(seed)
    templates = (rng.random((CLASSES, SIDE, SIDE)) < 0.35).astype(np.float64)

    def draw(count):
        labels = rng.integers(0, CLASSES, size=count)
        images = templates[labels] * 170.0 + 40.0
        shifts = rng.integers(-max_shift, max_shift + 1, size=(count, 2))
        for i in range(count):
            images[i] = np.roll(images[i], tuple(shifts[i]), axis=(0, 1))
        images += rng.normal(0.0, noise, size=images.shape)
        return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels.astype(np.uint8)

    train_x, train_y = draw(train_count)
    test_x, test_y = draw(test_count)
    return {"train_images": train_x, "train_labels": train_y,
            "test_images": test_x, "test_labels": test_y, "templates": templates}


def write_dataset(directory, ds, gz=False):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_NAMES.items():
        write_idx(directory / name, ds[key], gz=gz)
    return directory


# ---------------------------------------------------------------------------------------------
# Configs

# The small net of the suite: conv 4ch k3 p1 -> relu -> maxpool 2 -> flatten -> linear 10.
SMALL_LAYERS = [
    {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"},
    {"type": "linear", "name": "fc1", "out_features": 10},
]


def config_text(data_dir, out_dir, layers=None, input_shape=(1, SIDE, SIDE), mean="auto",
                std="auto", lr=0.05, momentum=0.9, weight_decay=0.0, epochs=3, batch_size=32,
                seed=7, shuffle=True, threads=1, log_interval=20, device="cpu", train_limit=0,
                test_limit=0, extra_train_lines=(), curves=False):
    """The suite's config as YAML text (tests/support/yaml_io.py: one key per line, layers as
    `- {type: relu}`, sections separated by a blank line); `extra_train_lines` are raw YAML lines
    appended to the train section as written (e.g. a duplicate key). output.curves is off unless
    `curves`: drawing curves.png (matplotlib) at the end of each of the suite's many short runs
    would add seconds to each; the tests of curves, signals and MPI turn it on."""
    sections = {
        "model": {"input": list(input_shape), "layers": SMALL_LAYERS if layers is None else layers},
        "data": {"format": "idx", "dir": str(data_dir), "train_limit": train_limit,
                 "test_limit": test_limit, "mean": mean, "std": std},
        "optimizer": {"type": "sgd", "lr": float(lr), "momentum": float(momentum),
                      "weight_decay": float(weight_decay), "nesterov": False},
        "train": {"epochs": epochs, "batch_size": batch_size, "seed": seed, "shuffle": shuffle,
                  "deterministic": False, "log_interval": log_interval, "threads": threads},
        "output": {"dir": str(out_dir), "curves": bool(curves)},
        "device": device,
    }
    chunks = []
    for name, value in sections.items():
        chunk = yaml_io.dump({name: value})
        if name == "train":
            chunk += "".join(f"  {line}\n" for line in extra_train_lines)
        chunks.append(chunk)
    return "# gputrain cli test config\n" + "\n".join(chunks)


def write_config(path, data_dir, out_dir, **kwargs):
    Path(path).write_text(config_text(data_dir, out_dir, **kwargs))
    return Path(path)


def line_of(path, needle):
    """1-based number of the first line of `path` containing `needle`."""
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {path}")


def param_shapes(layers, input_shape=(1, SIDE, SIDE)):
    """name -> shape of every parameter, PyTorch state_dict layout, from a layer list."""
    c, h, w = input_shape
    flat = None
    shapes = {}
    for layer in layers:
        t = layer["type"]
        if t == "conv2d":
            k, s, p = layer["kernel"], layer.get("stride", 1), layer.get("padding", 0)
            o = layer["out_channels"]
            shapes[layer["name"] + ".weight"] = [o, c, k, k]
            shapes[layer["name"] + ".bias"] = [o]
            c, h, w = o, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif t == "maxpool2d":
            k = layer["kernel"]
            s = layer.get("stride", k)
            h, w = (h - k) // s + 1, (w - k) // s + 1
        elif t == "flatten":
            flat = c * h * w
        elif t == "linear":
            shapes[layer["name"] + ".weight"] = [layer["out_features"], flat]
            shapes[layer["name"] + ".bias"] = [layer["out_features"]]
            flat = layer["out_features"]
    return shapes


# ---------------------------------------------------------------------------------------------
# Reference forward pass (NumPy, float64, PyTorch semantics)


def _conv2d(x, weight, bias, stride, padding):
    n, c, h, w = x.shape
    o, _, k, _ = weight.shape
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (x.shape[2] - k) // stride + 1
    ow = (x.shape[3] - k) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]  # n,c,oh,ow
            out += np.einsum("nchw,oc->nohw", patch, weight[:, :, i, j])
    return out + bias[None, :, None, None]


def _maxpool2d(x, k, s):
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, x[:, :, i:i + s * oh:s, j:j + s * ow:s])
    return out


def forward(layers, params, images_u8, mean, std):
    """Logits (float64) of the configured net with `params` (name -> array) on uint8 images N×H×W
    (one channel) or N×C×H×W."""
    x = images_u8.astype(np.float64) / 255.0
    if x.ndim == 3:
        x = x[:, None]
    mean = np.asarray(mean, dtype=np.float64)[None, :, None, None]
    std = np.asarray(std, dtype=np.float64)[None, :, None, None]
    x = (x - mean) / std
    for layer in layers:
        t = layer["type"]
        if t == "conv2d":
            x = _conv2d(x, params[layer["name"] + ".weight"].astype(np.float64),
                        params[layer["name"] + ".bias"].astype(np.float64),
                        layer.get("stride", 1), layer.get("padding", 0))
        elif t == "relu":
            x = np.maximum(x, 0.0)
        elif t == "maxpool2d":
            x = _maxpool2d(x, layer["kernel"], layer.get("stride", layer["kernel"]))
        elif t == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif t == "linear":
            x = x @ params[layer["name"] + ".weight"].astype(np.float64).T + \
                params[layer["name"] + ".bias"].astype(np.float64)
    return x


def score(logits, labels):
    """(accuracy, mean cross-entropy loss, predictions)."""
    labels = np.asarray(labels, dtype=np.int64)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(labels)), labels].mean())
    pred = logits.argmax(axis=1)
    return float((pred == labels).mean()), loss, pred


def read_metrics(path):
    lines = [l for l in Path(path).read_text().splitlines() if l.strip()]
    return [json.loads(l) for l in lines]


def numbers_in(text):
    return [float(m) for m in re.findall(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)]


def is_finite_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
