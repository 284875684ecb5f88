"""Test-time canonicalization by the pretrained predictor itself: no labels, no training.

For a finite group ``G = {g_0 = e, g_1, ...}`` and *any* function ``E`` of an input, the pose

    ``h(x) = argmin_k E(g_k⁻¹·x)``

is exactly equivariant, ``h(g·x) = g h(x)``: the copies of ``g·x`` are the copies of ``x`` in another order
(the structure of EquiOptAdapt, :class:`~equicanon.canonicalizers.Contrastive`, with the predictor's own
energy as the score). ITS (Schmidt & Stober, ICML 2024) and FoCal (Singhal et al., ICML 2025) score every
candidate pose with an energy of a pretrained model and keep the most *typical* view.

Which energy matters. A classifier trained on upright images is often *more* confident on turned ones, so
logit energies (the negative largest logit, the entropy, the negative log-sum-exp) pick wrong poses; the
typicality of the predictor's penultimate features under a Gaussian fitted to a few hundred unlabelled
upright inputs (the Mahalanobis distance, with a Ledoit–Wolf shrunk covariance) picks the upright one
(docs/adaptation.md measures both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import torch
from torch import nn

from ..actions import Action, Image
from ..errors import (
    ConfigError,
    DTypeError,
    InputValueError,
    ShapeError,
    check_floating,
    check_positive_int,
    check_shape,
    format_shape,
    suggest,
)
from ..groups import O2, SO2, C, D, FiniteGroup, Group, as_group
from .base import Canonicalization, Canonicalizer, RegistryCase, call_with_typed_errors, register
from .contrastive import copies_action
from .functional import all_transforms, discrete_canonicalize, identity_cross_entropy, nearest_element, top_gap

__all__ = ["TestTime", "ENERGIES", "GaussianDensity", "last_linear"]

#: the energies :class:`TestTime` knows by name (lower is more typical)
ENERGIES = ("typicality", "max_logit", "max_softmax", "entropy", "logsumexp")

#: ``energy(outputs (N, K), features (N, d) or None) -> (N,)``: lower is more typical
Energy = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


# --------------------------------------------------------------------------------------------- feature density

class GaussianDensity(nn.Module):
    """A Gaussian fitted to features ``(N, d)``; its energy is the squared Mahalanobis distance.

    The covariance is ``(1 − α) S + α (tr S / d) I`` with ``S`` the sample covariance (divided by ``N``):
    ``shrinkage=None`` takes the Ledoit–Wolf estimate of ``α`` (the one that minimises the expected Frobenius
    error; invertible whenever the features are not all equal, also for ``N < d``), a number in ``[0, 1]`` fixes
    it. Computed in float64. With fewer samples than features (``N < d``, e.g. a flattened feature map) the
    inverse is never formed: the energy uses the Woodbury identity on the ``N`` centred samples, ``O(N d)``
    memory instead of ``O(d²)``. The fitted state is in buffers (saved with ``state_dict``).
    """

    mean: torch.Tensor  # (d,)
    precision: torch.Tensor  # (d, d), or (0, 0) in the low-rank form
    factor: torch.Tensor  # (N, d) scaled centred samples U (low-rank form), else (0, 0)
    inner: torch.Tensor  # (N, N) inverse of c I + U Uᵀ (low-rank form), else (0, 0)
    ridge: torch.Tensor  # (): c = α tr S / d (low-rank form), else ()

    def __init__(self) -> None:
        super().__init__()
        for name, shape in (("mean", (0,)), ("precision", (0, 0)), ("factor", (0, 0)), ("inner", (0, 0)),
                            ("ridge", (0,))):
            self.register_buffer(name, torch.empty(shape, dtype=torch.float64))
        self.shrinkage: float | None = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run (or a fitted state was loaded)."""
        return self.mean.numel() > 0

    @torch.no_grad()
    def fit(self, features: torch.Tensor, shrinkage: float | None = None) -> GaussianDensity:
        """Fit to ``features (N, d)``, ``N >= 2``; ``shrinkage``: ``α`` or ``None`` (Ledoit–Wolf). Returns ``self``."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ShapeError(f"reference features: expected at least 2 samples (N, d), got {format_shape(features.shape)}")
        f = features.detach().double()
        n, d = f.shape
        mean = f.mean(dim=0)
        x = f - mean
        gram = x @ x.t() if n <= d else None  # S = XᵀX / n; its norms from the smaller Gram matrix
        s = x.t() @ x / n if gram is None else None
        trace = float((x * x).sum()) / n
        mu = trace / d
        if not mu > 0 or not torch.isfinite(x).all():
            raise InputValueError("reference features: all equal (or not finite); no density can be fitted to them")
        s_norm2 = float((s ** 2).sum()) if s is not None else float((gram ** 2).sum()) / n ** 2  # type: ignore[operator]
        delta = s_norm2 - mu * mu * d  # ‖S − μI‖²_F
        if shrinkage is None:
            beta = (float(((x * x).sum(dim=1) ** 2).sum()) / n - s_norm2) / n
            alpha = 1.0 if delta <= 0 else min(max(beta, 0.0), delta) / delta
        else:
            alpha = float(shrinkage)
        eye = partial(torch.eye, dtype=f.dtype, device=f.device)
        self.mean, self.shrinkage = mean, alpha
        if s is not None:
            cov = (1 - alpha) * s + alpha * mu * eye(d) + 1e-12 * mu * eye(d)  # a ridge where alpha is 0
            self.precision = torch.linalg.inv(cov)
            self.factor = self.inner = torch.empty(0, 0, dtype=f.dtype, device=f.device)
            self.ridge = torch.empty(0, dtype=f.dtype, device=f.device)
        else:
            if alpha <= 0:
                raise ConfigError(f"shrinkage 0 with {n} reference samples of {d} features: the covariance is "
                                  "singular; use shrinkage=None (Ledoit–Wolf) or more reference inputs")
            c = alpha * mu
            self.factor = x * ((1 - alpha) / n) ** 0.5
            self.inner = torch.linalg.inv(c * eye(n) + (1 - alpha) / n * gram)  # type: ignore[operator]
            self.ridge = torch.tensor([c], dtype=f.dtype, device=f.device)
            self.precision = torch.empty(0, 0, dtype=f.dtype, device=f.device)
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distances ``(N,)`` (float64) of ``features (N, d)``."""
        if not self.fitted:
            raise ConfigError("the feature density is not fitted; call fit(reference) first")
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ShapeError(f"features: expected (N, {self.mean.shape[0]}) like the reference's, got "
                             f"{format_shape(features.shape)}")
        # float64 whatever the module was cast to (.float() casts the buffers too): the low-rank form subtracts
        z = features.detach().double() - self.mean.double()
        if self.precision.numel() > 0:
            return ((z @ self.precision.double()) * z).sum(dim=-1)
        u = z @ self.factor.double().t()  # (N, n)
        return ((z * z).sum(dim=-1) - ((u @ self.inner.double()) * u).sum(dim=-1)) / self.ridge.double()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # a density not fitted yet takes the saved one's shapes
        for name in ("mean", "precision", "factor", "inner", "ridge"):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor):
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _logit_energy(name: str) -> Energy:
    def max_logit(outputs: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        return -outputs.amax(dim=-1)

    def max_softmax(outputs: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        return -outputs.softmax(dim=-1).amax(dim=-1)

    def entropy(outputs: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        logp = outputs.log_softmax(dim=-1)
        return -(logp.exp() * logp).sum(dim=-1)

    def logsumexp(outputs: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        return -outputs.logsumexp(dim=-1)

    return {"max_logit": max_logit, "max_softmax": max_softmax, "entropy": entropy, "logsumexp": logsumexp}[name]


# --------------------------------------------------------------------------------------------- features

def last_linear(predictor: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of the last ``nn.Linear`` registered in ``predictor`` (its classification head, for
    the usual models): a :class:`ConfigError` when there is none."""
    found = [(name, m) for name, m in predictor.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ConfigError(f"TestTime: {type(predictor).__name__} has no nn.Linear layer whose input could be the features; "
                          "pass features= (the name of a layer, or a module giving features (N, d))")
    return found[-1]


def _pooled(t: object, what: str, *, tokens: bool = False, spatial: bool = False) -> torch.Tensor:
    """Features ``(N, d)`` from a hooked tensor: the trailing axes of a feature map ``(N, C, ...)`` averaged (or
    with ``spatial`` flattened, ``d = C·H·W``), or with ``tokens`` (the input of a linear layer, ``(N, ..., d)``)
    the middle (token) axes averaged."""
    if isinstance(t, (tuple, list)) and t:
        t = t[0]
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 2:
        got = type(t).__name__ if not isinstance(t, torch.Tensor) else f"shape {format_shape(t.shape)} {t.dtype}"
        raise DTypeError(f"TestTime: the features ({what}) must be a floating tensor (N, d) or (N, d, ...), got {got}")
    if t.ndim == 2:
        return t
    if tokens:
        return t.flatten(1, -2).mean(dim=1)
    return t.flatten(1) if spatial else t.flatten(2).mean(dim=-1)


@contextmanager
def _catching(module: nn.Module, side: str) -> Iterator[list[Any]]:
    """A list that holds the input (``side="input"``) or output of ``module``'s last call inside the block."""
    caught: list[Any] = [None]

    def pre(_: nn.Module, args: tuple[Any, ...]) -> None:
        caught[0] = args[0] if args else None

    def post(_: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        caught[0] = out

    handle = module.register_forward_pre_hook(pre) if side == "input" else module.register_forward_hook(post)
    try:
        yield caught
    finally:
        handle.remove()


@contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode, restored afterwards (submodules' own modes too)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _batches(reference: object) -> Iterator[torch.Tensor]:
    """The input tensors of ``reference``: a tensor ``(N, *)``, or an iterable of tensors or of ``(x, y, ...)``."""
    if isinstance(reference, torch.Tensor):
        yield reference
        return
    if not isinstance(reference, Iterable):
        raise DTypeError(f"reference: expected a tensor of inputs (N, ...) or an iterable of batches, got "
                         f"{type(reference).__name__}")
    for batch in reference:
        x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        if not isinstance(x, torch.Tensor):
            raise DTypeError(f"reference: every batch must be a tensor or a (x, ...) tuple of tensors, got "
                             f"{type(x).__name__}")
        yield x


# --------------------------------------------------------------------------------------------- the canonicalizer

class TestTime(Canonicalizer):
    """Canonicalize by the pose whose copy a frozen predictor finds most typical; nothing is trained.

    All ``|G|`` copies ``g_k⁻¹·x`` of each input go through ``predictor`` as one batch (``inputs_per_call``
    inputs' copies at a time), in eval mode and without gradients; each copy gets an energy and the pose is
    the copy of lowest energy. The result is a normal :class:`Canonicalization` (``logits = −energy /
    temperature``, entry ``k`` for ``g_k⁻¹·x``; ``margin`` the gap to the runner-up), so
    :class:`~equicanon.Canonicalized`, :class:`~equicanon.WeightedCanonicalized` and the metrics take it.
    Inference costs ``|G|`` predictor passes (plus one for the prediction on the canonical form).

    Continuous groups (``SO2()``, ``O2()``, images): the copies are those of the grid ``C(rotations)`` (or
    ``D(rotations)``); around the best grid element ``h`` the search goes on at ``refine`` turns either side,
    ``h R(δ_j)`` with ``δ_j = j · step / (2 · refine)`` (``step = 360° / rotations``: out to half a step), and a parabola
    through the best of these and its two neighbours places the pose between them: ``h R(δ*)``, any angle, for
    ``rotations + 2·refine`` predictor passes. Equivariant to rounding for the grid's quarter turns (``g·x``
    has the same copies, turned); elsewhere the pose is off by what the energy's landscape allows
    (docs/adaptation.md measures it).

    Args:
        group: a finite group with indexed elements (``C(n)``, ``D(n)``; ``Octahedral()`` for 3-D points),
            ``SO2()`` / ``O2()`` for images (grid search, then refinement), or its name.
        predictor: the frozen model, ``(N, *) → (N, K)`` outputs (logits for the logit energies).
        energy: ``"typicality"`` (default): the squared Mahalanobis distance of the copy's features to those of
            ``reference`` (:class:`GaussianDensity`); ``"max_logit"`` (−max logit), ``"max_softmax"`` (−max
            probability), ``"entropy"`` (of the softmax), ``"logsumexp"`` (−log Σ exp, the energy of Liu et
            al., 2020); or a callable ``energy(outputs (N, K), features (N, d)) -> (N,)``, lower = more typical.
        reference: unlabelled upright inputs, a tensor ``(N, *)`` or an iterable of batches (tensors or
            ``(x, y, ...)`` tuples, e.g. a ``DataLoader``); needed by ``"typicality"`` and by ``gate``. A few
            hundred suffice. :meth:`fit` refits on others.
        features: where the features come from: ``None`` (default): the input of the predictor's last
            ``nn.Linear`` (:func:`last_linear`); the name of a submodule of the predictor (dotted, as in
            ``named_modules()``) or the submodule itself: its output (``feature_side="input"``: its input);
            another ``nn.Module``: called on the copies itself, ``(N, *) → (N, d)``. Feature maps
            ``(N, C, ...)`` are averaged over their trailing axes.
        spatial: flatten feature maps ``(N, C, H, W)`` into ``C·H·W`` features instead of averaging them over
            ``H, W``: where the orientation lives is the layout, and averaged feature maps are nearly invariant to
            turns (use it with ``features=`` a convolutional stage; the Gaussian's low-rank form keeps it cheap).
        feature_side: ``"output"`` or ``"input"`` of the ``features`` submodule (``None``: ``"input"`` for the
            default last linear layer, ``"output"`` otherwise).
        shrinkage: the covariance shrinkage of ``"typicality"`` (``None``: Ledoit–Wolf).
        gate: a quantile ``q`` in ``(0, 1)``: inputs whose own energy is below the ``q``-quantile of the
            reference's energies keep the identity pose (typical inputs are left alone). The gated pose is not
            equivariant (an input turned away from its typical view is scored again); ``None`` (default): no gate,
            exactly equivariant.
        temperature: ``τ`` of the logits ``−energy / τ`` (what weighted canonicalization softmaxes).
        inputs_per_call: inputs whose ``|G|`` copies go through the predictor per call (``None``: all).
        in_channels: image channels, checked on every input (a ``ShapeError`` before the predictor sees a
            wrong one); ``None``: those of ``reference`` where it is images, else unchecked.
        action: how the group acts on inputs; default ``Image(group)`` for planar groups, ``Points`` for 3-D.
        padding: image padding for rotations that interpolate (``C(8)`` and finer).
        rotations: ``SO2()`` / ``O2()`` only: the grid ``C(rotations)`` / ``D(rotations)`` searched first
            (``None``: 16, 22.5° apart; a multiple of 4 keeps the quarter turns exact).
        refine: ``SO2()`` / ``O2()`` only: refinement turns either side of the best grid element (``None``: 4;
            0: the grid's poses, then refined by the parabola alone).
        check_inputs: refuse inputs holding NaN or Inf (:class:`~equicanon.canonicalizers.Canonicalizer`).

    Result extras: ``energies`` ``(B, |G|)`` (continuous groups: of the grid's copies); ``gated`` ``(B,)`` bool
    with a gate. Continuous groups also: ``coarse`` ``(B,)`` the best grid element, ``residual`` ``(B,)`` the
    refinement turn ``δ*`` in radians, ``refined_energies`` ``(B, 2·refine + 1)`` at ``δ_{-refine..refine}``,
    ``grid_logits`` ``(B, |grid|)``; ``pose`` is ``(B, 2, 2)`` and ``logits`` is ``None`` (a continuous pose has
    no logit per element).

    Exactness: as for :class:`~equicanon.canonicalizers.Contrastive`, invariance is exact when the copies are
    exact index permutations of the input (quarter turns, flips) and the predictor gives bit-identical outputs
    for bit-identical inputs wherever they sit in the batch (eval mode, which scoring enforces); ``C(8)`` turns
    by 45° interpolate, so its poses are equivariant to rounding at the 90° elements only.

    Example:
        >>> upright = torch.rand(64, 1, 28, 28)
        >>> cnn = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
        >>> canon = TestTime(C(4), cnn, reference=upright)
        >>> model = ec.Canonicalized(cnn, canon)  # doctest: +SKIP
    """

    __test__ = False  # not a pytest test class, although its name starts with "Test"
    trainable = False  # its poses come from the frozen predictor: no gradient reaches its logits

    threshold: torch.Tensor  # a buffer: (1,) the gate's energy, empty without a gate

    def __init__(self, group: Group | str, predictor: nn.Module, *, energy: str | Energy = "typicality",
                 reference: object = None, features: str | nn.Module | None = None, feature_side: str | None = None,
                 shrinkage: float | None = None, gate: float | None = None, temperature: float = 1.0,
                 inputs_per_call: int | None = None, in_channels: int | None = None, action: Action | None = None,
                 padding: str = "zeros", spatial: bool = False, rotations: int | None = None,
                 refine: int | None = None, check_inputs: bool = True) -> None:
        super().__init__(check_inputs=check_inputs)
        group = as_group(group, where=lambda g: g.is_indexed or isinstance(g, (SO2, O2)), what="TestTime: group",
                         expected="a finite group whose copies it can score one by one (C(n), D(n), Octahedral(), ...), "
                                  "or SO2() / O2() for images (a grid of turns, then refined)")
        self.group: Group = group
        if not isinstance(predictor, nn.Module):
            raise ConfigError(f"TestTime: predictor must be an nn.Module, got {type(predictor).__name__}")
        self.predictor = predictor
        if group.is_indexed and (rotations is not None or refine is not None):
            raise ConfigError(f"rotations and refine are for SO2() / O2(); {group} poses are its elements: "
                              "leave them unset")
        self.rotations = check_positive_int(16 if rotations is None else rotations, "rotations")
        refine = 4 if refine is None else refine
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ConfigError(f"refine must be a whole number of turns >= 0, got {refine!r}")
        self.refine = refine
        #: the finite group whose copies are scored: the group itself, or the grid of a continuous one
        self.grid: FiniteGroup
        if group.is_indexed:
            self.grid = cast(FiniteGroup, group)
        else:
            if action is not None and not isinstance(action, Image):
                raise ConfigError(f"TestTime: {group} poses are found for images; action must be an Image action")
            self.grid = D(self.rotations) if group.has_reflections else C(self.rotations)
        action = copies_action(group, action, padding, "TestTime")
        self.action = action
        self.grid_action = action if group.is_indexed else Image(self.grid, padding=padding)
        if isinstance(energy, str):
            if energy not in ENERGIES:
                raise ConfigError(f"TestTime: unknown energy {energy!r}; names: {', '.join(ENERGIES)}"
                                  f"{suggest(energy, ENERGIES)}, or a callable energy(outputs, features) -> (N,)")
        elif not callable(energy):
            raise ConfigError(f"TestTime: energy must be one of {', '.join(ENERGIES)} or a callable, got "
                              f"{type(energy).__name__}")
        self.energy = energy
        # features: a submodule of the predictor (its path and side, resolved on every call, so copies and
        # reloaded models hook their own predictor) or a standalone network
        self.feature_network: nn.Module | None
        self.feature_layer: tuple[str, str] | None
        self.feature_network, self.feature_layer = self._feature_source(features, feature_side)
        if shrinkage is not None and (isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float))
                                      or not 0 <= shrinkage <= 1):
            raise ConfigError(f"shrinkage must be None (Ledoit–Wolf) or a number in [0, 1], got {shrinkage!r}")
        self.shrinkage = shrinkage
        if gate is not None and (isinstance(gate, bool) or not isinstance(gate, (int, float)) or not 0 < gate < 1):
            raise ConfigError(f"gate must be None or a quantile in (0, 1), got {gate!r}")
        self.gate = None if gate is None else float(gate)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.inputs_per_call = None if inputs_per_call is None else check_positive_int(inputs_per_call, "inputs_per_call")
        self.in_channels = None if in_channels is None else check_positive_int(in_channels, "in_channels")
        self.spatial = bool(spatial)
        self.density = GaussianDensity()
        self.register_buffer("threshold", torch.empty(0, dtype=torch.float64))
        if reference is not None:
            self.fit(reference)
        elif energy == "typicality":
            raise ConfigError("TestTime: energy='typicality' needs reference= (unlabelled upright inputs: a tensor "
                              "(N, ...) or an iterable of batches), or choose a logit energy: "
                              + ", ".join(e for e in ENERGIES if e != "typicality"))
        elif self.gate is not None:
            raise ConfigError("TestTime: gate= needs reference= (its quantile is one of the reference's energies)")

    # --- features and energies ----------------------------------------------------------------------------

    def _feature_source(self, features: str | nn.Module | None, side: str | None
                        ) -> tuple[nn.Module | None, tuple[str, str] | None]:
        """``(network, None)`` for a standalone features module, ``(None, (path, side))`` for a submodule of the
        predictor, ``(None, None)`` where the energy needs no features."""
        if side is not None and side not in ("input", "output"):
            raise ConfigError(f"feature_side must be 'input', 'output' or None, got {side!r}")
        if features is None:
            if self.energy != "typicality" and not callable(self.energy):
                return None, None  # logit energies need no features
            try:
                name, _ = last_linear(self.predictor)
            except ConfigError:
                if callable(self.energy):
                    return None, None  # a callable energy may use the outputs only
                raise
            return None, (name, side or "input")
        if isinstance(features, str):
            names = [n for n, _ in self.predictor.named_modules()]
            if features not in names:
                listed = [n for n in names if n]
                raise ConfigError(f"TestTime: the predictor has no submodule {features!r}"
                                  f"{suggest(features, listed)}; its submodules: {', '.join(listed[:12])}"
                                  + (", ..." if len(listed) > 12 else ""))
            return None, (features, side or "output")
        if isinstance(features, nn.Module):
            path = next((n for n, m in self.predictor.named_modules() if m is features), None)
            if path is not None:
                return None, (path, side or "output")
            if side is not None:
                raise ConfigError("feature_side applies to a submodule of the predictor; a separate features module is "
                                  "called on the inputs and its output is the features")
            return features, None
        raise ConfigError(f"features must be None, a submodule name or an nn.Module, got {type(features).__name__}")

    def outputs_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The predictor's outputs ``(N, K)`` and the features ``(N, d)`` (``None`` where the energy needs none)
        of inputs ``x (N, *)``, in eval mode, without gradients."""
        with torch.no_grad(), _evaluating(self.predictor):
            if self.feature_layer is not None:
                path, side = self.feature_layer
                layer = self.predictor.get_submodule(path)
                with _catching(layer, side) as caught:
                    out = call_with_typed_errors(self.predictor, self.predictor, x)
                feats: torch.Tensor | None = _pooled(caught[0], f"the {side} of {path or 'the predictor'}",
                                                     tokens=side == "input" and isinstance(layer, nn.Linear),
                                                     spatial=self.spatial)
            else:
                out = call_with_typed_errors(self.predictor, self.predictor, x)
                feats = None
            if self.feature_network is not None:
                with _evaluating(self.feature_network):
                    feats = _pooled(call_with_typed_errors(self.feature_network, self.feature_network, x),
                                    "the features module's output", spatial=self.spatial)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise DTypeError(f"TestTime: the predictor must return a floating tensor of outputs (N, K), got "
                             f"{type(out).__name__ if not isinstance(out, torch.Tensor) else out.dtype}")
        if out.shape[0] != x.shape[0]:
            raise ShapeError(f"TestTime: the predictor returned {format_shape(out.shape)} for {x.shape[0]} inputs")
        if feats is not None and feats.shape[0] != x.shape[0]:
            raise ShapeError(f"TestTime: the features have shape {format_shape(feats.shape)} for {x.shape[0]} inputs")
        return out.flatten(1), feats

    def energies(self, x: torch.Tensor) -> torch.Tensor:
        """Energies ``(N,)`` of inputs ``x (N, *)`` as they are (no transformation), in float64."""
        return self._energy_of(*self.outputs_and_features(x))

    def _energy_of(self, out: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
        """Energies ``(N,)`` from the predictor's outputs ``(N, K)`` and features ``(N, d)``, in float64."""
        if self.energy == "typicality":
            if feats is None:
                raise ConfigError("TestTime: energy='typicality' needs features, and the predictor gave none")
            e = self.density(feats)
        elif isinstance(self.energy, str):
            e = _logit_energy(self.energy)(out, feats)
        else:
            e = self.energy(out, feats)
            if not isinstance(e, torch.Tensor) or e.shape != (out.shape[0],):
                got = format_shape(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
                raise ShapeError(f"TestTime: energy(outputs, features) must return ({out.shape[0]},), got {got}")
        return e.detach().double()

    @torch.no_grad()
    def fit(self, reference: object) -> TestTime:
        """Fit the typicality density (and the gate's threshold) to unlabelled upright inputs ``reference``: a
        tensor ``(N, *)`` or an iterable of batches. Returns ``self``."""
        batches = list(_batches(reference))
        if not batches or sum(len(b) for b in batches) < 2:
            raise ShapeError("reference: expected at least 2 inputs")
        if isinstance(self.action, Image):
            fixed = {} if self.in_channels is None else {"C": self.in_channels}
            for b in batches:
                check_shape(b, "B C H W", "reference", **fixed)
            if self.in_channels is None:
                self.in_channels = int(batches[0].shape[1])
        step = 256 if self.inputs_per_call is None else max(self.inputs_per_call * self.grid.order, 1)
        device = self.threshold.device
        passes = []  # (outputs, features) of every chunk: one predictor pass serves the density and the gate
        for b in batches:
            check_floating(b, "reference")
            passes += [self.outputs_and_features(b[i:i + step].to(device)) for i in range(0, len(b), step)]
        if self.energy == "typicality":
            if any(f is None for _, f in passes):
                raise ConfigError("TestTime: energy='typicality' needs features, and the predictor gave none")
            self.density.fit(torch.cat([f for _, f in passes if f is not None]), self.shrinkage)
        if self.gate is not None:
            e = torch.cat([self._energy_of(out, f) for out, f in passes])
            self.threshold = torch.quantile(e, self.gate).reshape(1)
        return self

    # --- forward ------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> Canonicalization:
        """Canonicalize ``x`` (images ``(B, C, H, W)``, point clouds ``(B, N, d)``, or what ``action`` takes)."""
        if not isinstance(x, torch.Tensor):
            raise DTypeError(f"x: expected a tensor, got {type(x).__name__}")
        check_floating(x)
        if isinstance(self.action, Image):
            fixed = {} if self.in_channels is None else {"C": self.in_channels}
            check_shape(x, "B C H W", "x", **fixed)
        copies = all_transforms(self.grid, self.grid_action, x)  # (B, |G|, *): entry k is g_k⁻¹·x
        energies = self._energies_of_copies(copies)
        logits = (-energies / self.temperature).to(x.dtype)
        extras: dict[str, torch.Tensor] = {"energies": energies}
        gated = None
        if self.gate is not None:
            if self.threshold.numel() == 0:
                raise ConfigError("TestTime: gate= needs a fitted threshold; call fit(reference) first")
            gated = energies[:, 0] <= self.threshold.to(energies)
            # the identity wins where the input itself is typical: its logit is raised above every other
            top = logits.detach().amax(dim=1)
            first = torch.arange(logits.shape[1], device=x.device) == 0
            logits = torch.where(gated[:, None] & first, top[:, None] + 1, logits)
            extras["gated"] = gated
        if not self.group.is_indexed:
            return self._refined(x, logits, extras, gated)
        canonical, pose = discrete_canonicalize(x, logits, self.grid, self.action, copies=copies)
        return Canonicalization(canonical, pose, self.group, logits=logits, extras=extras, margin=top_gap(logits))

    def _energies_of_copies(self, copies: torch.Tensor) -> torch.Tensor:
        """Energies ``(B, K)`` of copies ``(B, K, *)``, ``inputs_per_call`` inputs' copies per predictor call."""
        b, k = copies.shape[:2]
        step = max(b, 1) if self.inputs_per_call is None else self.inputs_per_call
        return torch.cat([self.energies(copies[i:i + step].flatten(0, 1)) for i in range(0, b, step)]
                         or [torch.empty(0, dtype=torch.float64, device=copies.device)]).reshape(b, k)

    def _refined(self, x: torch.Tensor, logits: torch.Tensor, extras: dict[str, torch.Tensor],
                 gated: torch.Tensor | None) -> Canonicalization:
        """SO2()/O2(): the best grid element ``h``, then ``h R(δ)`` at ``2·refine + 1`` turns around it and a
        parabola through the best three: poses ``(B, 2, 2)``."""
        b, r = x.shape[0], self.refine
        coarse = logits.argmax(dim=1)
        spacing = 2 * math.pi / self.rotations / (2 * max(r, 1))  # out to half a grid step either side
        offsets = spacing * torch.arange(-r, r + 1, device=x.device, dtype=torch.float64)  # (2r + 1,)
        h = self.grid.matrix(coarse, dtype=torch.float64)  # (B, 2, 2)
        refined = extras["energies"].gather(1, coarse[:, None])  # δ_0 = 0: the grid copy itself, already scored
        if r > 0:
            off = torch.cat([offsets[:r], offsets[r + 1:]])  # the 2r turns either side
            candidates = h[:, None] @ SO2().from_angle(off)[None]  # (B, 2r, 2, 2): h R(δ_j)
            poses = self.group.inverse(candidates.flatten(0, 1)).to(x.dtype)
            views = self.action(poses, x.repeat_interleave(2 * r, dim=0))
            around = self._energies_of_copies(views.reshape(b, 2 * r, *x.shape[1:]))
            refined = torch.cat([around[:, :r], refined, around[:, r:]], dim=1)  # (B, 2r + 1), by offset
        # a parabola through three neighbouring offsets around the best (at an end of the refinement the three
        # innermost; refine = 0: the grid's neighbours, a step away); the pose stays within half a spacing of the
        # best offset
        best = refined.argmin(dim=1)
        if r > 0:
            middle = best.clamp(min(1, 2 * r), max(2 * r - 1, 0))
            lower, centre, upper = (refined.gather(1, (middle + d).clamp(0, 2 * r)[:, None])[:, 0] for d in (-1, 0, 1))
            unit = spacing
        else:
            n = self.rotations
            steps = self.grid.elements(device=x.device)[[1, n - 1]]  # one grid step either way, R(±step)
            middle = best
            centre = refined[:, 0]
            lower = extras["energies"].gather(1, self.grid.compose(coarse, steps[1].expand_as(coarse))[:, None])[:, 0]
            upper = extras["energies"].gather(1, self.grid.compose(coarse, steps[0].expand_as(coarse))[:, None])[:, 0]
            unit = 2 * math.pi / n
        curvature = lower + upper - 2 * centre
        fit = curvature > 0
        vertex = torch.where(fit, 0.5 * (lower - upper) / torch.where(fit, curvature, torch.ones_like(curvature)),
                             (best - middle).to(centre.dtype))
        shift = (vertex - (best - middle).to(vertex.dtype)).clamp(-0.5, 0.5)  # relative to the best offset
        delta = offsets[best] + shift * unit
        if gated is not None:
            delta = torch.where(gated, torch.zeros_like(delta), delta)
        pose = (h @ SO2().from_angle(delta)).to(x.dtype)
        canonical = self.action(self.group.inverse(pose), x)  # one interpolation of the input
        extras.update(coarse=coarse, residual=delta, refined_energies=refined, grid_logits=logits)
        return Canonicalization(canonical, pose, self.group, logits=None, extras=extras, margin=top_gap(logits))

    def prior_loss(self, result: Canonicalization, target: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the logits ``−energy / τ`` against the identity (``target`` indices instead; SO2()/O2():
        the grid's logits against the grid element nearest the identity or the ``target`` matrices ``(B, 2, 2)``):
        how far the poses are from upright, for monitoring. TestTime has nothing to train: no gradient."""
        logits = result.logits if result.logits is not None else result.extras.get("grid_logits")
        if logits is None:
            raise ConfigError("prior_loss needs a result with logits (from a discrete canonicalizer) or, for SO2()/O2(), "
                              "a TestTime result (extras['grid_logits'])")
        if result.logits is None and target is not None:
            if target.shape != (logits.shape[0], 2, 2):
                raise ShapeError(f"prior target: expected {logits.shape[0]} matrices, shape ({logits.shape[0]}, 2, 2), "
                                 f"got {format_shape(target.shape)}")
            target = nearest_element(self.grid, target.to(device=logits.device, dtype=torch.float64))
        return identity_cross_entropy(logits, target)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # a gate not fitted yet takes the saved threshold's shape
        saved = state_dict.get(prefix + "threshold")
        if isinstance(saved, torch.Tensor):
            self.threshold = torch.empty_like(saved, device=self.threshold.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        energy = self.energy if isinstance(self.energy, str) else getattr(self.energy, "__name__", "callable")
        parts = [f"group={self.group!r}", f"energy={energy!r}", f"temperature={self.temperature:g}"]
        if not self.group.is_indexed:
            parts.append(f"rotations={self.rotations}, refine={self.refine}")
        if self.gate is not None:
            parts.append(f"gate={self.gate:g}")
        if self.inputs_per_call is not None:
            parts.append(f"inputs_per_call={self.inputs_per_call}")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------- registry

class _TinyClassifier(nn.Sequential):
    """A small image classifier ending in a linear layer, for the registry's cases."""

    def __init__(self, channels: int = 3, classes: int = 5) -> None:
        super().__init__(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                         nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, classes))


def _typical(group: Group) -> TestTime:
    torch.manual_seed(0)
    net = _TinyClassifier()
    return TestTime(group, net, reference=torch.rand(32, 3, 9, 9, generator=torch.Generator().manual_seed(0)))


def _cases() -> list[RegistryCase]:
    image = (2, 3, "size", "size")
    cases = [RegistryCase(f"{g} typicality", partial(_typical, g), image) for g in (C(4), D(4))]
    cases.append(RegistryCase("C(4) max_logit", lambda: TestTime(C(4), _TinyClassifier(), energy="max_logit",
                                                                 in_channels=3), image))
    cases.append(RegistryCase("C(8) typicality", partial(_typical, C(8)), image, exact=False))
    cases += [RegistryCase(f"{g} typicality", partial(_typical, g), image, exact=False) for g in (SO2(), O2())]
    return cases


register("test_time", _cases)(TestTime)
