"""The charged n-body task (EGNN, Satorras et al. 2021) with learned canonicalization (Kaba et al. 2023).

Inputs are particle systems ``(B, 5, 7)`` = ``[position, velocity, charge]``; targets the
positions ``(B, 5, 3)`` 1000 integration steps later (:func:`equicanon.data.nbody.make_nbody`,
generated in memory from ``seed``). :class:`CanonicalizedNBody` puts a plain network
(an MLP on the flattened system, or a small transformer over particles) behind a
:class:`~equicanon.canonicalizers.ParticleVectorNeurons` canonicalizer; its predictions are
rotated and translated back by the pose, so the model is exactly SE(3)- (or E(3)-) equivariant.

    equicanon fit --config configs/nbody_se3.yaml

    >>> model = CanonicalizedNBody("SE3", predictor="mlp")
    >>> model(torch.randn(8, 5, 7)).shape
    torch.Size([8, 5, 3])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..actions import Points
from ..adapt import Canonicalized
from ..canonicalizers import ParticleVectorNeurons
from ..data.nbody import make_nbody
from ..errors import ConfigError, check_choice, check_number, check_positive_int, check_shape
from ..groups import RigidGroup
from ..groups.names import RIGID, parse_group
from .data import SplitDataModule

__all__ = ["NBodyDataModule", "CanonicalizedNBody", "NBodyMLP", "NBodyTransformer", "nbody_predictor",
           "parse_rigid_group", "RIGID_GROUPS", "PREDICTORS"]

RIGID_GROUPS = RIGID
PREDICTORS = ("mlp", "transformer")


def parse_rigid_group(name: str) -> RigidGroup:
    """``"SE3"`` → ``SE3()``, ``"E3"`` → ``E3()`` (also ``"SE(3)"``, ``"E3()"``; case-insensitive).

    :func:`equicanon.groups.names.parse_group` limited to :data:`RIGID_GROUPS`.

    Raises:
        ConfigError: any other name, with a did-you-mean hint.
    """
    group = parse_group(name, RIGID_GROUPS)
    assert isinstance(group, RigidGroup)
    return group


class NBodyMLP(nn.Module):
    """A plain MLP on the flattened system: ``x (B, N, 6 + k)`` → positions ``x[..., :3] + Δ (B, N, 3)``.

    Not equivariant (nor permutation-invariant) by itself. The last layer starts at zero, so
    an untrained model predicts the current positions.

    Args:
        particles: ``N`` (fixed: the input is flattened).
        features: ``k`` invariant columns after the velocities (charges: 1).
        width: hidden units per layer.
        depth: hidden layers (SiLU activations).
    """

    def __init__(self, particles: int = 5, features: int = 1, *, width: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.particles = check_positive_int(particles, "particles")
        self.features = check_positive_int(features, "features", minimum=0)
        layers = _mlp(particles * (6 + self.features), particles * 3, width, depth)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted positions ``(B, N, 3)`` of particles ``x: (B, N, 6 + k)``."""
        check_shape(x, "B N F", name="particles", N=self.particles, F=6 + self.features)
        return x[..., :3] + self.net(x.flatten(1)).view(x.shape[0], self.particles, 3)


