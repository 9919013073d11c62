"""Fixtures of the gputrain end-to-end tests: the binary, the synthetic IDX data set, configs."""

import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# tests/support: what the Python suites share (safetensors_io.py, yaml_io.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import cli_helpers as h  # noqa: E402


@pytest.fixture(scope="session")
def gputrain_bin():
    path = h.binary_path()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"gputrain binary not found at {path} (set GPUTRAIN_BIN or build into build/)")
    return path


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, gputrain_bin):
    """The synthetic 10-class 1×12×12 task as raw IDX files: .dir, .arrays (dict of NumPy arrays)."""
    arrays = h.make_synthetic()
    directory = h.write_dataset(tmp_path_factory.mktemp("data") / "synthetic", arrays)
    return SimpleNamespace(dir=directory, arrays=arrays)


@pytest.fixture
def make_config(tmp_path, dataset):
    """make_config(name="config.yaml", data_dir=..., out_dir=..., **config_text kwargs) -> path."""

    def make(name="config.yaml", data_dir=None, out_dir=None, **kwargs):
        path = tmp_path / name
        data_dir = dataset.dir if data_dir is None else data_dir
        out_dir = tmp_path / "out-from-config" if out_dir is None else out_dir
        return h.write_config(path, data_dir, out_dir, **kwargs)

    return make


@pytest.fixture
def data_copy(tmp_path, dataset):
    """A private copy of the data folder that a test may corrupt."""
    target = tmp_path / "data-copy"
    shutil.copytree(dataset.dir, target)
    return target
