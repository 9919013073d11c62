"""Shared machinery of the parity suite: run the gputrain binary, build the same network in PyTorch
from the same layer list, feed both the same images, train PyTorch the reference way (or a
deliberately broken way, for the mutant checks) and compare.

The one comparison metric, used everywhere:

    rel(a, b) = max|a - b| / max|b|          per tensor, b = the PyTorch reference, in float64;
    worst_rel(A, B) = max over tensors of rel(A[name], B[name]).

It is scale-free per tensor (a bias of size 1e-3 is judged against itself, not against fc1.weight)
and does not blow up on elements that are near zero, as an element-wise relative error would.
"""
import gzip
import json
import math
import os
import shlex
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import safetensors_io
import yaml_io

REPO = Path(__file__).resolve().parents[2]
FASHION_DIR = os.environ.get("GPUTRAIN_FASHION_DIR", "/usr/share/datasets/fashion-mnist")
THREADS = 2

torch.set_num_threads(THREADS)
torch.use_deterministic_algorithms(True)
torch.backends.cudnn.benchmark = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

# --------------------------------------------------------------------------------------------------
# reporting: one line per measurement, printed in pytest's terminal summary (visible under -q, no -s)
REPORT = []


def report(case, what, value, limit=None, note=""):
    line = f"[{case}] {what} {value:.3g}"
    if limit is not None:
        line += f" (limit {limit:.3g})"
    if note:
        line += f" {note}"
    REPORT.append(line)
    print(line)
    path = os.environ.get("GPUTRAIN_PARITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
    return value


# --------------------------------------------------------------------------------------------------
# the metric
def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    den = float(np.max(np.abs(b))) if b.size else 0.0
    num = float(np.max(np.abs(a - b))) if a.size else 0.0
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def rel_l2(a, b):
    """||a - b||_2 / ||b||_2: for trajectories in reduced precision, where a ReLU input within rounding
    of 0 may flip and move one term of a gradient sum, so no element-wise bound holds."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    den = float(np.linalg.norm(b))
    num = float(np.linalg.norm(a - b))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def as_numpy_state(sd):
    return {k: (v.detach().cpu().double().numpy() if hasattr(v, "detach") else np.asarray(v, np.float64))
            for k, v in sd.items()}


def worst_rel(got, ref, metric=rel):
    """(worst value, tensor name) over the tensors of ref; got must have exactly ref's names. metric:
    rel (max element difference over max |ref|, the default) or rel_l2."""
    got, ref = as_numpy_state(got), as_numpy_state(ref)
    assert sorted(got) == sorted(ref), f"tensor names differ: got {sorted(got)}, expected {sorted(ref)}"
    worst, where = -1.0, None
    for k in ref:
        assert got[k].shape == ref[k].shape, f"{k}: shape {got[k].shape} != {ref[k].shape}"
        r = metric(got[k], ref[k])
        if r > worst:
            worst, where = r, k
    return worst, where


# --------------------------------------------------------------------------------------------------
# the binary
def gputrain_bin():
    b = os.environ.get("GPUTRAIN_BIN")
    if not b:
        for cand in (REPO / "build" / "gputrain", Path("/tmp/build-parity/gputrain")):
            if cand.exists():
                b = str(cand)
                break
    if not b or not os.path.exists(b):
        pytest.fail("the gputrain binary was not found: set GPUTRAIN_BIN (ctest does) or build into build/")
    return b


def run(args, expect_rc=0, timeout=600):
    cmd = [gputrain_bin()] + [str(a) for a in args]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if expect_rc is not None and p.returncode != expect_rc:
        pytest.fail(f"command failed (rc {p.returncode}, expected {expect_rc}):\n  {shlex.join(cmd)}\n"
                    f"stderr (tail):\n{p.stderr[-3000:]}\nstdout (tail):\n{p.stdout[-2000:]}",
                    pytrace=False)
    return p


def yaml_value(v):
    """A --set value / config scalar as YAML text (floats always with a '.', so any YAML reads them as
    floats; lists in flow style)."""
    return yaml_io.scalar(v)


def write_config(path, input_chw, layers, data_dir, data_format="idx"):
    """A gputrain config with the model and the data set; everything else comes from --set."""
    config = {"model": {"input": list(input_chw), "layers": layers},
              "data": {"format": data_format, "dir": str(data_dir)},
              "train": {"threads": THREADS, "shuffle": False},
              "device": "cpu"}
    Path(path).write_text(yaml_io.dump(config, comment="written by tests/parity"))
    return Path(path)


def sets(d):
    out = []
    for k, v in d.items():
        out += ["--set", f"{k}={yaml_value(v)}"]
    return out


def train(config, out_dir, init=None, device="cpu", extra_args=(), **settings):
    """gputrain train; settings are --set keys with '.' written as '__' (optimizer__lr=0.01)."""
    s = {k.replace("__", "."): v for k, v in settings.items()}
    s.setdefault("train.threads", THREADS)
    args = ["train", "--config", config] + (["--init", init] if init else []) + sets(s) + \
           ["--device", device, "--out", out_dir, "--quiet"] + list(extra_args)
    run(args)
    path = Path(out_dir) / "model.safetensors"
    assert path.exists(), f"gputrain train wrote no {path}"
    return safetensors_io.read(path)


def evaluate(config, weights, dump, device="cpu", **settings):
    s = {k.replace("__", "."): v for k, v in settings.items()}
    s.setdefault("train.threads", THREADS)
    args = ["eval", "--config", config, "--weights", weights] + sets(s) + \
           ["--json", "--device", device] + (["--dump-logits", dump] if dump else [])
    p = run(args)
    try:
        result = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(f"eval --json did not print a JSON object; stdout was:\n{p.stdout[-2000:]}", pytrace=False)
    tensors = safetensors_io.read(dump)[0] if dump else None
    return result, tensors


# --------------------------------------------------------------------------------------------------
# data
def _read_idx_prefix(path, n):
    """The first n items of an IDX file (gzip'd or not), without reading the rest."""
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path += ".gz"
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        (magic,) = struct.unpack(">I", f.read(4))
        ndim = magic & 0xFF
        dims = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        n = dims[0] if n in (0, None) else min(n, dims[0])
        item = int(np.prod(dims[1:], dtype=np.int64)) if ndim > 1 else 1
        raw = f.read(n * item)
    return np.frombuffer(raw, dtype=np.uint8).reshape((n,) + tuple(dims[1:]))


_cache = {}


def fashion(split, n):
    """uint8 images [n,1,28,28] and int64 labels [n] in file order ('train' or 'test')."""
    key = ("fashion", split, n)
    if key not in _cache:
        pre = "train" if split == "train" else "t10k"
        x = _read_idx_prefix(os.path.join(FASHION_DIR, f"{pre}-images-idx3-ubyte"), n)[:, None]
        y = _read_idx_prefix(os.path.join(FASHION_DIR, f"{pre}-labels-idx1-ubyte"), n).astype(np.int64)
        _cache[key] = (x, y)
    return _cache[key]


def write_cifar(dirpath, per_batch=40, test=64, seed=1234):
    """A small CIFAR-10 binary set: data_batch_1..5.bin (per_batch records each), test_batch.bin.
    Structured so the channels differ (different means and spreads) and labels carry some signal:
    class k brightens a patch whose place depends on k, over per-channel noise."""
    rng = np.random.default_rng(seed)
    os.makedirs(dirpath, exist_ok=True)

    def make(n):
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        x = np.empty((n, 3, 32, 32), np.float64)
        x[:, 0] = rng.uniform(0, 255, size=(n, 32, 32))                     # flat, mean ~127
        x[:, 1] = rng.normal(70, 25, size=(n, 32, 32))                      # dark
        x[:, 2] = np.linspace(0, 255, 32)[None, None, :] * rng.uniform(0.5, 1.0, size=(n, 1, 1))
        for i in range(n):
            r, c = divmod(int(y[i]), 5)
            x[i, :, 4 + 12 * r:12 + 12 * r, 2 + 6 * c:6 + 6 * c] += 90
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return np.concatenate([y[:, None], x.reshape(n, 3072)], axis=1)

    train = []
    for i in range(1, 6):
        rec = make(per_batch)
        train.append(rec)
        rec.tofile(os.path.join(dirpath, f"data_batch_{i}.bin"))
    te = make(test)
    te.tofile(os.path.join(dirpath, "test_batch.bin"))
    return dirpath


def cifar(dirpath, split, n):
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    raw = np.concatenate([np.fromfile(os.path.join(dirpath, f), dtype=np.uint8).reshape(-1, 3073) for f in files])
    if n:
        raw = raw[:n]
    return raw[:, 1:].reshape(-1, 3, 32, 32).copy(), raw[:, 0].astype(np.int64)


def normalize(pixels, mean, std, mutant=None):
    """The contract: x = (pixel/255 - mean[c]) / std[c], all in float32."""
    x = torch.from_numpy(np.ascontiguousarray(pixels).astype(np.float32))
    m = torch.tensor(np.asarray(mean, np.float32)).view(1, -1, 1, 1)
    s = torch.tensor(np.asarray(std, np.float32)).view(1, -1, 1, 1)
    if mutant == "no_normalization":
        return x / 255.0
    if mutant == "normalize_raw_pixels":      # forgot the /255
        return (x - m) / s
    if mutant == "mean_only":
        return x / 255.0 - m
    return (x / 255.0 - m) / s


def channel_stats(pixels, ddof=0, per_channel=True):
    """Per-channel mean and population std of pixel/255, in float64 (what `auto` means)."""
    x = pixels.astype(np.float64) / 255.0
    if per_channel:
        c = x.shape[1]
        x = np.moveaxis(x, 1, 0).reshape(c, -1)
        return x.mean(axis=1), x.std(axis=1, ddof=ddof)
    return np.full(x.shape[1], x.mean()), np.full(x.shape[1], x.std(ddof=ddof))


# --------------------------------------------------------------------------------------------------
# the network, from the same layer list as the gputrain config
TUTORIAL = [
    {"type": "conv2d", "name": "conv1", "out_channels": 16, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "relu"},
    {"type": "conv2d", "name": "conv2", "out_channels": 32, "kernel": 3, "stride": 1, "padding": 1},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "name": "fc1", "out_features": 256},
    {"type": "relu"},
    {"type": "linear", "name": "fc2", "out_features": 10},
]

# max-pool (floor mode with a dropped row/column, and an overlapping stride-1 pool) and stride-2
# convolutions, padded and not: 1x28x28 -> 8x13x13 -> pool 8x6x6 -> 16x3x3 -> pool(2,1) 16x2x2 -> 64
POOLED = [
    {"type": "conv2d", "name": "conv1", "out_channels": 8, "kernel": 4, "stride": 2, "padding": 0},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "conv2d", "name": "conv2", "out_channels": 16, "kernel": 3, "stride": 2, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2, "stride": 1},
    {"type": "flatten"},
    {"type": "linear", "name": "fc1", "out_features": 32},
    {"type": "relu"},
    {"type": "linear", "name": "fc2", "out_features": 10},
]

