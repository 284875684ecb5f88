"""Canonicalizers: networks that find the pose of an input and undo it.

Every canonicalizer is an ``nn.Module`` returning a :class:`Canonicalization`
(``canonical``, ``pose``, ``logits``), with ``prior_loss(result)``. They are
registered by name: ``create("group_conv", group=C(8), in_channels=3)``.
"""

from . import functional
from .base import Canonicalization, Canonicalizer, RegistryCase, RegistryEntry, available, create, entry, register
from .contrastive import Contrastive
from .image import GroupConv, center_crop_resize
from .points import ParticleVectorNeurons, VectorNeurons
from .sets import Sort
from .testtime import TestTime

__all__ = [
    "Canonicalization",
    "Canonicalizer",
    "RegistryCase",
    "RegistryEntry",
    "GroupConv",
    "Contrastive",
    "VectorNeurons",
    "ParticleVectorNeurons",
    "Sort",
    "TestTime",
    "available",
    "center_crop_resize",
    "create",
    "entry",
    "functional",
    "register",
]
