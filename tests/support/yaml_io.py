"""YAML text for the Python test suites (configs, --set values), written by PyYAML (python3-yaml).

The layout is fixed, so that tests can edit a config's text and name the line of a key: sections
and their keys in block style, in the order given (2-space indent, nothing wrapped); lists of
scalars, and each list item that is a mapping (a model layer), in flow style on one line:

    model:
      input: [1, 12, 12]
      layers:
      - {type: relu}

Floats are always written with a '.' (1.0e-05), so every YAML reader takes them for floats.
"""
from pathlib import PurePath

import numpy as np
import yaml

_NEVER_WRAP = 1 << 30


class _FlowMapping(dict):
    pass


class _FlowSequence(list):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FlowMapping, lambda dumper, value: dumper.represent_mapping(
    "tag:yaml.org,2002:map", value, flow_style=True))
_Dumper.add_representer(_FlowSequence, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", value, flow_style=True))


def _plain(value, in_sequence=False):
    """Python/NumPy values as the types PyYAML's safe dumper knows, marked for flow style."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        items = {str(k): _plain(v) for k, v in value.items()}
        return _FlowMapping(items) if in_sequence else items
    if isinstance(value, (list, tuple)):
        items = [_plain(v, in_sequence=True) for v in value]
        scalars = not any(isinstance(v, (dict, list)) for v in items)
        return _FlowSequence(items) if scalars else items
    return value


def dump(document, comment=None):
    """`document` (a dict of sections) as YAML text, optionally under a '# comment' line."""
    text = yaml.dump(_plain(document), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     width=_NEVER_WRAP, allow_unicode=True)
    return (f"# {comment}\n" if comment else "") + text


def scalar(value):
    """One value as YAML text on one line, e.g. for `--set key=VALUE`: 0.01, true, [0.5, 0.25]."""
    text = yaml.dump(_plain(value), Dumper=_Dumper, default_flow_style=True, width=_NEVER_WRAP,
                     allow_unicode=True)
    if text.endswith("\n...\n"):  # PyYAML ends a lone scalar document explicitly
        text = text[:-len("\n...\n")]
    return text.strip()
