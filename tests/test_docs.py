"""Every Python example in README.md and docs/*.md runs as written.

The blocks of one file run in order in one namespace. A block right after a line
``<!-- skip-test -->`` is not run (for examples that need optional packages or data).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- skip-test -->\s*)?```python\n(.*?)```", re.S)


def _blocks(path: Path) -> list[str]:
    return [code for skip, code in BLOCK.findall(path.read_text()) if not skip]


@pytest.mark.parametrize("path", [f for f in FILES if _blocks(f)], ids=lambda p: p.name)
def test_examples_run(path: Path) -> None:
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for code in _blocks(path):
        exec(compile(code, str(path), "exec"), namespace)
