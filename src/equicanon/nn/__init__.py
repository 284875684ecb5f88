"""Equivariant building blocks in plain torch: group convolutions (images), vector neurons
(3-D points), DeepSets (sets). Plain predictor networks live in :mod:`equicanon.models`."""

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
from .masking import masked_mean
from .sets import DeepSetsLayer, DeepSetsScorer
from .vector_neurons import VNBatchNorm, VNEdgeConv, VNInvariant, VNLeakyReLU, VNLinear, VNMeanPool, knn

__all__ = [
    "RegularFeatures",
    "transform_filters",
    "steerable_basis",
    "LiftingConv2d",
    "GroupConv2d",
    "GroupBatchNorm",
    "GroupPool",
    "EquivariantAvgPool2d",
    "knn",
    "masked_mean",
    "VNLinear",
    "VNLeakyReLU",
    "VNBatchNorm",
    "VNMeanPool",
    "VNInvariant",
    "VNEdgeConv",
    "DeepSetsLayer",
    "DeepSetsScorer",
]
