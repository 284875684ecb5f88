"""A plain set network: an MLP on the flattened set, which depends on the order of the elements.

    >>> SetMLP(set_size=9, features=4, outputs=10)(torch.randn(2, 9, 4)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_floating, check_positive_int, check_shape

__all__ = ["SetMLP"]


class SetMLP(nn.Module):
    """An MLP on the flattened set: ``(B, n, F) → (B, outputs)``; it depends on the order of the elements.

    ``layers`` hidden layers of width ``hidden`` with ReLU, then a linear layer to ``outputs``.
    Behind a :class:`~equicanon.canonicalizers.Sort` canonicalizer it sees sorted sets and the
    whole model is exactly invariant to ``S(n)``.

    Args:
        set_size: ``n``, elements per set.
        features: ``F``, numbers per element.
        outputs: size of the prediction, e.g. the number of classes.
        hidden, layers: width and number of hidden layers (``layers`` >= 0).
    """

    def __init__(self, set_size: int = 9, features: int = 4, outputs: int = 10, *, hidden: int = 128,
                 layers: int = 2) -> None:
        super().__init__()
        self.set_size = check_positive_int(set_size, "set_size")
        self.features = check_positive_int(features, "features")
        check_positive_int(outputs, "outputs")
        check_positive_int(hidden, "hidden")
        check_positive_int(layers, "layers", minimum=0)
        blocks: list[nn.Module] = []
        width = self.set_size * self.features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, outputs))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``(B, outputs)`` for sets ``x: (B, set_size, features)``."""
        check_shape(x, "B n F", name="sets", n=self.set_size, F=self.features)
        check_floating(x, "sets")
        return self.net(x.flatten(1))
