"""Actions of planar groups on images and dense label maps."""

from __future__ import annotations

import torch

from ..errors import DTypeError, check_choice, check_floating, check_shape
from ..groups import Group, as_group
from ..groups.base import draw, reads_values
from .base import Action, _randn
from .functional import MODES, PADDINGS, permute_image, require_square, rotate_image

__all__ = ["Image", "Mask"]


def _check_planar(group: Group | str, what: str) -> Group:
    return as_group(group, where=lambda g: g.kind == "planar", what=what,
                    expected="a planar group (C(n), D(n), SO2() or O2())")


def transform_image(group: Group, g: torch.Tensor, x: torch.Tensor, *, mode: str, padding: str) -> torch.Tensor:
    """``g·x`` for images ``x: (B, C, H, W)`` and a planar group element batch ``g`` of size ``B``.

    Elements of finite groups (C(n), D(n)) whose rotation is a multiple of 90° use exact index
    operations (their matrices hold exactly 0 and ±1); every other element is interpolated with
    ``mode``/``padding``.
    """
    if group.needs_square_images:
        require_square(x, repr(group))
    if group.all_quarter_turns:
        return permute_image(x, group.matrix(g, dtype=torch.float64))
    if group.is_finite:
        matrix = group.matrix(g, dtype=torch.float64)
        quarter = (matrix == matrix.round()).flatten(1).all(1)  # finite groups' tables are exact at quarter turns
        eye = torch.eye(2, dtype=matrix.dtype, device=matrix.device).expand_as(matrix)
        exact = permute_image(x, torch.where(quarter[:, None, None], matrix, eye))
        if not x.is_floating_point():
            raise DTypeError(f"{group} has rotations by other angles than multiples of 90°, which interpolate; "
                             f"got integer dtype {x.dtype}")
        if reads_values(quarter) and len(quarter) == len(x):
            # On the CPU reading ``quarter`` costs nothing, so only the other elements are interpolated (on a GPU
            # that read would wait for the device, and in graph capture it is data-dependent: there every image
            # is interpolated and the exact ones are picked).
            rest = (~quarter).nonzero().squeeze(1)
            if len(rest):
                exact[rest] = rotate_image(x[rest], matrix[rest], mode=mode, padding=padding)
            return exact
        return torch.where(quarter[:, None, None, None], exact, rotate_image(x, matrix, mode=mode, padding=padding))
    return rotate_image(x, group.matrix(g), mode=mode, padding=padding)


class Image(Action):
    """Planar rotations and reflections of images ``(B, C, H, W)``.

    Multiples of 90° and flips are exact index operations (C(4), D(4) and their
    subgroups never interpolate); other angles interpolate about the centre of
    the pixel grid with the given ``mode`` and ``padding``. Groups containing 90°
    rotations need square images.

    Args:
        group: ``C(n)``, ``D(n)``, ``SO2()`` or ``O2()``.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``, for interpolated angles.
        mode: ``"bilinear"`` (default) or ``"nearest"``.

    Example:
        >>> import torch, equicanon as ec
        >>> act = Image(ec.C(4))
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> torch.equal(act(torch.tensor([1]), x), torch.rot90(x, 1, dims=(-2, -1)))
        True
    """

    def __init__(self, group: Group | str, padding: str = "zeros", mode: str = "bilinear") -> None:
        self.group = _check_planar(group, "Image")
        self.padding = check_choice(padding, PADDINGS, "padding")
        self.mode = check_choice(mode, MODES, "mode")
        self.exact = self.group.all_quarter_turns

    def __repr__(self) -> str:
        return f"Image({self.group!r}, padding={self.padding!r}, mode={self.mode!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and (self.group, self.padding, self.mode) == (other.group, other.padding, other.mode)

    def __hash__(self) -> int:
        return hash((Image, self.group, self.padding, self.mode))

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sizes = check_shape(x, "B C H W")
        check_floating(x)
        assert self.group is not None
        return transform_image(self.group, self._elements(g, sizes["B"], x.device), x, mode=self.mode, padding=self.padding)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        return _randn((batch, 3, 29, 29), generator, dtype, device)


class Mask(Action):
    """Planar rotations and reflections of dense labels: ``(B, H, W)`` or ``(B, C, H, W)``, any dtype.

    Exact elements move labels by index; other angles use nearest-neighbour
    sampling, so labels stay labels. Outside the input, integer labels read 0
    (``padding="zeros"``) or the nearest edge label (``"border"``).
    """

    def __init__(self, group: Group | str, padding: str = "zeros") -> None:
        self.group = _check_planar(group, "Mask")
        self.padding = check_choice(padding, PADDINGS, "padding")
        self.exact = self.group.all_quarter_turns

    def __repr__(self) -> str:
        return f"Mask({self.group!r}, padding={self.padding!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and (self.group, self.padding) == (other.group, other.padding)

    def __hash__(self) -> int:
        return hash((Mask, self.group, self.padding))

    def __call__(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.ndim == 3:
            return self(g, x[:, None])[:, 0]
        sizes = check_shape(x, "B C H W", name="mask")
        assert self.group is not None
        g = self._elements(g, sizes["B"], x.device)
        if self.exact:
            return transform_image(self.group, g, x, mode="nearest", padding=self.padding)
        work = x if x.dtype == torch.float64 else x.to(torch.float64)
        out = transform_image(self.group, g, work, mode="nearest", padding=self.padding)
        return out.to(x.dtype)

    def example(self, batch: int = 2, *, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        out = draw(torch.randint, 0, 4, (batch, 29, 29), generator=generator, device=device)
        return out.to(dtype) if dtype is not None else out