class NBodyTransformer(nn.Module):
    """A small transformer over particles: ``x (B, N, 6 + k)`` → positions ``x[..., :3] + Δ (B, N, 3)``.

    Each particle is a token (a linear embedding of its row); pre-norm encoder layers with
    no dropout; a linear head (zero at start) gives each particle's displacement.
    Permutation-equivariant, not rotation-equivariant.

    Args:
        features: ``k`` invariant columns after the velocities.
        width: token width (divisible by ``heads``).
        depth: encoder layers.
        heads: attention heads.
    """

    def __init__(self, features: int = 1, *, width: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.features = check_positive_int(features, "features", minimum=0)
        width = check_positive_int(width, "width")
        heads = check_positive_int(heads, "heads")
        if width % heads:
            raise ConfigError(f"width must be divisible by heads, got width={width}, heads={heads}")
        self.embed = nn.Linear(6 + self.features, width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, check_positive_int(depth, "depth"), enable_nested_tensor=False)
        self.head = _zero(nn.Linear(width, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted positions ``(B, N, 3)`` of particles ``x: (B, N, 6 + k)``."""
        check_shape(x, "B N F", name="particles", F=6 + self.features)
        return x[..., :3] + self.head(self.encoder(self.embed(x)))


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(inputs: int, outputs: int, width: int, depth: int) -> list[nn.Module]:
    width = check_positive_int(width, "width")
    depth = check_positive_int(depth, "depth")
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else width, width), nn.SiLU()]
    return [*layers, _zero(nn.Linear(width, outputs))]


def nbody_predictor(kind: str = "mlp", *, particles: int = 5, features: int = 1, width: int = 128,
                    depth: int = 3, heads: int = 4) -> nn.Module:
    """A plain n-body network: ``"mlp"`` (:class:`NBodyMLP`) or ``"transformer"`` (:class:`NBodyTransformer`)."""
    if check_choice(kind, PREDICTORS, "predictor") == "mlp":
        return NBodyMLP(particles, features, width=width, depth=depth)
    return NBodyTransformer(features, width=width, depth=depth, heads=heads)


class CanonicalizedNBody(Canonicalized):
    """``Canonicalized(nbody_predictor(...), ParticleVectorNeurons(group, ...), output=Points(group))`` for YAML configs.

    ``x (B, N, 6 + k)`` → positions ``(B, N, 3)``, equivariant: rotating/reflecting and
    translating the input system moves the predicted positions the same way.

    Args:
        group: ``"SE3"`` (rotations + translations) or ``"E3"`` (also reflections).
        particles: ``N`` (the MLP predictor needs it).
        features: ``k`` invariant columns (charges: 1).
        predictor: ``"mlp"`` or ``"transformer"``, see :func:`nbody_predictor`.
        width, depth, heads: the predictor.
        hidden, layers, batch_norm: the canonicalizer (:class:`~equicanon.canonicalizers.ParticleVectorNeurons`).
    """

    def __init__(self, group: str = "SE3", *, particles: int = 5, features: int = 1, predictor: str = "mlp",
                 width: int = 128, depth: int = 3, heads: int = 4, hidden: int = 32, layers: int = 2,
                 batch_norm: bool = True) -> None:
        rigid = parse_rigid_group(group)
        network = nbody_predictor(predictor, particles=particles, features=features, width=width, depth=depth,
                                  heads=heads)
        canon = ParticleVectorNeurons(rigid, features, hidden=hidden, layers=layers, batch_norm=batch_norm)
        super().__init__(network, canon, output=Points(rigid))


class NBodyDataModule(SplitDataModule):
    """Charged n-body regression: batches ``(x (B, N, 7), y (B, N, 3))`` float32, simulated in :meth:`build`.

    ``x`` holds ``[position, velocity, charge]`` of each particle after ``burn_in`` steps of a
    random system, ``y`` its positions ``horizon`` steps later (:func:`~equicanon.data.nbody.make_nbody`).
    Each split has its own seeded generator, so splits differ and every run builds the same data.
    Defaults follow EGNN's ``nbody_small``: 5 particles, 1000 steps of ``dt = 0.001`` ahead of the
    state after 3000, 3000 / 2000 / 2000 systems (about half a minute to simulate on a CPU core).

    Args:
        particles, horizon, dt, burn_in: see :func:`~equicanon.data.nbody.make_nbody`.
        train_size, val_size, test_size, batch_size, seed, num_workers: see :class:`SplitDataModule`.
    """

    def __init__(self, particles: int = 5, horizon: int = 1000, dt: float = 0.001, burn_in: int = 3000, *,
                 train_size: int = 3000, val_size: int = 2000, test_size: int = 2000, batch_size: int = 100,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(train_size=train_size, val_size=val_size, test_size=test_size, batch_size=batch_size,
                         seed=seed, num_workers=num_workers)
        self.particles = check_positive_int(particles, "particles")
        self.horizon = check_positive_int(horizon, "horizon")
        self.dt = check_number(dt, "dt", minimum=0.0, strict=True)
        self.burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
        self.save_hyperparameters()

    def build(self, split: str) -> TensorDataset:
        """Simulate the systems of ``split`` (seeded by ``seed`` and the split)."""
        x, y = make_nbody(self.size(split), generator=self.generator(split), particles=self.particles,
                          horizon=self.horizon, dt=self.dt, burn_in=self.burn_in)
        return TensorDataset(x, y)
