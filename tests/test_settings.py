"""``equicanon.settings``: a script's settings from a dataclass, its YAML file, the quick file and the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from equicanon.errors import ConfigError
from equicanon.settings import Settings, parse_settings, quick_config, run_script

pytest.importorskip("jsonargparse")


@dataclass
class Section:
    """A section.

    Args:
        steps: optimiser steps.
        lr: learning rate.
    """

    steps: int
    lr: float


@dataclass
class Model:
    """One model.

    Args:
        name: its name.
        transform: group or null.
    """

    name: str
    transform: str | None


@dataclass
class Toy:
    """Settings of a toy experiment.

    Args:
        seed: the seed.
        group: a group name.
        train: training.
        models: the models.
        data_dir: a folder.
    """

    seed: int
    group: str
    train: Section
    models: list[Model]
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed must be at least 0, got {self.seed}")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text("seed: 0\ngroup: C8\ntrain: {steps: 300, lr: 0.001}\n"
                    "models:\n  - {name: a, transform: group}\n  - {name: b, transform: null}\n")
    (tmp_path / "toy.quick.yaml").write_text("train: {steps: 2}\n")
    return path


def test_defaults_come_from_the_yaml_file(config: Path) -> None:
    got = parse_settings(Toy, [], config=config, output_dir="docs")
    assert isinstance(got, Settings) and not got.quick and got.output_dir == Path("docs")
    assert got.values == Toy(0, "C8", Section(300, 0.001), [Model("a", "group"), Model("b", None)])


def test_quick_lays_its_file_over_the_defaults_and_flags_win(config: Path, tmp_path: Path) -> None:
    assert quick_config(config) == tmp_path / "toy.quick.yaml"
    got = parse_settings(Toy, ["--quick", "--seed", "3"], config=config, output_dir="docs")
    assert got.quick and got.values.train == Section(2, 0.001) and got.values.seed == 3
    assert got.output_dir is None  # a quick run writes nothing unless asked
    assert parse_settings(Toy, ["--quick", "--output-dir", "x"], config=config).output_dir == Path("x")
    assert parse_settings(Toy, ["--output_dir", "y"], config=config).output_dir == Path("y")
    assert parse_settings(Toy, ["--quick", "--train.steps", "5"], config=config).values.train.steps == 5


def test_config_files_and_nested_flags_override_single_values(config: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("group: C4\ntrain: {lr: 0.5}\n")
    got = parse_settings(Toy, ["--config", str(mine), "--train.steps", "7"], config=config).values
    assert (got.group, got.train) == ("C4", Section(7, 0.5))


def test_print_config_shows_every_setting(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_settings(Toy, ["--quick", "--print_config"], config=config)
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "steps: 2" in printed and "lr: 0.001" in printed and "name: b" in printed and "data_dir: null" in printed


@pytest.mark.parametrize("argv", [["--seed", "-1"], ["--sed", "1"], ["--train.step", "1"], ["--seed", "one"]])
def test_bad_values_and_unknown_or_abbreviated_flags_exit_with_status_2(config: Path, argv: list[str],
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_settings(Toy, argv, config=config)
    assert exit_.value.code == 2
    assert argv[0].lstrip("-").split(".")[0] in capsys.readouterr().err


def test_missing_files_and_non_dataclasses_are_config_errors(config: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        parse_settings(Toy, [], config=tmp_path / "absent.yaml")
    (tmp_path / "toy.quick.yaml").unlink()
    with pytest.raises(ConfigError, match=r"toy\.quick\.yaml not found"):
        parse_settings(Toy, ["--quick"], config=config)
    with pytest.raises(ConfigError, match="dataclass"):
        parse_settings(dict, [], config=config)  # type: ignore[arg-type]


def test_run_script_turns_equicanon_errors_into_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    def fails(argv: object) -> None:
        raise ConfigError("no such photo")

    assert run_script(fails) == 2 and capsys.readouterr().err == "error: no such photo\n"
    assert run_script(lambda argv: None) == 0
