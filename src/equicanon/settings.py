"""Settings of the experiment and benchmark scripts: a dataclass, a YAML file and the command line.

The same mechanism as ``equicanon fit`` (jsonargparse): a script describes its settings as a dataclass
(nested dataclasses for sections, each field with its type and a docstring line), its defaults live in a
YAML file, and :func:`parse_settings` reads both::

    python experiments/adaptation_fashion_mnist.py                       # configs/experiments/adaptation_fashion_mnist.yaml
    python experiments/adaptation_fashion_mnist.py --finetune.steps 100  # any field, from the command line
    python experiments/adaptation_fashion_mnist.py --config mine.yaml    # a (partial) YAML file laid over the defaults
    python experiments/adaptation_fashion_mnist.py --print_config        # every setting, as YAML, then exit
    python experiments/adaptation_fashion_mnist.py --quick               # a seconds-long smoke run

``--quick`` means the same in every script: lay ``<config>.quick.yaml`` (the tiny sizes next to the
defaults, e.g. ``configs/experiments/adaptation_fashion_mnist.quick.yaml``) over the defaults, so the
whole pipeline runs in seconds and writes nothing unless ``--output-dir`` is given. Precedence, lowest
first: the dataclass defaults, the YAML file, the quick file, ``--config`` files, single flags.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import ConfigError, EquicanonError, MissingDependencyError

__all__ = ["Settings", "parse_settings", "quick_config", "run_script"]

T = TypeVar("T")


@dataclass(frozen=True)
class Settings(Generic[T]):
    """What :func:`parse_settings` read.

    Attributes:
        values: the script's settings dataclass, filled in.
        quick: ``--quick`` was given (tiny sizes: a smoke run).
        output_dir: where to write results; ``None``: write nothing (``--quick`` without ``--output-dir``).
    """

    values: T
    quick: bool
    output_dir: Path | None


def quick_config(config: str | Path) -> Path:
    """The quick file of a settings file: ``dir/name.yaml`` -> ``dir/name.quick.yaml``."""
    config = Path(config)
    return config.with_name(f"{config.name.removesuffix('.yaml')}.quick.yaml")


def _build(cls: Any, values: dict[str, Any]) -> Any:
    """``cls(**values)``, nested dataclasses (still mappings) built too; checks in ``__post_init__`` run."""
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        kind = hints.get(f.name)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = _build(kind, value)
        kwargs[f.name] = value
    return cls(**kwargs)


def parse_settings(settings: type[T], argv: Sequence[str] | None = None, *, config: str | Path,
                   output_dir: str | Path | None = None, description: str | None = None) -> Settings[T]:
    """Read a script's settings: defaults from ``config`` (YAML), ``--quick``, ``--config``, single flags.

    Args:
        settings: a dataclass; its fields are the settings (nested dataclasses give ``--section.field``).
        argv: the command line without the program name (default ``sys.argv[1:]``).
        config: the YAML file with the script's defaults; its quick file is :func:`quick_config`.
        output_dir: where a full run writes its results unless ``--output-dir`` says otherwise.
        description: the ``--help`` text (e.g. the script's docstring).

    Returns:
        :class:`Settings`. ``--print_config`` prints the settings as YAML and exits; a bad value or an
        unknown flag exits with status 2 and a message (jsonargparse's parser).

    Raises:
        ConfigError: ``config`` or its quick file does not exist.
        MissingDependencyError: jsonargparse is not installed.
    """
    try:
        from jsonargparse import ActionConfigFile, ArgumentParser
    except ImportError as e:
        raise MissingDependencyError('experiment settings need jsonargparse: pip install "equicanon[train]"') from e
    if not dataclasses.is_dataclass(settings):
        raise ConfigError(f"settings must be a dataclass, got {settings!r}")
    args = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in args
    files = [Path(config)] + ([quick_config(config)] if quick else [])
    for file in files:
        if not file.is_file():
            raise ConfigError(f"settings file {file} not found")
    parser = ArgumentParser(description=description, default_config_files=[str(f) for f in files], allow_abbrev=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of settings, laid over the defaults")
    parser.add_argument("--quick", action="store_true",
                        help=f"a seconds-long smoke run: lay {quick_config(config).name} over the defaults; "
                             "writes nothing unless --output-dir is given")
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", type=str | None, default=None,
                        help=f"where to write the results (default: {output_dir}; none with --quick)")
    parser.add_class_arguments(settings)
    namespace = parser.parse_args(args)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    values = instantiate(namespace).as_dict()
    names = {f.name for f in dataclasses.fields(settings)}
    try:
        filled = _build(settings, {k: v for k, v in values.items() if k in names})
    except (EquicanonError, TypeError, ValueError) as e:
        parser.error(str(e))
    chosen = namespace.output_dir
    out = Path(chosen) if chosen is not None else (None if quick or output_dir is None else Path(output_dir))
    return Settings(filled, quick, out)


def run_script(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """``main(argv)``, with equicanon's errors (missing data, bad settings) printed as one line: exit status 2."""
    try:
        main(argv)
    except EquicanonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
