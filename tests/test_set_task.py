"""The generated set task (median digit of a set), its data module, and Sort-canonicalized vs plain MLPs on it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

import equicanon as ec
from equicanon.data.sets import SET_TARGETS, decode_digits, encode_digits, make_set_task, set_target
from equicanon.errors import ConfigError, DTypeError, ShapeError

pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")
from equicanon.cli import main
from equicanon.models import SetMLP
from equicanon.training.sets import SetDataModule

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "set_sort_sn.yaml"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shuffled(x: torch.Tensor, seed: int) -> torch.Tensor:
    group = ec.S(x.shape[1])
    return ec.actions.Set(group)(group.sample(x.shape[0], generator=_gen(seed)), x)


# the task --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", SET_TARGETS)
def test_same_seed_same_sets_other_seed_other_sets(target: str) -> None:
    x1, y1 = make_set_task(64, set_size=7, generator=_gen(3), target=target)
    x2, y2 = make_set_task(64, set_size=7, generator=_gen(3), target=target)
    x3, _ = make_set_task(64, set_size=7, generator=_gen(4), target=target)
    assert x1.shape == (64, 7, 4) and x1.dtype == torch.float32 and y1.shape == (64,) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert int(y1.min()) >= 0 and int(y1.max()) <= 9


@pytest.mark.parametrize(("digits", "median", "largest", "spread"), [
    ([[3, 1, 4, 1, 5, 9, 2, 6, 5]], 4, 9, 8),   # sorted 1 1 2 3 [4] 5 5 6 9
    ([[7, 2, 5, 0]], 2, 7, 7),                  # even size: the lower median, sorted 0 [2] 5 7
    ([[6]], 6, 6, 0),
    ([[8, 8, 8]], 8, 8, 0),
])
def test_targets_of_hand_made_sets(digits: list[list[int]], median: int, largest: int, spread: int) -> None:
    values = torch.tensor(digits)
    assert set_target(values, "median").tolist() == [median]
    assert set_target(values, "max").tolist() == [largest]
    assert set_target(values, "range").tolist() == [spread]
    x = encode_digits(values, features=3, generator=_gen())
    assert x.shape == (1, len(digits[0]), 3)
    assert torch.equal(decode_digits(x), values)  # the first feature encodes the digit


@pytest.mark.parametrize("target", SET_TARGETS)
def test_labels_are_the_target_of_the_encoded_digits_in_any_order(target: str) -> None:
    x, y = make_set_task(256, set_size=9, generator=_gen(1), target=target)
    values = decode_digits(x)
    assert torch.equal(set_target(values, target), y)
    for seed in range(3):  # the data is consistent: a permuted set has the same label
        moved = _shuffled(x, seed)
        assert not torch.equal(moved, x)
        assert torch.equal(set_target(decode_digits(moved), target), y)
    assert float((x[..., 0] - (values.float() * 2 / 9 - 1)).abs().max()) < 0.15  # noise 0.02 around the code


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n": 0}, "n: expected an integer >= 1"),
    ({"set_size": 0}, "set_size: expected an integer >= 1"),
    ({"features": 0}, "features: expected an integer >= 1"),
    ({"digits": 1}, "digits: expected an integer >= 2"),
    ({"target": "medain"}, "did you mean 'median'"),
    ({"noise": -0.1}, "noise: expected a finite number >= 0"),
    ({"noise": math.nan}, "noise: expected a finite number >= 0"),
    ({"generator": None}, "generator: expected a seeded CPU torch.Generator, got NoneType"),
    ({"set_size": 2.5}, "set_size: expected an integer"),
])
def test_bad_task_arguments_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"n": 4, "set_size": 5, "generator": _gen()} | kwargs
    n = args.pop("n")
    with pytest.raises(ConfigError, match=match):
        make_set_task(n, **args)  # type: ignore[arg-type]


def test_bad_digit_tensors_are_typed_errors() -> None:
    with pytest.raises(DTypeError, match="integer"):
        set_target(torch.rand(2, 3))
    with pytest.raises(ShapeError):
        set_target(torch.zeros(2, 3, 1, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"digits in 0\.\.9"):
        encode_digits(torch.tensor([[3, 10]]))


# the data module -------------------------------------------------------------------------------------


def test_datamodule_splits_are_seeded_and_training_batches_are_reshuffled() -> None:
    dm = SetDataModule(set_size=5, features=3, train_size=16, val_size=8, test_size=8, batch_size=8, seed=2)
    dm.setup(None)
    again = SetDataModule(set_size=5, features=3, train_size=16, val_size=8, test_size=8, batch_size=8, seed=2)
    again.setup(None)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(dm, f"{split}_set").tensors[0], getattr(again, f"{split}_set").tensors[0])
    assert not torch.equal(dm.train_set.tensors[0][:8], dm.val_set.tensors[0])  # type: ignore[union-attr]
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (8, 5, 3) and y.shape == (8,) and y.dtype == torch.int64
    mx, my = dm.augment((x, y), _gen(5))
    assert torch.equal(my, y) and not torch.equal(mx, x)
    # the same sets, elements in another order
    assert torch.equal(mx.sort(dim=1).values, x.sort(dim=1).values)
    assert torch.equal(set_target(decode_digits(mx), "median"), y)
    still = SetDataModule(set_size=5, features=3, train_size=16, val_size=8, test_size=8, shuffle_train=False)
    assert still.augment((x, y), _gen(5))[0] is x


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"target": "mean"}, "did you mean 'median'"),
    ({"digits": 1}, "digits"),
    ({"noise": -1.0}, "noise"),
    ({"noise": "0.1"}, "noise"),
    ({"shuffle_train": "yes"}, "shuffle_train"),
    ({"set_size": 0}, "set_size"),
])
def test_bad_datamodule_arguments_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SetDataModule(**kwargs)  # type: ignore[arg-type]


# the models ------------------------------------------------------------------------------------------


def sorted_mlp(set_size: int = 9, features: int = 4, outputs: int = 10, *, hidden: int = 128,
               scorer_hidden: int = 32, temperature: float = 1.0) -> ec.Canonicalized:
    """What configs/set_sort_sn.yaml builds: the plain MLP behind a Sort canonicalizer."""
    predictor = SetMLP(set_size, features, outputs, hidden=hidden, layers=2)
    canon = ec.canonicalizers.Sort(ec.S(set_size), features, hidden=scorer_hidden, layers=2, temperature=temperature)
    return ec.Canonicalized(predictor, canon)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_canonicalized_set_mlp_is_exactly_invariant(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    group = ec.S(9)
    model = sorted_mlp(9, 4, 10, hidden=32, scorer_hidden=8).eval()
    x, _ = make_set_task(6, set_size=9, generator=_gen(7))
    action = ec.actions.Set(group)
    ec.testing.assert_invariant(model, group, action, x, dtype=dtype, atol=0.0, rtol=0.0)
    ec.testing.assert_invariant(model, group, action, x, dtype=dtype, elements=group.sample(12, generator=_gen(8)),
                                atol=0.0, rtol=0.0)
    assert model.group == group and model(x).shape == (6, 10)


def test_plain_set_mlp_depends_on_order() -> None:  # what the canonicalizer fixes
    torch.manual_seed(0)
    group = ec.S(9)
    x, _ = make_set_task(6, set_size=9, generator=_gen(7))
    report = ec.testing.equivariance_error(SetMLP(9, 4, 10, hidden=32), group, ec.actions.Set(group), ec.actions.Trivial(), x)
    assert not report.passed and report.max_error > 1e-3


def test_model_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        sorted_mlp(temperature=0.0)
    with pytest.raises(ConfigError, match="layers"):
        SetMLP(layers=-1)
    with pytest.raises(ConfigError, match="hidden"):
        sorted_mlp(scorer_hidden=0)
    with pytest.raises(ShapeError, match=r"\(B, 9, 4\)"):
        sorted_mlp()(torch.randn(2, 8, 4))
    with pytest.raises(ShapeError, match="n=9"):
        SetMLP()(torch.randn(2, 8, 4))


def test_the_plain_baseline_replaces_the_model_on_the_command_line(tmp_path: Path) -> None:
    from equicanon.training.cli import build_cli

    cli = build_cli(["--config", str(CONFIG), "--model.model=equicanon.models.SetMLP", "--trainer.logger=false",
                     f"--trainer.default_root_dir={tmp_path}"], run=False)  # the baseline of the config's header
    assert type(cli.model.model) is SetMLP and cli.model.model.set_size == 9


# training --------------------------------------------------------------------------------------------


def test_config_fits_validates_and_tests_from_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--config", str(CONFIG), "--data.train_size=16", "--data.val_size=8", "--data.test_size=8",
            "--data.batch_size=8", f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu",
            "--trainer.devices=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.log_every_n_steps=1"]
    assert main(["fit", *args, "--trainer.max_steps=2", "--trainer.max_epochs=1"]) == 0
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert checkpoints
    for stage in ("validate", "test"):
        assert main([stage, *args, f"--ckpt_path={checkpoints[0]}"]) == 0
    out = capsys.readouterr().out
    assert "val/pose_agreement" in out and "test/acc_transformed" in out and "test/acc_upright" in out


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Adam on random batches of 64 whose elements are re-shuffled every step; returns the seconds taken."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen, start = _gen(1), time.perf_counter()
    for _ in range(steps):
        rows = torch.randint(0, len(x), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(_shuffled(x[rows], int(torch.randint(0, 2**31, (1,), generator=gen)))),
                                                 y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(dim=1) == y).float().mean())


def test_canonicalized_mlp_beats_plain_mlp_on_shuffled_sets() -> None:
    x, y = make_set_task(2048, set_size=8, generator=_gen(0))
    test_x, test_y = make_set_task(1000, set_size=8, generator=_gen(1))
    test_x = _shuffled(test_x, 2)
    torch.manual_seed(0)
    plain = SetMLP(8, 4, 10, hidden=64)
    torch.manual_seed(0)
    canon = sorted_mlp(8, 4, 10, hidden=64, scorer_hidden=32)
    for model in (plain, canon):  # the same budget: 300 steps of 64 sets
        _train(model, x, y, steps=300)
    plain_acc, canon_acc = _accuracy(plain, test_x, test_y), _accuracy(canon, test_x, test_y)
    majority = float((test_y == test_y.mode().values).float().mean())
    # measured (seeds 0-3 of a probe with this setup): plain 0.41-0.47, canonicalized 0.82-0.88, majority ~0.24
    assert canon_acc > plain_acc + 0.15, (canon_acc, plain_acc, majority)
    assert canon_acc > majority + 0.3, (canon_acc, majority)
