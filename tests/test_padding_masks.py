"""Variable-size point sets: ``ec.data.pad_sets`` and padding masks (``FrameAveraged``, ``VectorNeurons``,
``ParticleVectorNeurons``, ``Canonicalized``).

- ``pad_sets([x_1, …]) = (x, mask)`` with ``x[i, :N_i] = x_i``, padding ``value`` elsewhere, ``mask[i, j] = j < N_i``;
- ``FrameAveraged(p, G)(x, mask=m)`` does not depend on how much padding there is or what it holds, for a predictor
  that ignores the padded rows: the same clouds padded to several lengths with random padding give the same
  prediction (and the same frames: :func:`pca_frames` with the mask equals it on the unpadded cloud); it stays
  invariant under the group (float64), and the predictor receives the mask;
- ``VectorNeurons`` / ``ParticleVectorNeurons`` with ``mask``: the pose and the real points' canonical form of a
  padded cloud equal those of the cloud alone (eval mode), whatever the padding; in training mode (batch statistics
  over the real points) they do not depend on the padding length; ``pose(g·x) = g pose(x)`` with a mask; k-NN never
  picks a padded neighbour; ``Canonicalized(x, mask=m)`` gives the mask to both the canonicalizer and the predictor.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.adapt import pca_frames
from equicanon.data import pad_sets
from equicanon.errors import DTypeError, InputValueError, ShapeError


class MaskedPool(nn.Module):
    """A permutation-invariant predictor that pools over the real points only: ``mean_i MLP(x_i)`` over ``mask``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mlp = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 4)).double()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask.to(x.dtype)[..., None]
        return (self.mlp(x) * w).sum(dim=1) / w.sum(dim=1)


def _clouds(sizes: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)  # distinct principal axes: stable PCA frames
    return [torch.randn(n, 3, generator=g, dtype=torch.float64) * scales + 1.5 for n in sizes]


def test_pad_sets_places_every_set_and_marks_it():
    items = _clouds([5, 2, 7])
    x, mask = pad_sets(items, value=-9.0)
    assert x.shape == (3, 7, 3) and mask.shape == (3, 7) and mask.dtype == torch.bool
    for i, item in enumerate(items):
        assert torch.equal(x[i, :len(item)], item) and bool(mask[i, :len(item)].all())
        assert bool((x[i, len(item):] == -9.0).all()) and not bool(mask[i, len(item):].any())
    longer, _ = pad_sets(items, length=10)
    assert longer.shape == (3, 10, 3)
    with pytest.raises(ShapeError, match="shorter"):
        pad_sets(items, length=6)
    with pytest.raises(ShapeError, match="items\\[1\\]"):
        pad_sets([torch.randn(4, 3), torch.randn(4, 2)])
    with pytest.raises(DTypeError, match="list of tensors"):
        pad_sets([])
    with pytest.raises(DTypeError, match="items\\[1\\]"):
        pad_sets([torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64)])


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3(), ec.SE3(), ec.E3()], ids=repr)
def test_frame_averaged_does_not_depend_on_the_padding(group):
    items = _clouds([11, 6, 9])
    model = ec.FrameAveraged(MaskedPool(), group)
    unpadded = torch.cat([model(item[None], mask=torch.ones(1, len(item), dtype=torch.bool)) for item in items])
    g = torch.Generator().manual_seed(5)
    for length in (11, 14, 20):
        x, mask = pad_sets(items, length=length)
        x = torch.where(mask[..., None], x, 100 * torch.randn(x.shape, generator=g, dtype=x.dtype))  # junk padding
        assert torch.allclose(model(x, mask=mask), unpadded, atol=1e-10, rtol=0.0)
        frames = pca_frames(x, group, mask)
        for i, item in enumerate(items):
            assert torch.allclose(frames[i], pca_frames(item[None], group)[0], atol=1e-10)


def test_masked_frame_averaging_stays_invariant():
    x, mask = pad_sets(_clouds([8, 12]))
    model = ec.FrameAveraged(MaskedPool(), ec.SE3())
    q = ec.SE3().sample(2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    moved = ec.actions.Points(ec.SE3())(q, x)
    assert torch.allclose(model(moved, mask=mask), model(x, mask=mask), atol=1e-9, rtol=0.0)


def test_mask_errors():
    x, mask = pad_sets(_clouds([4, 3]))
    model = ec.FrameAveraged(MaskedPool(), ec.SO3())
    with pytest.raises(DTypeError, match=r"torch\.bool"):
        model(x, mask=mask.float())
    with pytest.raises(ShapeError, match="mask"):
        model(x, mask=mask[:, :2])
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(InputValueError, match="at least one real element"):
        model(x, mask=empty)


# --- masks in the vector-neuron canonicalizers and Canonicalized ----------------------------------------------

def _canonicalizer(name: str) -> ec.canonicalizers.Canonicalizer:
    torch.manual_seed(0)
    if name in ("SO3", "O3"):
        return ec.canonicalizers.VectorNeurons(name, hidden=8, k=4).double()
    return ec.canonicalizers.ParticleVectorNeurons(name, 1, hidden=8).double()


def _items(name: str, sizes: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3 if name in ("SO3", "O3") else 7, generator=g, dtype=torch.float64) for n in sizes]


