"""The canonicalizer protocol, its result object and the registry."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from torch import nn

from ..actions import Action, Image
from ..actions.functional import require_square
from ..errors import (
    ConfigError,
    DeviceError,
    DTypeError,
    GroupMismatchError,
    ShapeError,
    check_finite,
    format_shape,
    suggest,
)
from ..groups import Group, as_group
from ..groups.base import reads_values

if TYPE_CHECKING:
    from ..groups import FiniteGroup

__all__ = ["Canonicalization", "Canonicalizer", "RegistryEntry", "RegistryCase", "register", "create", "available", "entry",
           "call_with_typed_errors"]


@dataclass
class Canonicalization:
    """What a canonicalizer found for a batch.

    Attributes:
        canonical: ``h(x)⁻¹·x``, same shape as the input; invariant: ``canonical(g·x) = canonical(x)``.
        pose: ``h(x)``, a batch of group elements; equivariant: ``pose(g·x) = g pose(x)``.
        group: the group the pose lives in.
        logits: ``(B, |G|)`` regular scores for discrete groups (``None`` otherwise).
        extras: method-specific tensors (e.g. embeddings of the transformed copies).
        margin: ``(B,)``, ``>= 0``, detached: how far each sample's pose is from the runner-up, 0 at a tie
            (the pose is then fixed by a deterministic tie-break, not by the input). Argmax poses (``C(n)``,
            ``D(n)``, :class:`~equicanon.canonicalizers.Contrastive`, the coarse pose of refined ``SO2()`` /
            ``O2()``): the largest minus the second-largest logit (of the scores that picked the pose,
            Gumbel noise included); ``S(n)``: the smallest gap between consecutive sorted scores;
            Gram–Schmidt poses: the smallest relative residual of the orthonormalised vectors (in ``[0, 1]``,
            :func:`~equicanon.canonicalizers.functional.gram_schmidt_with_margin`). ``inf`` where there is
            no runner-up (``|G| = 1``, ``n = 1``). Every registered canonicalizer sets it; ``None`` for
            results built without one.
    """

    canonical: torch.Tensor
    pose: torch.Tensor
    group: Group
    logits: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    margin: torch.Tensor | None = None


class Canonicalizer(nn.Module, abc.ABC):
    """Base class: an ``nn.Module`` mapping inputs to a :class:`Canonicalization`.

    Subclasses set ``group`` (where poses live) and ``action`` (how the group
    acts on inputs), and keep no per-call state on ``self``. They take ``check_inputs`` and
    pass it on to ``super().__init__`` (one that passes nothing gets the default: checked).

    Args:
        check_inputs: refuse floating inputs holding NaN or Inf with an
            :class:`~equicanon.errors.InputValueError` naming how many entries are bad and where, before any
            network sees them (a non-finite input has no pose). One ``torch.isfinite(x).all()`` per call, where
            the group checks read values too (:func:`equicanon.groups.base.reads_values`): on CPU tensors, outside
            ``torch.compile`` / ``torch.export`` / ``torch.jit.trace`` graph capture. Inputs on an accelerator are
            not checked, because reading the result would make every forward wait for the device; check those
            with :func:`equicanon.errors.check_finite` where a host sync is acceptable. ``False``: no check;
            non-finite inputs give non-finite outputs for their samples.
    """

    group: Group
    action: Action
    #: see ``check_inputs`` above; a plain attribute, so ``canon.check_inputs = False`` works too
    check_inputs: bool = True
    #: whether training moves the poses (gradients reach the logits or pose network); False where the poses come
    #: from a frozen model (:class:`~equicanon.canonicalizers.TestTime`)
    trainable: bool = True

    def __init__(self, *, check_inputs: bool = True) -> None:
        super().__init__()
        self.check_inputs = bool(check_inputs)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> Canonicalization:
        """Canonicalize a batch ``x``."""

    #: whether :meth:`forward` takes ``mask=`` (a padding mask ``(B, N)`` of variable-size point sets)
    accepts_mask: bool = False

    def __call__(self, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> Canonicalization:  # typed for users
        """Canonicalize ``x`` (see :meth:`forward`); ``mask``: ``(B, N)`` bool, True for the real elements of a
        padded batch, for canonicalizers that take one (:attr:`accepts_mask`; else a :class:`ConfigError`).

        Raises:
            ShapeError: a non-batch dimension of ``x`` is 0 (an empty batch, ``B = 0``, is fine).
            InputValueError: ``x`` holds NaN or Inf (CPU inputs, unless ``check_inputs`` is False).
            DeviceError / DTypeError: ``x`` is on another device, or in another floating dtype, than
                the parameters, and the network failed on it (use ``canonicalizer.to(x)`` or autocast).
        """
        if isinstance(x, torch.Tensor) and x.ndim > 1 and 0 in x.shape[1:]:
            raise ShapeError(f"x: expected non-empty samples (every dimension but the batch >= 1), "
                             f"got shape {format_shape(x.shape)}")
        group = getattr(self.action, "group", None)
        if isinstance(self.action, Image) and group is not None and group.needs_square_images \
                and isinstance(x, torch.Tensor) and x.ndim >= 2:
            require_square(x, repr(group))  # before any network sees a (cropped) view of a non-square image
        if self.check_inputs and isinstance(x, torch.Tensor) and reads_values(x):
            check_finite(x, f"{type(self).__name__}: x")
        if mask is None:
            return call_with_typed_errors(self, super().__call__, x)
        if not self.accepts_mask:
            raise ConfigError(f"{type(self).__name__} takes no padding mask; canonicalizers of variable-size point "
                              "sets that do: VectorNeurons, ParticleVectorNeurons")
        return call_with_typed_errors(self, super().__call__, x, mask=mask)

    @abc.abstractmethod
    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """0-dim loss pulling poses towards the identity (Mondal et al., 2023), for upright training data.

        ``target`` (a batch of group elements, one per input) replaces the identity: the
        prior for upright inputs moved by ``target``, since ``pose(g·x) = g`` when ``pose(x) = e``.
        """

    def contrastive_loss(self, result: Canonicalization) -> torch.Tensor:
        """0-dim contrastive loss of optimisation-based canonicalizers; others have none."""
        raise ConfigError(f"{type(self).__name__} has no contrastive loss; use canonicalizers.Contrastive")

    @property
    def has_contrastive_loss(self) -> bool:
        """Whether this canonicalizer defines :meth:`contrastive_loss` (e.g. :class:`~equicanon.canonicalizers.Contrastive`)."""
        return type(self).contrastive_loss is not Canonicalizer.contrastive_loss

    def add_regularizers(self, loss: torch.Tensor | float, result: Canonicalization, *, prior_weight: float = 0.0,
                         contrastive_weight: float = 0.0, target: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor | float, dict[str, torch.Tensor]]:
        """``loss + prior_weight · prior_loss(result, target) + contrastive_weight · contrastive_loss(result)``, plus
        the regularizers the canonicalizer weighs itself (``Contrastive(artifact_weight=)``, ``VectorNeurons(
        conditioning_weight=)``: :meth:`_own_regularizers`).

        Terms whose weight is 0 are not computed. Returns the sum and the unweighted terms
        (``{"prior": ..., "contrastive": ...}``, those computed), e.g. for logging.
        """
        terms: dict[str, torch.Tensor] = {}
        if prior_weight > 0:
            terms["prior"] = self.prior_loss(result, target)
            loss = loss + prior_weight * terms["prior"]
        if contrastive_weight > 0:
            terms["contrastive"] = self.contrastive_loss(result)
            loss = loss + contrastive_weight * terms["contrastive"]
        for name, (weight, term) in self._own_regularizers(result).items():
            terms[name] = term
            loss = loss + weight * term
        return loss, terms

    def _own_regularizers(self, result: Canonicalization) -> dict[str, tuple[float, torch.Tensor]]:
        """Regularizers a canonicalizer weighs itself (its own constructor argument), as ``{name: (weight,
        term)}``, computed only where they apply to ``result`` (e.g. in training); :meth:`add_regularizers`
        adds them. Default: none."""
        return {}

    # --- several poses per input: weighted canonicalization and probabilistic symmetrization -----------------
    # (equicanon.WeightedCanonicalized and equicanon.Symmetrized call these; a canonicalizer supports them by
    # overriding them, as GroupConv does for refined SO2()/O2() poses and the vector-neuron ones do for frames)

    @property
    def candidate_count(self) -> int | None:
        """How many poses :meth:`weighted_poses` ranks per input, the largest ``top_k`` (``None``: it ranks
        none). Default: ``|G|`` for groups of indexed elements (``C(n)``, ``D(n)``), whose results carry
        logits, one per element; ``None`` otherwise."""
        group = self.group
        return cast("FiniteGroup", group).order if group.is_indexed else None

    @property
    def samples_poses(self) -> bool:
        """Whether :meth:`sampled_poses` draws poses from an equivariant distribution ``p(h|x)`` (default:
        for groups of indexed elements, a categorical over the logits)."""
        return self.group.is_indexed

    def weighted_poses(self, x: torch.Tensor, result: Canonicalization, top_k: int, temperature: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``top_k`` best poses for ``x (B, *)`` and weights continuous in ``x``: ``(poses (B, k, *), weights
        (B, k))``, best first, weights ``≥ 0`` summing to 1, and equivariant (``poses(g·x) = g poses(x)`` with
        the same weights). Default: the elements of largest logit with
        :func:`~equicanon.canonicalizers.functional.top_k_weights` (``result.logits (B, |G|)``)."""
        from .functional import top_k_weights

        return top_k_weights(self.result_logits(result, x), top_k, temperature)

    def sampled_poses(self, x: torch.Tensor, result: Canonicalization, samples: int, temperature: float = 1.0,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``samples`` poses per input drawn from an equivariant distribution ``p(h|x)``: ``(poses (B, k, *),
        log_p)``. ``log_p (B, k)`` is ``log p(h_j|x)``, differentiable in the network, for draws that carry no
        pathwise gradient (discrete ones: the caller adds the score-function term), or ``None`` when the poses
        are differentiable in the network (reparameterized draws). Default: i.i.d. draws from
        ``softmax(ℓ/τ)`` (:func:`~equicanon.canonicalizers.functional.sample_categorical`)."""
        from .functional import sample_categorical

        logits = self.result_logits(result, x)
        drawn = sample_categorical(logits, samples, temperature, generator)
        return drawn, torch.log_softmax(logits / temperature, dim=-1).gather(1, drawn)

    def pose_distribution(self, x: torch.Tensor, result: Canonicalization, temperature: float = 1.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """All poses :meth:`sampled_poses` can draw and their probabilities: ``(poses (B, n, *), p (B, n))``,
        for the exact expectation. Default: every element, ``softmax(ℓ/τ)``. A :class:`ConfigError` where
        the distribution is continuous (no finite support)."""
        from .functional import top_k_weights

        logits = self.result_logits(result, x)
        return top_k_weights(logits, logits.shape[1], temperature)  # k = |G|: softmax(ℓ/τ), elements by logit

    def result_logits(self, result: Canonicalization, x: torch.Tensor) -> torch.Tensor:
        """``result.logits (B, |G|)`` for inputs ``x (B, *)``: a :class:`ConfigError` if there are none, a
        :class:`ShapeError` if their shape is not one row per input and one column per element."""
        order = self.candidate_count
        if result.logits is None or order is None:
            raise ConfigError(f"{type(self).__name__} returned no logits; weighting or sampling its poses needs "
                              "logits (B, |G|), one per group element (GroupConv on C(n)/D(n), Contrastive), "
                              "or a canonicalizer that ranks or samples its poses itself (refined GroupConv on "
                              "SO2()/O2(), VectorNeurons, ParticleVectorNeurons)")
        if result.logits.shape != (x.shape[0], order):
            raise ShapeError(f"logits: expected shape ({x.shape[0]}, {order}), one row per input and one column "
                             f"per element of {self.group}, got {format_shape(result.logits.shape)}")
        return result.logits

    def check_action(self, action: Action, what: str = "the output action") -> None:
        """Raise :class:`GroupMismatchError` if ``action`` acts with a group other than ``self.group``."""
        if action.group is not None and action.group != self.group:
            raise GroupMismatchError(f"{what} {action!r} acts with {action.group}, but the canonicalizer uses {self.group}")


def call_with_typed_errors(module: nn.Module, call: Callable[..., Any], x: object, *args: Any, **kwargs: Any) -> Any:
    """``call(x, *args, **kwargs)``; if torch fails because ``x`` is on another device or in another floating
    dtype than ``module``'s parameters, raise :class:`DeviceError` / :class:`DTypeError` instead.

    Checked only after a failure: no cost on the good path, and nothing that works is refused.
    """
    try:
        return call(x, *args, **kwargs)
    except (RuntimeError, NotImplementedError) as e:
        mismatch = _parameter_mismatch(module, x)
        if mismatch is None:
            raise
        raise mismatch from e


def _parameter_mismatch(module: nn.Module, x: object) -> Exception | None:
    """A typed error if ``x`` is on another device or in another floating dtype than ``module``'s parameters."""
    ref = next((p for p in module.parameters() if not isinstance(p, nn.parameter.UninitializedParameter)), None)
    if ref is None or not isinstance(x, torch.Tensor):
        return None
    name = type(module).__name__
    if x.device != ref.device:
        return DeviceError(f"x is on {x.device} but the parameters of {name} are on {ref.device}; move them to one "
                           f"device: x.to({str(ref.device)!r}) or canonicalizer.to({str(x.device)!r})")
    if x.is_floating_point() and ref.is_floating_point() and x.dtype != ref.dtype:
        return DTypeError(f"x has dtype {x.dtype} but the parameters of {name} have dtype {ref.dtype}; convert one: "
                          f"x.to({ref.dtype}), canonicalizer.to({x.dtype}), or run under torch.autocast")
    return None


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
    """Build a registered canonicalizer by name: ``create("group_conv", group="C8", in_channels=3)``.

    The one way to build by name (configs, the command line, :func:`~equicanon.adapt_pretrained` and the
    experiments use it or the same constructor by ``class_path``): ``create(name, **kwargs)`` is the class's
    constructor, whose defaults are the only ones. ``group`` may be a group or a name (``"C8"``, ``"SO3"``).

    Example:
        >>> canon = create("group_conv", group="C4", in_channels=3)
        >>> canon.group, type(canon).__name__
        (C(4), 'GroupConv')
    """
    if isinstance(kwargs.get("group"), str):
        kwargs["group"] = as_group(kwargs["group"])
    return entry(name).cls(**kwargs)