LINEAR_ONLY = [
    {"type": "flatten"},
    {"type": "linear", "name": "fc1", "out_features": 64},
    {"type": "relu"},
    {"type": "linear", "name": "fc2", "out_features": 10},
]


class SpecNet(nn.Module):
    """nn.Conv2d / nn.Linear registered in layer order under the config's names, so the state_dict
    names are gputrain's and torch.manual_seed(k) draws the same default init as the tutorial's Net.

    `mutant` computes the forward pass with a deliberately broken convention (mutant checks only)."""

    def __init__(self, input_chw, layers, mutant=None):
        super().__init__()
        c, h, w = input_chw
        self.ops, self.mutant = [], mutant
        for layer in layers:
            t = layer["type"]
            if t == "conv2d":
                k, s, p = layer["kernel"], layer.get("stride", 1), layer.get("padding", 0)
                m = nn.Conv2d(c, layer["out_channels"], k, s, p)
                setattr(self, layer["name"], m)
                self.ops.append(("conv", layer["name"]))
                c, h, w = layer["out_channels"], (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            elif t == "linear":
                m = nn.Linear(c * h * w, layer["out_features"])
                setattr(self, layer["name"], m)
                self.ops.append(("linear", layer["name"]))
                c, h, w = layer["out_features"], 1, 1
            elif t == "relu":
                self.ops.append(("relu", None))
            elif t == "maxpool2d":
                k = layer["kernel"]
                s = layer.get("stride", k)
                self.ops.append(("pool", (k, s)))
                h, w = (h - k) // s + 1, (w - k) // s + 1
            elif t == "flatten":
                self.ops.append(("flatten", None))
            elif t == "batchnorm2d":
                m = nn.BatchNorm2d(c, eps=layer.get("eps", 1e-5), momentum=layer.get("momentum", 0.1))
                setattr(self, layer["name"], m)
                self.ops.append(("bn", layer["name"]))
            elif t == "avgpool2d":
                k = layer["kernel"]
                s = layer.get("stride", k)
                self.ops.append(("avgpool", (k, s)))
                h, w = (h - k) // s + 1, (w - k) // s + 1
            elif t == "global_avgpool":
                self.ops.append(("gap", None))
                h, w = 1, 1
            elif t == "dropout":
                m = nn.Dropout(layer["p"])
                self.dropouts = getattr(self, "dropouts", 0) + 1
                setattr(self, f"_dropout{self.dropouts}", m)   # no parameters: not in the state_dict
                self.ops.append(("dropout", f"_dropout{self.dropouts}"))
            else:
                raise ValueError(t)

    def forward(self, x):
        for op, arg in self.ops:
            if op == "conv":
                m = getattr(self, arg)
                wgt = m.weight.flip(-1, -2) if self.mutant == "conv_flipped_kernel" else m.weight
                x = F.conv2d(x, wgt, m.bias, m.stride, m.padding)
            elif op == "linear":
                x = getattr(self, arg)(x)
            elif op == "relu":
                x = F.relu(x)
            elif op == "pool":
                x = F.max_pool2d(x, arg[0], arg[1])
            elif op == "flatten":
                if self.mutant == "flatten_hwc":
                    x = x.permute(0, 2, 3, 1)
                x = x.reshape(x.shape[0], -1)
            elif op in ("bn", "dropout"):
                x = getattr(self, arg)(x)
            elif op == "avgpool":
                x = F.avg_pool2d(x, arg[0], arg[1])
            elif op == "gap":
                x = F.adaptive_avg_pool2d(x, 1)
        return x


def make_net(input_chw, layers, seed, mutant=None):
    torch.manual_seed(seed)
    return SpecNet(input_chw, layers, mutant)


def state_numpy(net):
    """float32 arrays; integer buffers (BatchNorm's num_batches_tracked) stay int64, as torch saves them."""
    return {k: v.detach().cpu().numpy().astype(np.int64 if not v.is_floating_point() else np.float32)
            for k, v in net.state_dict().items()}


def load_state(net, tensors):
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, strict=True)
    return net


