"""Helpers for policy tests: policy folders written into tmp_path.

A test writes the agreements it needs as YAML text; the shipped
``federation.yaml`` is copied beside them so node ids are the demo's.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

FEDERATION = Path(__file__).resolve().parents[3] / "policies" / "federation.yaml"


@pytest.fixture
def write_policies(tmp_path: Path) -> Callable[..., Path]:
    """``write_policies(name="yaml text", ...)`` -> a policy folder.

    Each keyword becomes ``<name>.yaml`` (underscores become dashes); the
    text is dedented. Calling it again overwrites files in the same folder.
    """
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    shutil.copy(FEDERATION, folder / "federation.yaml")

    def write(**files: str) -> Path:
        for name, text in files.items():
            path = folder / f"{name.replace('_', '-')}.yaml"
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return folder

    return write
