"""Reading YAML files so that every problem can name its file, line and key.

Agreement files and node configs are both YAML written by people; an error
that says ``policies/central-china.yaml:14: flows[0].levels: ...`` lets an
admin fix it without guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from node.errors import ConfigError

KeyPath = Sequence[str | int]


@dataclass
class YamlDocument:
    """The data of one YAML file and the line of every key in it."""

    path: Path
    data: Any
    root: yaml.Node | None

    def line_of(self, keys: KeyPath) -> int:
        """1-based line of the deepest key along ``keys`` that exists.

        A key's own line is used (not its value's), so a problem with a
        missing sub-key points at the parent key that lacks it.
        """
        node = self.root
        line = node.start_mark.line + 1 if node is not None else 1
        for key in keys:
            found = _child(node, key)
            if found is None:
                break
            mark, node = found
            line = mark.start_mark.line + 1
        return line

    def problem(self, keys: KeyPath, message: str) -> str:
        """``file:line: key.path: message``."""
        where = format_keys(keys) or "(top)"
        return f"{self.path}:{self.line_of(keys)}: {where}: {message}"


def format_keys(keys: KeyPath) -> str:
    text = ""
    for key in keys:
        text += (
            f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
        )
    return text


def load_yaml(path: Path) -> YamlDocument:
    """Parse ``path``; raise ConfigError naming the file and line on bad syntax."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML: {exc.problem}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    return YamlDocument(path=path, data=data, root=root)


def _child(
    node: yaml.Node | None, key: str | int
) -> tuple[yaml.Node, yaml.Node] | None:
    """(the node that marks the key, its value), or None if absent."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == str(key):
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int):
        if 0 <= key < len(node.value):
            return node.value[key], node.value[key]
    return None
