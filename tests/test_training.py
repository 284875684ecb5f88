"""equicanon.training: the Lightning module trains what it should, logs what it says, refuses bad configs."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import equicanon as ec
from equicanon.errors import ConfigError, GroupMismatchError, MissingDependencyError

lightning = pytest.importorskip("lightning")
from equicanon.training import CanonicalizationModule  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers",
    "ignore:.*reference is not registered on the model",
    "ignore:.*but have no `val_dataloader`",
    "ignore:.*The number of training batches",
    "ignore:.*treespec, LeafSpec",
    "ignore:.*module\\(s\\) in eval mode at the start of training",  # frozen parts, on purpose
)


def small_cnn(out: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, out))


def canonicalized(seed: int = 0) -> ec.Canonicalized:
    torch.manual_seed(seed)
    canon = ec.canonicalizers.GroupConv(ec.C(4), in_channels=1, hidden=4, kernel_size=3)
    return ec.Canonicalized(small_cnn(), canon)


def loader(n: int = 16, batch: int = 8, seed: int = 0, regression: bool = False) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 13, 13, generator=gen)
    y = torch.randn(n, 3, generator=gen) if regression else torch.randint(3, (n,), generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def trainer(steps: int = 3) -> lightning.Trainer:
    return lightning.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def test_fit_then_validate_logs_upright_and_transformed_metrics() -> None:
    module = CanonicalizationModule(canonicalized(), prior_weight=1.0, val_action=ec.actions.Image(ec.C(4)))
    t = trainer()
    t.fit(module, loader(), loader(seed=1))
    assert t.global_step == 3
    assert {"train/loss", "train/task", "train/prior"} <= set(t.callback_metrics)
    (metrics,) = t.validate(module, loader(seed=1), verbose=False)
    assert {"val/loss", "val/acc_upright", "val/acc_transformed", "val/identity_rate", "val/pose_agreement"} <= set(metrics)
    # C(4) canonicalization is exact: poses move with the input and the model is invariant.
    assert metrics["val/pose_agreement"] == 1.0
    assert metrics["val/acc_transformed"] == metrics["val/acc_upright"]


def test_plain_model_regression_has_no_canonicalization_metrics() -> None:
    torch.manual_seed(0)
    module = CanonicalizationModule(small_cnn(), task="regression", val_action=ec.actions.Image(ec.C(4)))
    t = trainer(steps=2)
    t.fit(module, loader(regression=True))
    (metrics,) = t.validate(module, loader(seed=1, regression=True), verbose=False)
    assert {"val/mse_upright", "val/mse_transformed"} <= set(metrics)
    assert not any("identity" in k or "pose" in k for k in metrics)


@pytest.mark.parametrize("prior_weight", [0.0, 2.5])
def test_training_loss_is_task_loss_plus_weighted_prior(prior_weight: float) -> None:
    model = canonicalized()
    # exact C(4) moves: the loss of the moved batch is that of the batch as given
    module = CanonicalizationModule(model, prior_weight=prior_weight, transform="group")
    module.train()
    x, y = next(iter(loader()))
    loss = module.training_step((x, y), 0)
    logits, res = model(x, return_canonicalization=True)
    prior = model.canonicalizer.prior_loss(res)
    assert prior > 0
    expected = F.cross_entropy(logits, y) + prior_weight * prior
    torch.testing.assert_close(loss, expected)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("frozen", ["predictor", "canonicalizer"])
def test_frozen_part_is_unchanged_while_the_other_trains(frozen: str) -> None:
    model = canonicalized()
    module = CanonicalizationModule(model, prior_weight=1.0, lr=0.05,
                                    freeze_predictor=frozen == "predictor", freeze_canonicalizer=frozen == "canonicalizer")
    other = "canonicalizer" if frozen == "predictor" else "predictor"
    before = {name: _snapshot(getattr(model, name)) for name in (frozen, other)}
    trainer().fit(module, loader())
    after = {name: _snapshot(getattr(model, name)) for name in (frozen, other)}
    for k, v in before[frozen].items():  # parameters and batch-norm statistics
        assert torch.equal(v, after[frozen][k]), k
    assert any(not torch.equal(v, after[other][k]) for k, v in before[other].items())
    assert all(not p.requires_grad for p in getattr(model, frozen).parameters())


def test_optimizer_has_one_group_per_part_with_its_own_lr() -> None:
    model = canonicalized()
    module = CanonicalizationModule(model, lr=1e-3, canonicalizer_lr=1e-2)
    opt = module.configure_optimizers()
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"predictor", "canonicalizer"}
    assert groups["predictor"]["lr"] == 1e-3 and groups["canonicalizer"]["lr"] == 1e-2
    assert {id(p) for p in groups["predictor"]["params"]} == {id(p) for p in model.predictor.parameters()}
    assert {id(p) for p in groups["canonicalizer"]["params"]} == {id(p) for p in model.canonicalizer.parameters()}

    frozen = CanonicalizationModule(canonicalized(), lr=1e-3, freeze_canonicalizer=True)
    assert [g["name"] for g in frozen.configure_optimizers().param_groups] == ["predictor"]
    assert CanonicalizationModule(canonicalized(), lr=3e-4).configure_optimizers().param_groups[1]["lr"] == 3e-4


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"task": "clasification"}, "did you mean 'classification'"),
    ({"prior_weight": -1.0}, "prior_weight"),
    ({"contrastive_weight": -0.1}, "contrastive_weight"),
    ({"prior_weight": float("nan")}, "prior_weight"),
    ({"lr": 0.0}, "lr"),
    ({"canonicalizer_lr": -1e-3}, "canonicalizer_lr"),
    ({"freeze_predictor": True, "freeze_canonicalizer": True}, "nothing to train"),
    ({"contrastive_weight": 1.0}, "no contrastive loss"),
    ({"val_action": "rot90"}, "val_action"),
    ({"val_action": ec.actions.Trivial()}, "no group"),
])
def test_bad_config_raises_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CanonicalizationModule(canonicalized(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"prior_weight": 1.0}, {"freeze_predictor": True}, {"canonicalizer_lr": 1e-3}])
def test_plain_model_refuses_canonicalizer_options(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CanonicalizationModule(small_cnn(), **kwargs)  # type: ignore[arg-type]


def test_val_action_of_another_group_is_refused() -> None:
    with pytest.raises(GroupMismatchError):
        CanonicalizationModule(canonicalized(), val_action=ec.actions.Image(ec.C(8)))


def test_missing_lightning_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Lightning the plain-torch step and loop still import; the Lightning names say what to install."""
    for name in [m for m in sys.modules if m == "equicanon.training" or m.startswith("equicanon.training.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lightning", None)
    training = importlib.import_module("equicanon.training")
    assert callable(training.step) and callable(training.fit)
    with pytest.raises(MissingDependencyError, match=r'pip install "equicanon\[train\]"'):
        training.CanonicalizationModule  # noqa: B018  (the attribute access is what is tested)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        training.nothing  # noqa: B018
