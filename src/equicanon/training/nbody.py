"""The charged n-body task (EGNN, Satorras et al. 2021) for Lightning.

Inputs are particle systems ``(B, 5, 7)`` = ``[position, velocity, charge]``; targets the
positions ``(B, 5, 3)`` 1000 integration steps later (:func:`equicanon.data.nbody.make_nbody`,
generated in memory from ``seed``). ``configs/nbody_se3.yaml`` puts a plain network
(:class:`equicanon.models.NBodyTransformer` or :class:`~equicanon.models.NBodyMLP`) behind a
:class:`~equicanon.canonicalizers.ParticleVectorNeurons` canonicalizer, as an
:class:`equicanon.Canonicalized` with ``output: equicanon.actions.Points``: its predictions are
rotated and translated back by the pose, so the model is exactly SE(3)- (or E(3)-) equivariant
(Kaba et al. 2023)::

    equicanon fit --config configs/nbody_se3.yaml
"""

from __future__ import annotations

from torch.utils.data import TensorDataset

from ..data.nbody import make_nbody
from ..errors import check_number, check_positive_int
from .data import SplitDataModule

__all__ = ["NBodyDataModule"]


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
