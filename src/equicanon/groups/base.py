"""Group values: frozen, hashable descriptions whose elements are batched tensors.

A group object holds no tensors. Its methods take and return *batches* of
elements: for finite groups an integer index tensor, for matrix groups a
``(B, d, d)`` floating tensor. Element batches broadcast: a batch of one
combines with a batch of ``B``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import torch

from ..errors import ElementError, check_positive_int

__all__ = ["Group", "FiniteGroup", "MatrixGroup"]


def _float_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise ElementError(f"matrices need a floating dtype, got {dtype}")
    return dtype


class Group(abc.ABC):
    """A symmetry group acting on data.

    Subclasses are frozen dataclasses, so groups compare by value, hash, and
    print as the constructor call that builds them (``C(8)``).
    """

    # ---- capabilities: what the group is, so that no code outside groups/ asks for its class ----

    #: dimension ``d`` of the space the group acts on (2 planar, 3 spatial and rigid; ``None`` for
    #: permutation groups); :meth:`matrix` returns ``(B, d, d)`` orthogonal matrices
    dim: int | None
    #: whether some elements reverse orientation (``det = -1``): D(n), O2(), O3(), E3()
    has_reflections: bool = False
    #: whether elements translate points (elements are homogeneous ``[[R, t], [0, 1]]``): SE3(), E3()
    has_translations: bool = False

    @property
    @abc.abstractmethod
    def is_finite(self) -> bool:
        """Whether the group has finitely many elements."""

    @property
    def is_indexed(self) -> bool:
        """Whether elements are int64 indices ``0 .. order-1`` of shape ``(B,)`` (index 0 the identity), so a
        result can carry one logit per element and the regular representation permutes an axis of size ``|G|``."""
        return False

    @property
    def rotation_subgroup(self) -> Group:
        """The subgroup of rotations (no reflections, no translations): ``C(n)`` for ``D(n)``, ``SO2()`` for
        ``O2()``, ``SO3()`` for ``O3()``, ``SE3()`` and ``E3()``; the group itself when it has neither."""
        if self.has_reflections or self.has_translations:
            raise NotImplementedError(f"{type(self).__name__} must define rotation_subgroup")
        return self

    @property
    def needs_square_images(self) -> bool:
        """Whether acting on images needs ``H == W``: the group holds a quarter turn, done as an exact index move."""
        return False

    @property
    def all_quarter_turns(self) -> bool:
        """Whether every element maps the square pixel grid onto itself (multiples of 90° and flips), so images
        move by exact index operations only, never interpolation."""
        return False

    @property
    def kind(self) -> str:
        """``"planar"`` (acts on the plane), ``"spatial"`` (rotations/reflections of 3-D space), ``"rigid"``
        (also translations) or ``"permutation"`` (permutes set elements, :attr:`dim` is ``None``)."""
        if self.dim is None:
            return "permutation"
        if self.has_translations:
            return "rigid"
        return "planar" if self.dim == 2 else "spatial"

    @abc.abstractmethod
    def identity(self, batch: int = 1, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        """``batch`` copies of the identity element."""

    @abc.abstractmethod
    def compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The product ``a b`` (apply ``b`` first), element-wise over the batch."""

    @abc.abstractmethod
    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        """The inverse of each element of the batch."""

    @abc.abstractmethod
    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``batch`` elements drawn uniformly (Haar measure for continuous groups)."""

    @abc.abstractmethod
    def matrix(self, g: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The orthogonal matrices ``(B, d, d)`` representing ``g``.

        ``matrix`` is a homomorphism: ``matrix(compose(a, b)) == matrix(a) @ matrix(b)``.
        """

    @abc.abstractmethod
    def testing_elements(self, *, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
        """A fixed, small batch of elements that equivariance tests run over."""

    @abc.abstractmethod
    def check(self, g: object, name: str = "g") -> torch.Tensor:
        """Return ``g`` if it is a valid batch of elements, else raise :class:`ElementError`."""

    @abc.abstractmethod
    def describe(self, g: torch.Tensor) -> str:
        """Readable text for one element (a batch of one), used in error reports."""

    def element_shape(self) -> tuple[int, ...]:
        """Shape of one element (without the batch dimension)."""
        return ()

    def translation(self, g: torch.Tensor) -> torch.Tensor:
        """The translation part ``(B, d)`` of each element: zeros unless :attr:`has_translations`."""
        if self.dim is None:
            raise ElementError(f"{self} permutes set elements; it has no translations")
        m = self.matrix(g)
        return m.new_zeros(m.shape[0], self.dim)

    def cast(self, g: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        """Elements in ``dtype`` (integer elements are returned as they are).

        Matrix groups re-project upcast matrices onto the group, so float32 samples
        checked in float64 are orthogonal to float64 precision.
        """
        return g.to(dtype) if dtype is not None and g.is_floating_point() else g

    def batch_size(self, g: torch.Tensor) -> int:
        """Number of elements in the batch ``g``."""
        return int(g.shape[0])

    def take(self, g: torch.Tensor, i: int) -> torch.Tensor:
        """The ``i``-th element of a batch, as a batch of one."""
        return g[i : i + 1]

    def expand(self, g: torch.Tensor, batch: int) -> torch.Tensor:
        """Repeat a batch of one element ``batch`` times."""
        if self.batch_size(g) == batch:
            return g
        if self.batch_size(g) != 1:
            raise ElementError(f"cannot expand a batch of {self.batch_size(g)} elements of {self} to {batch}")
        return g.expand(batch, *g.shape[1:])


class FiniteGroup(Group):
    """A finite group whose elements are indices ``0 .. order-1`` (int64 tensors of shape ``(B,)``).

    Index 0 is always the identity. :meth:`compose` and :meth:`inverse` work
    element-wise on index tensors of any (broadcastable) shape with at least one dimension.
    """

    @property
    def is_finite(self) -> bool:
        return True

    @property
    def is_indexed(self) -> bool:
        return True

    @property
    @abc.abstractmethod
    def order(self) -> int:
        """Number of elements ``|G|``."""

    def elements(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """All ``|G|`` elements, in index order: ``(|G|,)`` int64."""
        return torch.arange(self.order, device=device)

    def identity(self, batch: int = 1, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.zeros(batch, dtype=torch.long, device=device)

    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        check_positive_int(batch, "batch", minimum=0)
        return draw(torch.randint, self.order, (batch,), generator=generator, device=device)

    def testing_elements(self, *, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.elements(device=device)

    def cayley_table(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """``T[a, b] = compose(a, b)``: ``(|G|, |G|)`` int64."""
        e = self.elements(device=device)
        return self.compose(e[:, None], e[None, :])

    def check(self, g: object, name: str = "g") -> torch.Tensor:
        if not isinstance(g, torch.Tensor):
            raise ElementError(f"{name}: expected an int64 tensor of {self} element indices, got {type(g).__name__}")
        if g.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ElementError(
                f"{name}: expected integer indices 0..{self.order - 1} of {self} elements, got dtype {g.dtype}"
            )
        if g.ndim < 1:
            raise ElementError(f"{name}: expected a batch of {self} element indices of shape (B,), got a 0-d tensor")
        # The range check reads values, which synchronises with an accelerator: only on the CPU, and not
        # while torch.export / torch.compile / jit.trace record a graph (a value there is data-dependent).
        if reads_values(g) and (int(g.min()) < 0 or int(g.max()) >= self.order):
            raise ElementError(
                f"{name}: expected indices in 0..{self.order - 1} for {self}, got values from {int(g.min())} to {int(g.max())}"
            )
        return g.long()


class MatrixGroup(Group):
    """A continuous group of ``d x d`` orthogonal matrices; elements are ``(B, d, d)`` float tensors."""

    dim: int

    @property
    def is_finite(self) -> bool:
        return False

    def element_shape(self) -> tuple[int, ...]:
        return (self.dim, self.dim)

    def identity(self, batch: int = 1, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=_float_dtype(dtype), device=device)
        return eye.expand(batch, self.dim, self.dim).clone()

    def compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = self.check(a, "a"), self.check(b, "b")
        return torch.matmul(a, b)

    def inverse(self, a: torch.Tensor) -> torch.Tensor:
        return self.check(a, "a").transpose(-1, -2).contiguous()

    def matrix(self, g: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        g = self.check(g)
        return g.to(dtype) if dtype is not None else g

    def cast(self, g: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        if dtype is None or dtype == g.dtype:
            return g
        out = g.to(dtype)
        if torch.finfo(dtype).eps < torch.finfo(g.dtype).eps:
            out = nearest_orthogonal(out)
        return out

    def check(self, g: object, name: str = "g") -> torch.Tensor:
        d = self.dim
        if not isinstance(g, torch.Tensor):
            raise ElementError(f"{name}: expected a (B, {d}, {d}) float tensor of {self} matrices, got {type(g).__name__}")
        if g.ndim != 3 or g.shape[-2:] != (d, d):
            raise ElementError(f"{name}: expected {self} elements as matrices of shape (B, {d}, {d}), got shape {tuple(g.shape)}")
        if not g.is_floating_point():
            raise ElementError(f"{name}: expected {self} matrices with a floating dtype, got {g.dtype}")
        return g

    def describe(self, g: torch.Tensor) -> str:
        rows = ["[" + ", ".join(f"{v:+.3f}" for v in row) + "]" for row in g[0].tolist()]
        return f"{self} matrix [{', '.join(rows)}]"


def reads_values(g: torch.Tensor) -> bool:
    """Whether an element check (or a canonicalizer's input check) may read ``g``'s values: a non-empty CPU
    tensor, outside graph capture (``torch.export``, ``torch.compile``, ``torch.jit.trace``), where reading one
    would be data-dependent; never an accelerator tensor, where reading one waits for the device."""
    capturing = torch.compiler.is_compiling() or torch.jit.is_tracing()
    return g.device.type == "cpu" and g.numel() > 0 and not capturing


def draw(sampler: Callable[..., torch.Tensor], *size: object, generator: torch.Generator | None,
         device: torch.device | str | None, **kwargs: object) -> torch.Tensor:
    """Call a torch sampler (``torch.rand``, ``randn``, ``randint``) on the generator's device, so
    a seeded generator gives the same numbers wherever the result goes, then move it to ``device``."""
    where = generator.device if generator is not None else device
    out = sampler(*size, generator=generator, device=where, **kwargs)
    return out.to(device) if device is not None else out


def nearest_orthogonal(m: torch.Tensor) -> torch.Tensor:
    """The orthogonal matrix nearest to each of ``m (B, d, d)`` (polar factor ``U Vᵀ``; keeps ``det``'s sign)."""
    u, _, vh = torch.linalg.svd(m)
    return u @ vh


def snap(values: torch.Tensor, tol: float = 1e-12) -> torch.Tensor:
    """Round entries within ``tol`` of 0, ±1/2, ±1 to those values (exact rotation tables)."""
    out = values.clone()
    for target in (0.0, 0.5, -0.5, 1.0, -1.0):
        out = torch.where((out - target).abs() < tol, torch.full_like(out, target), out)
    return out


def rotation_2d(theta: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 2)`` counter-clockwise rotation matrices for angles ``theta`` ``(B,)`` in radians."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


TWO_PI = 2 * math.pi