@torch.no_grad()
def torch_logits(net, x, chunk=1000):
    net.eval()
    return torch.cat([net(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


# --------------------------------------------------------------------------------------------------
# training, the reference way and broken ways
OPT_MUTANTS = {
    # name: what is broken
    "momentum_dampened": "v = mu*v + (1-mu)*g  (EMA momentum / dampening=mu)",
    "momentum_ignored": "plain SGD although momentum > 0",
    "momentum_lr_inside": "v = mu*v + lr*g; w -= v  (EQUIVALENT to torch at constant lr)",
    "momentum_reset_each_epoch": "momentum buffer zeroed at every epoch start",
    "wd_outside_momentum": "v = mu*v + g; w -= lr*(v + wd*w)  (decay not through the buffer)",
    "wd_ignored": "weight decay dropped",
    "wd_doubled": "g + 2*wd*w  (gradient of wd*|w|^2 instead of wd/2*|w|^2)",
    "nesterov_ignored": "plain momentum although nesterov=true",
    "nesterov_old_buffer": "w -= lr*(g + mu*v_old)  (look-ahead with the previous buffer)",
    "loss_sum": "loss summed over the batch instead of averaged",
    "last_batch_dropped": "the partial last batch is skipped (drop_last=True)",
    "last_batch_over_B": "the partial last batch's loss divided by batch_size, not by its own count",
    "last_batch_padded": "the partial last batch filled up with images from the start of the set",
}


def torch_train(input_chw, layers, init, x, y, *, batch, lr, momentum=0.0, weight_decay=0.0,
                nesterov=False, epochs=1, mutant=None, manual=False, dtype=torch.float32):
    """Trains a SpecNet from `init` (dict of arrays) on x (normalized, float32 NCHW), y (int64), in
    order, epochs times; returns the final state as float64 numpy. The reference path is
    torch.optim.SGD + F.cross_entropy (mean) over DataLoader-style batches (drop_last=False);
    manual=True (implied by any optimizer mutant) does the update by hand."""
    net = SpecNet(input_chw, layers)
    load_state(net, init)
    net = net.to(dtype)
    net.train()
    x = x.to(dtype)
    params = list(net.parameters())
    n = x.shape[0]
    manual = manual or mutant is not None
    opt = None if manual else torch.optim.SGD(params, lr=lr, momentum=momentum,
                                              weight_decay=weight_decay, nesterov=nesterov)
    bufs = [None] * len(params)
    mu = 0.0 if mutant == "momentum_ignored" else momentum
    for epoch in range(epochs):
        if mutant == "momentum_reset_each_epoch":
            bufs = [None] * len(params)
        for i in range(0, n, batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            cnt = xb.shape[0]
            if cnt < batch:
                if mutant == "last_batch_dropped":
                    continue
                if mutant == "last_batch_padded":
                    xb = torch.cat([xb, x[:batch - cnt]])
                    yb = torch.cat([yb, y[:batch - cnt]])
            out = net(xb)
            if mutant == "loss_sum":
                loss = F.cross_entropy(out, yb, reduction="sum")
            elif mutant == "last_batch_over_B" and cnt < batch:
                loss = F.cross_entropy(out, yb, reduction="sum") / batch
            else:
                loss = F.cross_entropy(out, yb)
            net.zero_grad(set_to_none=True)
            loss.backward()
            if opt is not None:
                opt.step()
                continue
            with torch.no_grad():
                for j, p in enumerate(params):
                    g = p.grad
                    wd = weight_decay * (2.0 if mutant == "wd_doubled" else 0.0 if mutant == "wd_ignored" else 1.0)
                    if wd and mutant != "wd_outside_momentum":
                        g = g.add(p, alpha=wd)
                    if mutant == "momentum_lr_inside" and mu:
                        if bufs[j] is None:
                            bufs[j] = (lr * g).clone()
                        else:
                            bufs[j].mul_(mu).add_(g, alpha=lr)
                        p.sub_(bufs[j])
                        continue
                    if mu:
                        old = bufs[j]
                        if mutant == "momentum_dampened":
                            bufs[j] = (1 - mu) * g if old is None else old.mul(mu).add_(g, alpha=1 - mu)
                        else:
                            bufs[j] = g.clone() if old is None else old.mul(mu).add_(g)
                        nest = nesterov and mutant != "nesterov_ignored"
                        if nest and mutant == "nesterov_old_buffer":
                            step = g if old is None else g.add(old, alpha=mu)
                        elif nest:
                            step = g.add(bufs[j], alpha=mu)
                        else:
                            step = bufs[j]
                    else:
                        step = g
                    if mutant == "wd_outside_momentum" and wd:
                        step = step.add(p, alpha=wd)
                    p.sub_(step, alpha=lr)
    return {k: v.detach().double().numpy() for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# default initialization check (gputrain's own init must be nn.Conv2d/nn.Linear's)
def init_violations(tensors, fan_ins):
    """Checks each tensor is a plausible draw of U(-1/sqrt(fan_in), +1/sqrt(fan_in)): inside the bound,
    reaching close to it, mean ~ 0 and std ~ bound/sqrt(3) within sampling error. Returns a list of
    problems (empty = fine). fan_ins: tensor name -> fan_in of its layer."""
    bad = []
    for name, t in tensors.items():
        t = np.asarray(t, np.float64).ravel()
        n = t.size
        bound = 1.0 / math.sqrt(fan_ins[name])
        amax = float(np.max(np.abs(t)))
        if amax > bound * (1 + 1e-6):
            bad.append(f"{name}: max|w| {amax:.6g} > bound 1/sqrt({fan_ins[name]}) = {bound:.6g}")
        # P(all n draws inside 1-q of the bound) = (1-q)^n; choose q so that is < 1e-9
        q = min(0.9, -math.log(1e-9) / n)
        if amax < bound * (1 - q):
            bad.append(f"{name}: max|w| {amax:.6g} < {(1 - q):.3g} * bound {bound:.6g} (n={n})")
        sd = bound / math.sqrt(3.0)
        if abs(t.mean()) > 6 * sd / math.sqrt(n):
            bad.append(f"{name}: mean {t.mean():.3g} is > 6 sigma from 0 (sigma {sd / math.sqrt(n):.3g})")
        if n >= 64:
            # std of the sample variance of U(-b,b): var = b^2/3, var(s^2) ~ (4/45) b^4 / n
            sv = math.sqrt(4.0 / 45.0 / n) * bound ** 2
            if abs(t.var() - bound ** 2 / 3) > 6 * sv:
                bad.append(f"{name}: variance {t.var():.4g} vs {bound ** 2 / 3:.4g} is > 6 sigma off")
    return bad


def fan_ins_of(input_chw, layers):
    c, h, w = input_chw
    out = {}
    for layer in layers:
        t = layer["type"]
        if t == "conv2d":
            k, s, p = layer["kernel"], layer.get("stride", 1), layer.get("padding", 0)
            out[layer["name"] + ".weight"] = out[layer["name"] + ".bias"] = c * k * k
            c, h, w = layer["out_channels"], (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif t == "linear":
            out[layer["name"] + ".weight"] = out[layer["name"] + ".bias"] = c * h * w
            c, h, w = layer["out_features"], 1, 1
        elif t == "maxpool2d":
            k = layer["kernel"]
            s = layer.get("stride", k)
            h, w = (h - k) // s + 1, (w - k) // s + 1
    return out
