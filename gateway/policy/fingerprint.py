"""A stable fingerprint of an agreement's meaning.

Deliveries and refusals are stamped with an agreement's id and version, so
one version must always mean one text. The fingerprint is taken over the
loaded model, not the file's bytes, so comments and layout do not count, and
it is the same in every process (sets are sorted, never iterated in hash
order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import date, datetime
from enum import Enum
from typing import Any

from gateway.policy.model import Agreement

# Where the agreement came from is not part of what it says.
_NOT_MEANING = {"source"}


def fingerprint(agreement: Agreement) -> str:
    text = json.dumps(_canonical(agreement), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _canonical(getattr(value, field.name))
            for field in dataclasses.fields(value)
            if field.name not in _NOT_MEANING
        }
    if isinstance(value, frozenset | set):
        return sorted((_canonical(item) for item in value), key=repr)
    if isinstance(value, tuple | list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value
