"""Packaging: the import is light and clean, the source is lint- and type-clean, and typing information ships."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

import equicanon as ec

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("lightning", "pytorch_lightning", "jsonargparse", "matplotlib", "hypothesis", "pytest", "kornia", "timm",
          "torchvision", "tensorboard")
IMPORT_BUDGET_S = 1.0


def run_python(code: str, cwd: Path) -> str:
    """Run ``code`` in a fresh interpreter (outside the repository) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_groups_print_as_their_constructor_calls(tmp_path: Path) -> None:
    out = run_python("import equicanon as ec; print(ec.C(8), ec.D(4), ec.SO3())", tmp_path)
    assert out.strip() == "C(8) D(4) SO3()"


def test_import_loads_no_extras(tmp_path: Path) -> None:
    code = f"import sys, json, equicanon; print(json.dumps([m for m in {list(EXTRAS)!r} if m in sys.modules]))"
    assert json.loads(run_python(code, tmp_path)) == []


def test_import_on_top_of_torch_is_fast(tmp_path: Path) -> None:
    code = ("import time, torch\n"
            "t0 = time.perf_counter()\n"
            "import equicanon\n"
            "print(time.perf_counter() - t0)")
    run_python(code, tmp_path)  # the first run may write bytecode caches
    seconds = float(run_python(code, tmp_path))
    print(f"import equicanon after torch: {seconds * 1e3:.1f} ms (budget {IMPORT_BUDGET_S * 1e3:.0f} ms)")
    assert seconds < IMPORT_BUDGET_S


def test_public_names_exist() -> None:
    for module in (ec, ec.groups, ec.actions, ec.errors, ec.testing):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, f"{module.__name__}.__all__ names missing attributes: {missing}"


def test_version_matches_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert ec.__version__ == meta["project"]["version"]
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["equicanon"]


def test_ruff_is_clean() -> None:
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed")
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "src", "tests",
               "conftest.py"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    """The package ships py.typed, so its annotations are checked: ``python -m mypy`` ([tool.mypy] in pyproject.toml)."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the dev extra: pip install -e '.[dev]')")
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_py_typed_is_in_the_package() -> None:
    assert resources.files("equicanon").joinpath("py.typed").is_file()


def test_py_typed_is_in_the_wheel(tmp_path: Path) -> None:
    """Build a wheel from a copy of the sources (offline, no build isolation) and look inside."""
    if importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("pip") is None:
        pytest.skip("needs pip and setuptools to build a wheel")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(project)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("equicanon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "equicanon/py.typed" in names
    assert "equicanon/groups/planar.py" in names and "equicanon/actions/image.py" in names
