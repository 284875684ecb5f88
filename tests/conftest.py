"""Shared test settings and fixtures.

Hypothesis runs a bounded number of examples without deadlines (torch's first
call of an op can be slow); set ``HYPOTHESIS_PROFILE=thorough`` for a longer run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import torch
from hypothesis import settings

settings.register_profile("equicanon", max_examples=30, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "equicanon"))


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """Run tests on one thread: their tensors are tiny, and two threads mostly wait on each other
    (3-20x slower when another process holds a core of the 2-core machines)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _smooth_image(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A band-limited ``(1, 1, n, n)`` image: three wide Gaussians near the centre, peak about 1."""
    i = torch.arange(n, dtype=torch.float64)
    rows, cols = torch.meshgrid(i, i, indexing="ij")
    c = (n - 1) / 2
    img = torch.zeros(n, n, dtype=torch.float64)
    blobs = [(0.0, 0.0, n / 5, 1.0), (n / 8, -n / 10, n / 8, 0.7), (-n / 9, n / 7, n / 9, -0.5)]
    for d_row, d_col, sigma, amp in blobs:
        img += amp * torch.exp(-((rows - c - d_row) ** 2 + (cols - c - d_col) ** 2) / (2 * sigma**2))
    return img[None, None].to(dtype)


def _inscribed_disk(h: int, w: int) -> torch.Tensor:
    """``(H, W)`` bool: pixel centres within the disk inscribed in the image, about the grid centre."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    radius = (min(h, w) - 1) / 2
    return (rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2 <= radius**2


@pytest.fixture
def smooth_image() -> Callable[..., torch.Tensor]:
    """Factory ``smooth_image(n, dtype=float64)`` of a smooth, centred test image ``(1, 1, n, n)``."""
    return _smooth_image


@pytest.fixture
def inscribed_disk() -> Callable[[int, int], torch.Tensor]:
    """Factory ``inscribed_disk(h, w)`` of the boolean mask of the inscribed disk."""
    return _inscribed_disk
