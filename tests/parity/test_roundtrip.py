"""Round trip: gputrain trains -> model.safetensors -> PyTorch load_state_dict(strict=True) ->
PyTorch scores the test set with the normalization recorded in __metadata__ -> PyTorch writes the
state_dict back (tests/support/safetensors_io.py) -> gputrain eval of that file agrees with PyTorch and
with gputrain eval of the original. Plus self-checks of the safetensors reader/writer against the
format's definition, so the round trip does not rest on a reader and a writer that share a mistake."""
import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cases
import parity_lib as pl
import safetensors_io

FWD_TOL = 1e-5
STATS_TOL = 1e-6
TRAIN_N, TEST_N = 1024, 1000


# ------------------------------------------------------------------------------------------------
# the reader/writer against hand-made bytes
def test_reader_reads_handmade_file(tmp_path):
    a = np.arange(6, dtype="<f4").reshape(2, 3) / 7
    b = np.array([-1.5, 2.25], "<f4")
    header = {"b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [8, 32]},
              "__metadata__": {"normalize_mean": "[0.5]", "k": "v"}}
    hb = json.dumps(header).encode()
    p = tmp_path / "h.safetensors"
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + b.tobytes() + a.tobytes())
    t, meta = safetensors_io.read(p)
    assert list(t) == ["b", "a"]                # file (data offset) order
    assert np.array_equal(t["a"], a) and np.array_equal(t["b"], b) and t["a"].dtype == np.float32
    assert meta == {"normalize_mean": "[0.5]", "k": "v"}


def test_writer_layout(tmp_path):
    t = {"w": np.ones((2, 2), np.float32), "b": np.array([3.0], np.float32)}
    p = tmp_path / "w.safetensors"
    safetensors_io.write(p, t, metadata={"normalize_mean": [0.25], "format": "pt"}, order=["b", "w"])
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and len(raw) == 8 + n + 4 * 5
    h = json.loads(raw[8:8 + n])
    assert h["b"] == {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    assert h["w"] == {"dtype": "F32", "shape": [2, 2], "data_offsets": [4, 20]}
    assert h["__metadata__"] == {"normalize_mean": "[0.25]", "format": "pt"}
    assert raw[8 + n:8 + n + 4] == np.float32(3.0).tobytes()
    back, meta = safetensors_io.read(p)
    assert all(np.array_equal(back[k], t[k]) for k in t) and json.loads(meta["normalize_mean"]) == [0.25]


def test_reader_rejects_bad_files(tmp_path):
    p = tmp_path / "bad.safetensors"
    hb = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + bytes(16))
    with pytest.raises(safetensors_io.SafetensorsError):
        safetensors_io.read(p)
    p.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(safetensors_io.SafetensorsError):
        safetensors_io.read(p)


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """gputrain trains the tutorial net from its own init, shuffled, auto normalization."""
    root = tmp_path_factory.mktemp("roundtrip")
    a = cases.ARCHS["tutorial-28"]
    cfg = pl.write_config(root / "tutorial.yaml", a["input"], a["layers"], pl.FASHION_DIR)
    tensors, meta = pl.train(cfg, root / "run", train__shuffle=True, train__seed=3, data__train_limit=TRAIN_N,
                             data__test_limit=TEST_N, train__epochs=1, train__batch_size=64,
                             optimizer__lr=0.05, optimizer__momentum=0.9)
    return root, cfg, tensors, meta


def _torch_eval(net, x, y):
    logits = pl.torch_logits(net, x)
    loss = F.cross_entropy(logits, torch.from_numpy(y)).item()
    return logits.numpy(), loss


def test_round_trip(trained):
    root, cfg, tensors, meta = trained
    a = cases.ARCHS["tutorial-28"]
    # the file: F32, PyTorch's names, normalization recorded = stats of the training images used
    header_len = struct.unpack("<Q", (root / "run" / "model.safetensors").read_bytes()[:8])[0]
    header = json.loads((root / "run" / "model.safetensors").read_bytes()[8:8 + header_len])
    assert all(v["dtype"] == "F32" for k, v in header.items() if k != "__metadata__"), header
    for key in ("normalize_mean", "normalize_std"):
        assert key in meta, f"model.safetensors __metadata__ lacks {key}: {meta}"
    mean, std = json.loads(meta["normalize_mean"]), json.loads(meta["normalize_std"])
    xtr, _ = pl.fashion("train", TRAIN_N)
    em, es = pl.channel_stats(xtr)
    r = max(np.max(np.abs(np.array(mean) - em) / em), np.max(np.abs(np.array(std) - es) / es))
    pl.report("round trip", "metadata mean/std rel diff vs numpy stats", r, STATS_TOL)
    assert r <= STATS_TOL, f"recorded mean {mean} std {std}, the {TRAIN_N} training images give {em} {es}"

    # PyTorch: strict load (every name and shape must match), score the test set
    net = pl.SpecNet(a["input"], a["layers"])
    pl.load_state(net, tensors)
    x, y = pl.fashion("test", TEST_N)
    logits, loss = _torch_eval(net, pl.normalize(x, mean, std), y)
    acc = float(np.mean(logits.argmax(1) == y))
    pl.report("round trip", "PyTorch test accuracy", acc)
    assert acc > 0.3, f"the trained net should have learned something (accuracy {acc})"

    # gputrain eval of its own file (auto normalization: the file's metadata)
    res0, dump0 = pl.evaluate(cfg, root / "run" / "model.safetensors", root / "l0.safetensors",
                              data__train_limit=TRAIN_N, data__test_limit=TEST_N)
    cases.check_eval("round trip gputrain eval (original)", res0, dump0, logits, y, loss, FWD_TOL)

    # PyTorch writes its state_dict back: other tensor order, metadata as PyTorch knows it
    sd = net.state_dict()
    back = root / "from_torch.safetensors"
    safetensors_io.write(back, sd, metadata={"format": "pt", "normalize_mean": mean, "normalize_std": std},
                         order=sorted(sd))
    res1, dump1 = pl.evaluate(cfg, back, root / "l1.safetensors", data__train_limit=TRAIN_N,
                              data__test_limit=TEST_N)
    cases.check_eval("round trip gputrain eval (PyTorch-written)", res1, dump1, logits, y, loss, FWD_TOL)
    assert res1["accuracy"] == res0["accuracy"] == pytest.approx(acc, abs=1e-12)
    # bitwise the same weights, the same binary, the same images: the same logits, bit for bit
    assert np.array_equal(dump1["logits"], dump0["logits"]), \
        f"eval of identical weights gave different logits (rel {pl.rel(dump1['logits'], dump0['logits']):.3g})"

    # and without normalization metadata: eval's auto recomputes it on the same training images
    bare = root / "bare.safetensors"
    safetensors_io.write(bare, sd)
    res2, dump2 = pl.evaluate(cfg, bare, root / "l2.safetensors", data__train_limit=TRAIN_N,
                              data__test_limit=TEST_N)
    cases.check_eval("round trip gputrain eval (no metadata)", res2, dump2, logits, y, loss, FWD_TOL)
    assert res2["accuracy"] == res0["accuracy"]
