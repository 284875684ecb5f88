"""The canonicalizer protocol, its result object and the registry."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from ..actions import Action
from ..errors import ConfigError, GroupMismatchError, suggest
from ..groups import Group

__all__ = ["Canonicalization", "Canonicalizer", "RegistryEntry", "RegistryCase", "register", "create", "available", "entry"]


@dataclass
class Canonicalization:
    """What a canonicalizer found for a batch.

    Attributes:
        canonical: ``h(x)⁻¹·x``, same shape as the input; invariant: ``canonical(g·x) = canonical(x)``.
        pose: ``h(x)``, a batch of group elements; equivariant: ``pose(g·x) = g pose(x)``.
        group: the group the pose lives in.
        logits: ``(B, |G|)`` regular scores for discrete groups (``None`` otherwise).
        extras: method-specific tensors (e.g. embeddings of the transformed copies).
    """

    canonical: torch.Tensor
    pose: torch.Tensor
    group: Group
    logits: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Canonicalizer(nn.Module, abc.ABC):
    """Base class: an ``nn.Module`` mapping inputs to a :class:`Canonicalization`.

    Subclasses set ``group`` (where poses live) and ``action`` (how the group
    acts on inputs), and keep no per-call state on ``self``.
    """

    group: Group
    action: Action

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> Canonicalization:
        """Canonicalize a batch ``x``."""

    def __call__(self, x: torch.Tensor) -> Canonicalization:  # typed for users and checkers
        return super().__call__(x)  # type: ignore[no-any-return]

    @abc.abstractmethod
    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """0-dim loss pulling poses towards the identity (Mondal et al., 2023), for upright training data.

        ``target`` (a batch of group elements, one per input) replaces the identity: the
        prior for upright inputs moved by ``target``, since ``pose(g·x) = g`` when ``pose(x) = e``.
        """

    def contrastive_loss(self, result: Canonicalization) -> torch.Tensor:
        """0-dim contrastive loss of optimisation-based canonicalizers; others have none."""
        raise ConfigError(f"{type(self).__name__} has no contrastive loss; use canonicalizers.Contrastive")

    def check_action(self, action: Action, what: str = "the output action") -> None:
        """Raise :class:`GroupMismatchError` if ``action`` acts with a group other than ``self.group``."""
        if action.group is not None and action.group != self.group:
            raise GroupMismatchError(f"{what} {action!r} acts with {action.group}, but the canonicalizer uses {self.group}")


@dataclass(frozen=True)
class RegistryCase:
    """A small configuration the registry test builds and checks.

    ``make()`` returns the canonicalizer; ``input_shape`` gives a batch it accepts
    (a ``{size}`` placeholder in an image shape is filled with each tested size).
    ``exact`` says whether invariance must hold to rounding error on the group's
    testing elements (False for interpolating continuous canonicalizers).
    """

    name: str
    make: Callable[[], Canonicalizer]
    input_shape: tuple[int | str, ...]
    exact: bool = True


@dataclass(frozen=True)
class RegistryEntry:
    """A registered canonicalizer class with the configurations the registry test checks."""

    name: str
    cls: type[Canonicalizer]
    test_cases: Callable[[], list[RegistryCase]]


_REGISTRY: dict[str, RegistryEntry] = {}

C = TypeVar("C", bound=type)


def register(name: str, test_cases: Callable[[], list[RegistryCase]]) -> Callable[[C], C]:
    """Class decorator: register a canonicalizer under ``name`` for :func:`create`, configs and the CLI."""

    def wrap(cls: C) -> C:
        if name in _REGISTRY:
            raise ConfigError(f"a canonicalizer named {name!r} is already registered ({_REGISTRY[name].cls.__name__})")
        _REGISTRY[name] = RegistryEntry(name, cls, test_cases)
        return cls

    return wrap


def available() -> list[str]:
    """Names of all registered canonicalizers."""
    return sorted(_REGISTRY)


def entry(name: str) -> RegistryEntry:
    """The registry entry for ``name``; unknown names raise ConfigError with a suggestion."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown canonicalizer {name!r}; registered: {', '.join(available())}{suggest(name, _REGISTRY)}"
        )
    return _REGISTRY[name]


def create(name: str, **kwargs: Any) -> Canonicalizer:
    """Build a registered canonicalizer by name: ``create("group_conv", group=C(8), in_channels=3)``."""
    return entry(name).cls(**kwargs)