def _junk_padded(items: list[torch.Tensor], length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, mask = pad_sets(items, length=length)
    junk = 50 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    return torch.where(mask[..., None], x, junk), mask


@pytest.mark.parametrize("name", ["SO3", "O3", "SE3", "E3"])
def test_padding_changes_neither_the_pose_nor_the_real_canonical_form(name):
    """Eval mode: each padded cloud gets the pose it gets alone (3 real points, fewer than k = 4, included);
    training mode (batch statistics over the real points): the same batch padded to other lengths, with other
    junk, gives the same poses."""
    canon = _canonicalizer(name)
    items = _items(name, [6, 3, 9])
    canon.eval()
    alone = [canon(item[None]) for item in items]
    for length, seed in ((9, 1), (14, 2)):
        x, mask = _junk_padded(items, length, seed)
        res = canon(x, mask=mask)
        for i, item in enumerate(items):
            assert torch.allclose(res.pose[i], alone[i].pose[0], atol=1e-10, rtol=0.0)
            assert torch.allclose(res.canonical[i, :len(item)], alone[i].canonical[0], atol=1e-10, rtol=0.0)
    canon.train()
    x9, m9 = _junk_padded(items, 9, 3)
    x15, m15 = _junk_padded(items, 15, 4)
    with torch.no_grad():
        a, b = canon(x9, mask=m9), canon(x15, mask=m15)
    assert torch.allclose(a.pose, b.pose, atol=1e-10, rtol=0.0)


@pytest.mark.parametrize("name", ["SO3", "SE3"])
def test_masked_poses_stay_equivariant(name):
    canon = _canonicalizer(name).eval()
    group = ec.groups.as_group(name)
    x, mask = _junk_padded(_items(name, [7, 5]), 10, 5)
    action = ec.actions.Points(group) if name == "SO3" else ec.actions.Particles(group)
    g = group.sample(2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    moved = canon(action(g, x), mask=mask)
    want = group.compose(g, canon(x, mask=mask).pose)
    assert torch.allclose(moved.pose, want, atol=1e-9, rtol=0.0)


@pytest.mark.parametrize("name", ["SO3", "O3", "SE3", "E3"])
def test_padded_rows_of_the_canonical_form_are_left_as_they_are(name):
    canon = _canonicalizer(name).eval()
    x, mask = _junk_padded(_items(name, [7, 4]), 9, 8)
    res = canon(x, mask=mask)
    assert torch.equal(res.canonical[~mask], x[~mask])
    unmasked = canon(x)  # without a mask every row is a point and is moved
    assert not torch.equal(unmasked.canonical[~mask], x[~mask])


@pytest.mark.parametrize("name", ["SO3", "O3", "SE3", "E3"])
def test_point_and_particle_actions_leave_padded_rows(name):
    group = ec.groups.as_group(name)
    action = ec.actions.Points(group) if name in ("SO3", "O3") else ec.actions.Particles(group)
    x, mask = _junk_padded(_items(name, [7, 5, 6]), 8, 9)  # no degenerate (collinear) cloud: equivariant poses
    g = group.sample(3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    moved = action(g, x, mask=mask)
    assert torch.equal(moved[~mask], x[~mask])
    assert torch.equal(moved[mask], action(g, x)[mask])
    assert action.accepts_mask and torch.equal(action.act(g, x, mask), moved)
    # poses follow the masked action too: pose(g·x) = g pose(x), and the canonical forms agree on every row
    canon = _canonicalizer(name).eval()
    a, b = canon(x, mask=mask), canon(moved, mask=mask)
    assert torch.allclose(b.pose, group.compose(g, a.pose), atol=1e-9, rtol=0.0)
    assert torch.allclose(b.canonical, a.canonical, atol=1e-9, rtol=0.0)
    with pytest.raises(ShapeError):
        action(g, x, mask=mask[:, :5])
    with pytest.raises(DTypeError):
        action(g, x, mask=mask.double())


def test_actions_without_a_mask_ignore_it_in_act():
    image = ec.actions.Image(ec.C(4))
    x = torch.rand(2, 1, 5, 5)
    assert not image.accepts_mask
    assert torch.equal(image.act(torch.tensor([1, 2]), x, torch.ones(2, 5, dtype=torch.bool)),
                       image(torch.tensor([1, 2]), x))


def test_knn_never_picks_a_padded_neighbour():
    from equicanon.nn.vector_neurons import knn

    x, mask = _junk_padded(_items("SO3", [8, 5]), 12, 7)
    idx = knn(x, 4, mask)
    for i in range(2):
        assert bool(mask[i][idx[i][mask[i]]].all())


def test_canonicalized_passes_the_mask_to_the_canonicalizer_and_the_predictor():
    seen: dict[str, torch.Tensor] = {}

    class Pool(nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            seen["mask"] = mask
            w = mask.to(x.dtype)[..., None]
            return (x.square().sum(-1, keepdim=True) * w).sum(dim=1) / w.sum(dim=1)

    canon = _canonicalizer("SE3").eval()
    items = _items("SE3", [6, 4])
    model = ec.Canonicalized(Pool(), canon)
    x, mask = _junk_padded(items, 11, 8)
    out = model(x, mask=mask)
    assert torch.equal(seen["mask"], mask)
    alone = torch.cat([model(item[None], mask=torch.ones(1, len(item), dtype=torch.bool)) for item in items])
    assert torch.allclose(out, alone, atol=1e-10, rtol=0.0)
    with pytest.raises(ec.errors.ConfigError, match="no padding mask"):
        ec.canonicalizers.GroupConv(ec.C(4), in_channels=1)(torch.rand(2, 1, 9, 9), mask=torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(ShapeError, match="mask"):
        canon(x, mask=mask[:, :5])
    with pytest.raises(DTypeError, match=r"torch\.bool"):
        canon(x, mask=mask.double())


# --- Sort on padded sets ----------------------------------------------------------------------------------------

def _sort(n: int) -> ec.canonicalizers.Sort:
    torch.manual_seed(0)  # the DeepSets scorer's weights do not depend on n
    return ec.canonicalizers.Sort(ec.S(n), 3, hidden=8).double()


def test_sort_orders_the_real_elements_whatever_the_padding():
    items = [torch.randn(k, 3, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in (4, 2, 6)]
    results = []
    for length, seed in ((6, 1), (9, 2)):
        x, mask = _junk_padded(items, length, seed)
        res = _sort(length)(x, mask=mask)
        for i, item in enumerate(items):
            assert bool(mask[i][res.pose[i, :len(item)]].all())  # the real elements come first
            assert torch.equal(res.pose[i, len(item):], torch.arange(len(item), length))  # padding after, in order
        results.append(res)
    for i, item in enumerate(items):
        assert torch.equal(results[0].pose[i, :len(item)], results[1].pose[i, :len(item)])
        assert torch.allclose(results[0].canonical[i, :len(item)], results[1].canonical[i, :len(item)], atol=1e-12)
        assert torch.allclose(results[0].margin, results[1].margin, atol=1e-12)
    alone = _sort(6)(items[2][None])  # a full set: the same as unmasked
    assert torch.equal(alone.pose[0], results[0].pose[2])


def test_sort_masked_poses_follow_a_permutation_of_the_real_elements():
    items = [torch.randn(5, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)]
    x, mask = _junk_padded(items, 8, 3)
    canon = _sort(8)
    res = canon(x, mask=mask)
    perm = torch.tensor([[4, 2, 0, 1, 3, 5, 6, 7]])  # moves the real elements among themselves
    moved = ec.actions.Set(ec.S(8))(perm, x)
    moved_mask = ec.actions.Set(ec.S(8))(perm, mask)
    again = canon(moved, mask=moved_mask)
    assert torch.allclose(again.canonical[0, :5], res.canonical[0, :5], atol=1e-12)
    assert torch.equal(again.pose, ec.S(8).compose(perm, res.pose))


def test_sort_with_a_mask_in_canonicalized_and_what_it_refuses():
    seen: dict[str, torch.Tensor] = {}

    class SetPool(nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            seen["mask"] = mask
            return (x * mask[..., None]).sum(dim=1)

    items = [torch.randn(k, 3, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in (3, 5)]
    x, mask = _junk_padded(items, 7, 4)
    canon = _sort(7)
    model = ec.Canonicalized(SetPool(), canon, keyword_actions={"mask": ec.actions.Set(ec.S(7))})
    out = model(x, mask=mask)
    assert torch.equal(seen["mask"], torch.arange(7)[None] < torch.tensor([[3], [5]]))  # real elements first
    assert torch.allclose(out, torch.stack([item.sum(dim=0) for item in items]), atol=1e-12)
    with pytest.raises(ec.errors.ConfigError, match="padded sets"):
        canon.sampled_poses(x, canon(x, mask=mask), 2)


def test_point_encoder_pools_over_the_real_points_and_canonicalized_molecules_ignore_padding():
    """``PointEncoder(x, mask=m)`` equals the encoder on each cloud alone; with ``ParticleVectorNeurons`` behind
    ``Canonicalized``, a padded batch of particle systems gets the predictions of the systems alone."""
    torch.manual_seed(0)
    encoder = ec.models.PointEncoder(7, 2, 16).double().eval()
    items = _items("SE3", [5, 8, 3], seed=11)
    x, mask = _junk_padded(items, 12, 9)
    alone = torch.cat([encoder(item[None]) for item in items])
    assert torch.allclose(encoder(x, mask=mask), alone, atol=1e-12, rtol=0.0)
    model = ec.Canonicalized(encoder, _canonicalizer("SE3").eval())
    alone = torch.cat([model(item[None]) for item in items])
    assert torch.allclose(model(x, mask=mask), alone, atol=1e-10, rtol=0.0)
    with pytest.raises(InputValueError, match="at least one real element"):
        encoder(x, mask=torch.zeros_like(mask))
