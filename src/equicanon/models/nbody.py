"""Plain particle-system networks for the charged n-body task (EGNN, Satorras et al. 2021).

Inputs are systems ``(B, N, 6 + k)`` = ``[position, velocity, k invariant features]`` per
particle; outputs the predicted positions ``(B, N, 3)`` = ``x[..., :3] + Δ``. Neither network
is rotation-equivariant; behind a :class:`~equicanon.canonicalizers.ParticleVectorNeurons`
canonicalizer (with ``output=ec.actions.Points(group)``) the model is exactly SE(3)- or
E(3)-equivariant.

    >>> NBodyMLP(particles=5)(torch.randn(8, 5, 7)).shape
    torch.Size([8, 5, 3])
    >>> NBodyTransformer(width=16, heads=2)(torch.randn(8, 5, 7)).shape
    torch.Size([8, 5, 3])
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, check_positive_int, check_shape

__all__ = ["NBodyMLP", "NBodyTransformer"]


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class NBodyMLP(nn.Module):
    """An MLP on the flattened system: ``x (B, N, 6 + k)`` → positions ``x[..., :3] + Δ (B, N, 3)``.

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
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        inputs = self.particles * (6 + self.features)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(inputs if i == 0 else width, width), nn.SiLU()]
        self.net = nn.Sequential(*layers, _zero(nn.Linear(width, self.particles * 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted positions ``(B, N, 3)`` of particles ``x: (B, N, 6 + k)``."""
        check_shape(x, "B N F", name="particles", N=self.particles, F=6 + self.features)
        return x[..., :3] + self.net(x.flatten(1)).view(x.shape[0], self.particles, 3)


def token_encoder(inputs: int, width: int, depth: int, heads: int) -> tuple[nn.Linear, nn.TransformerEncoder]:
    """A linear embedding of each row ``(…, inputs) → (…, width)`` and ``depth`` pre-norm encoder layers (GELU, no
    dropout, feed-forward ``2 width``): the trunk of the particle and molecule transformers.

    Raises:
        ConfigError: ``width``, ``depth`` or ``heads`` not positive, or ``width`` not divisible by ``heads``.
    """
    width = check_positive_int(width, "width")
    heads = check_positive_int(heads, "heads")
    if width % heads:
        raise ConfigError(f"width must be divisible by heads, got width={width}, heads={heads}")
    embed = nn.Linear(inputs, width)
    layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return embed, nn.TransformerEncoder(layer, check_positive_int(depth, "depth"), enable_nested_tensor=False)


class NBodyTransformer(nn.Module):
    """A small transformer over particles: ``x (B, N, 6 + k)`` → positions ``x[..., :3] + Δ (B, N, 3)``.

    Each particle is a token (a linear embedding of its row); pre-norm encoder layers with
    no dropout; a linear head (zero at start) gives each particle's displacement.
    Permutation-equivariant, not rotation-equivariant; any number of particles.

    Args:
        features: ``k`` invariant columns after the velocities.
        width: token width (divisible by ``heads``).
        depth: encoder layers.
        heads: attention heads.
    """

    def __init__(self, features: int = 1, *, width: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.features = check_positive_int(features, "features", minimum=0)
        self.embed, self.encoder = token_encoder(6 + self.features, width, depth, heads)
        self.head = _zero(nn.Linear(width, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted positions ``(B, N, 3)`` of particles ``x: (B, N, 6 + k)``."""
        check_shape(x, "B N F", name="particles", F=6 + self.features)
        return x[..., :3] + self.head(self.encoder(self.embed(x)))
