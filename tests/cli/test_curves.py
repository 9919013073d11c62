"""gputrain plot (scripts/plot_curves.py, matplotlib)."""

import numpy as np
import pytest

import cli_helpers as h

pytest.importorskip("matplotlib", reason="python3-matplotlib draws the curves")
from PIL import Image  # noqa: E402  (python3-pil, installed with the test packages)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as img:
        img.load()
        assert 600 <= img.width <= 4000 and 300 <= img.height <= 3000, img.size
        return np.asarray(img.convert("RGB"))


def test_plot_overlays_runs(tmp_path, dataset):
    for name, lr in (("a", 0.05), ("b", 0.01)):
        cfg = h.write_config(tmp_path / f"{name}.yaml", dataset.dir, tmp_path / name, epochs=2,
                             lr=lr)
        h.assert_ok(h.run_gputrain(["train", "--config", cfg]))
    target = tmp_path / "ab.png"
    res = h.run_gputrain(["plot", tmp_path / "a" / "metrics.jsonl",
                          tmp_path / "b" / "metrics.jsonl", "--out", target])
    h.assert_ok(res)
    read_png(target)
    missing = tmp_path / "nope" / "metrics.jsonl"
    h.assert_user_error(h.run_gputrain(["plot", missing, "--out", target]),
                        must_contain=[str(missing)])
