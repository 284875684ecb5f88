"""Settings of the experiment scripts: YAML files under ``configs/adaptation/``, merged key by key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from equicanon.errors import ConfigError

__all__ = ["merge", "read_settings"]


def merge(base: dict[str, Any], update: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``base`` with the values of ``update`` put in, recursively; keys unknown to ``base`` raise ConfigError."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in out:
            raise ConfigError(f"unknown setting {where}{key!r}; known: {', '.join(sorted(map(str, out)))}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"setting {where}{key} must be a mapping, got {value!r}")
            out[key] = merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def read_settings(path: str | Path, *, quick: bool = False) -> dict[str, Any]:
    """The mapping in the YAML file ``path``; with ``quick``, its ``quick`` section laid over it (and removed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    quick_part = raw.pop("quick", None) or {}
    return merge(raw, quick_part) if quick else raw
