"""pytest glue for the parity suite: prints every measured difference at the end of the run, so the
numbers show under `pytest -q` (ctest's command) without -s; `ctest -V` or the ctest log shows them.
Set GPUTRAIN_PARITY_REPORT=FILE to also append them to FILE."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# tests/support: what the Python suites share (safetensors_io.py, yaml_io.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import parity_lib  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if parity_lib.REPORT:
        terminalreporter.section("parity measurements (rel = max|a-b| / max|ref| per tensor)")
        for line in parity_lib.REPORT:
            terminalreporter.write_line(line)
