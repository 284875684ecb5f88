"""A plain transformer over the atoms of a molecule, for invariant property regression (QM9).

Inputs are padded molecules ``x (B, N, 6 + k)`` in the particle layout of
:class:`~equicanon.canonicalizers.ParticleVectorNeurons`: ``[position (3), velocity (3; zero for
molecules), k invariant features (e.g. one-hot elements)]`` per atom, with a padding mask
``(B, N)`` (True: a real atom). The network is permutation-invariant and ignores padding, but is
not rotation- or translation-invariant: behind a ``ParticleVectorNeurons(SE3()/E3())``
canonicalizer (:class:`equicanon.Canonicalized`, the default invariant output) it is exactly
invariant to rigid motions.

    >>> import torch
    >>> x, mask = torch.randn(4, 9, 11), torch.arange(9) < torch.tensor([[9], [5], [3], [7]])
    >>> MoleculeTransformer(features=5, outputs=3, width=16, heads=2)(x, mask=mask).shape
    torch.Size([4, 3])
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_mask, check_positive_int, check_shape
from ..nn.masking import masked_mean
from .nbody import token_encoder

__all__ = ["MoleculeTransformer"]


class MoleculeTransformer(nn.Module):
    """Atoms as tokens, pre-norm encoder layers, a masked mean over the real atoms, an MLP head.

    ``forward(x (B, N, 6 + k), mask (B, N) | None)`` → ``(B, outputs)``. Padded atoms are left out of the
    attention (as keys) and of the mean, so a molecule's prediction does not depend on its padding.

    Args:
        features: ``k`` invariant columns after position and velocity (QM9's one-hot elements: 5).
        outputs: predicted properties per molecule.
        width: token width (divisible by ``heads``).
        depth: encoder layers.
        heads: attention heads.
    """

    def __init__(self, features: int = 5, outputs: int = 1, *, width: int = 64, depth: int = 3,
                 heads: int = 4) -> None:
        super().__init__()
        self.features = check_positive_int(features, "features", minimum=0)
        self.outputs = check_positive_int(outputs, "outputs")
        self.embed, self.encoder = token_encoder(6 + self.features, width, depth, heads)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, self.outputs))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Properties ``(B, outputs)`` of molecules ``x (B, N, 6 + k)`` with padding mask ``(B, N)`` (True: real)."""
        check_shape(x, "B N F", name="molecules", F=6 + self.features)
        mask = check_mask(mask, x)
        tokens = self.encoder(self.embed(x), src_key_padding_mask=None if mask is None else ~mask)
        return self.head(masked_mean(self.norm(tokens), mask))
