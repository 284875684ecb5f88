"""Equivariant building blocks in plain torch."""

from .gconv import (
    EquivariantAvgPool2d,
    GroupBatchNorm,
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    RegularFeatures,
    steerable_basis,
    transform_filters,
)

__all__ = [
    "RegularFeatures",
    "transform_filters",
    "steerable_basis",
    "LiftingConv2d",
    "GroupConv2d",
    "GroupBatchNorm",
    "GroupPool",
    "EquivariantAvgPool2d",
]
