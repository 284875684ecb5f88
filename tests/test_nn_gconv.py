"""Group-convolution layers: ``layer(g·x) == g·layer(x)``.

For C(4), D(4) and C(2) every element moves pixels by index, so the layers are
equivariant to rounding error at odd and even sizes. For C(8) the quarter turns
are exact too, and the 45° elements are measured on a smooth image.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import equicanon as ec
from equicanon.errors import ConfigError, GroupMismatchError, ShapeError
from equicanon.nn import (
    EquivariantAvgPool2d,
    GroupBatchNorm,
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    RegularFeatures,
)
from equicanon.testing import assert_equivariant, equivariance_error

EXACT_GROUPS = [ec.C(4), ec.D(4), ec.C(2)]
SIZES = [28, 29, 32, 33]
FILTERS = ["free", "steerable"]



# Relative error (max |lift(g·x) - g·lift(x)| inside the inscribed disk, over max |lift(x)|) at the
# 45° elements of C(8), smooth input, default (steerable) filters. Measured 0.5%-7% (kernel 3 and 5,
# sizes 28-33); randomly initialised free filters, blurred by bilinear rotation, give 33%-70%.
C8_45_DEGREE_BOUND = 0.15


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _features(group: ec.groups.PlanarFiniteGroup, size: int, channels: int = 3) -> torch.Tensor:
    return _randn(2, channels, group.order, size, size, seed=1)


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", EXACT_GROUPS, ids=repr)
def test_lifting_conv_is_exactly_equivariant(group, size, filters):
    torch.manual_seed(0)
    lift = LiftingConv2d(group, 3, 2, kernel_size=5, filters=filters)
    assert_equivariant(lift, group, ec.actions.Image(group), RegularFeatures(group), _randn(2, 3, size, size))


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", EXACT_GROUPS, ids=repr)
def test_group_conv_is_exactly_equivariant(group, size, filters):
    torch.manual_seed(0)
    conv = GroupConv2d(group, 3, 4, kernel_size=3, filters=filters)
    action = RegularFeatures(group)
    assert_equivariant(conv, group, action, action, _features(group, size))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", EXACT_GROUPS, ids=repr)
def test_group_batch_norm_commutes_with_the_group(group, size, mode):
    torch.manual_seed(0)
    norm = GroupBatchNorm(3)
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    getattr(norm, mode)()
    action = RegularFeatures(group)
    assert_equivariant(norm, group, action, action, _features(group, size))


@pytest.mark.parametrize("pool_mode", ["max", "mean"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", EXACT_GROUPS, ids=repr)
def test_group_pool_gives_features_that_move_like_images(group, size, pool_mode):
    assert_equivariant(GroupPool(pool_mode), group, RegularFeatures(group), ec.actions.Image(group),
                       _features(group, size))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", EXACT_GROUPS, ids=repr)
def test_equivariant_avg_pool_keeps_the_grid_centre(group, size):
    pool = EquivariantAvgPool2d()
    image = ec.actions.Image(group)
    assert_equivariant(pool, group, image, image, _randn(2, 3, size, size))
    assert_equivariant(pool, group, RegularFeatures(group), RegularFeatures(group), _features(group, size))


def test_plain_stride_two_pool_breaks_rotation_equivariance_at_odd_sizes():
    """Why EquivariantAvgPool2d exists: a plain 2x2 stride-2 pool of a 29x29 image drops the last row and column."""
    group = ec.C(4)
    image = ec.actions.Image(group)
    report = equivariance_error(lambda t: F.avg_pool2d(t, 2, 2), group, image, image, _randn(2, 3, 29, 29))
    assert report.max_error > 0.1


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("size", [28, 29])
@pytest.mark.parametrize("group", EXACT_GROUPS, ids=repr)
def test_stack_of_layers_is_exactly_invariant_after_pooling(group, size, mode):
    torch.manual_seed(0)
    net = nn.Sequential(
        LiftingConv2d(group, 3, 4, kernel_size=5), GroupBatchNorm(4), nn.ReLU(),
        EquivariantAvgPool2d(),
        GroupConv2d(group, 4, 4, kernel_size=3), GroupBatchNorm(4), nn.ReLU(),
        GroupPool("max"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    getattr(net, mode)()
    ec.testing.assert_invariant(net, group, ec.actions.Image(group), _randn(2, 3, size, size))


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", EXACT_GROUPS, ids=repr)
def test_pooled_layers_are_the_convolution_then_the_pool_and_exactly_equivariant(group, size, filters):
    """``pool_above``: at even sizes one stride-2 convolution with box-smoothed filters, at odd sizes the
    convolution then the centred 3x3 pool; the same numbers as the layer followed by EquivariantAvgPool2d."""
    torch.manual_seed(0)
    for layer, x, action in ((LiftingConv2d, _randn(2, 3, size, size), ec.actions.Image(group)),
                             (GroupConv2d, _features(group, size), RegularFeatures(group))):
        plain = layer(group, 3, 2, kernel_size=5, filters=filters).double()
        pooled = layer(group, 3, 2, kernel_size=5, filters=filters, pool_above=0).double()
        pooled.load_state_dict(plain.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(pooled(x), EquivariantAvgPool2d()(plain(x)), rtol=1e-12, atol=1e-12)
        assert pooled(x).shape[-1] == (size + 1) // 2
        assert_equivariant(pooled, group, action, RegularFeatures(group), x)


def test_layers_pool_only_maps_larger_than_pool_above():
    lift = LiftingConv2d(ec.C(4), 1, 2, kernel_size=3, pool_above=16)
    assert lift(torch.randn(1, 1, 16, 16)).shape[-2:] == (16, 16)
    assert lift(torch.randn(1, 1, 18, 18)).shape[-2:] == (9, 9)
    assert lift(torch.randn(1, 1, 17, 17)).shape[-2:] == (9, 9)
    assert LiftingConv2d(ec.C(4), 1, 2, kernel_size=3)(torch.randn(1, 1, 64, 64)).shape[-1] == 64  # None: never
    with pytest.raises(ConfigError, match="pool_above"):
        GroupConv2d(ec.C(4), 1, 2, pool_above=-1)


# --- C(8): exact quarter turns, measured 45° elements ---------------------------------------------------------

QUARTER_TURNS_C8 = torch.tensor([0, 2, 4, 6])
EIGHTH_TURNS_C8 = torch.tensor([1, 3, 5, 7])


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("size", SIZES)
def test_c8_layers_are_exact_on_quarter_turns(size, filters):
    group = ec.C(8)
    torch.manual_seed(0)
    lift = LiftingConv2d(group, 3, 4, kernel_size=5, filters=filters)
    conv = GroupConv2d(group, 3, 4, kernel_size=3, filters=filters)
    exact = {"elements": QUARTER_TURNS_C8, "atol": 1e-10, "rtol": 0.0}
    assert_equivariant(lift, group, ec.actions.Image(group), RegularFeatures(group), _randn(2, 3, size, size),
                       **exact)
    assert_equivariant(conv, group, RegularFeatures(group), RegularFeatures(group), _features(group, size), **exact)


def _relative_error_at_45(layer: nn.Module, in_action, x: torch.Tensor, disk: torch.Tensor) -> float:
    """max over the 45° elements of |layer(g·x) - g·layer(x)| inside ``disk``, relative to max |layer(x)|."""
    group = ec.C(8)
    out_action = RegularFeatures(group)
    with torch.no_grad():
        y = layer(x)
        worst = 0.0
        for k in EIGHTH_TURNS_C8.tolist():
            g = torch.full((x.shape[0],), k)
            diff = (layer(in_action(g, x)) - out_action(g, y)).abs().amax(dim=(0, 1, 2))
            worst = max(worst, float(diff[disk].max() / y.abs().max()))
    return worst


def _smooth_batch(smooth_image, size: int) -> torch.Tensor:
    """Two samples of 3 channels of a band-limited image that fades out towards the inscribed circle."""
    base = smooth_image(size)
    return torch.cat([base * torch.tensor([1.0, 0.5, -0.7], dtype=torch.float64)[None, :, None, None],
                      base.flip(-1) * torch.tensor([-0.3, 1.0, 0.2], dtype=torch.float64)[None, :, None, None]])


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("size", SIZES)
def test_c8_layers_at_45_degrees_on_a_smooth_image(size, kernel_size, smooth_image, inscribed_disk):
    """Steerable filters (the default for C(8)) make 45° nearly as good as a quarter turn."""
    group = ec.C(8)
    torch.manual_seed(0)
    x = _smooth_batch(smooth_image, size)
    disk = inscribed_disk(size, size)
    errors = {}
    for filters in ("auto", "free"):
        torch.manual_seed(0)
        lift = LiftingConv2d(group, 3, 4, kernel_size=kernel_size, filters=filters).double()
        conv = GroupConv2d(group, 4, 4, kernel_size=kernel_size, filters=filters).double()
        with torch.no_grad():
            features = lift(x)
        errors[filters] = (_relative_error_at_45(lift, ec.actions.Image(group), x, disk),
                           _relative_error_at_45(conv, RegularFeatures(group), features, disk))
    print(f"C(8) 45° relative error, size {size}, kernel {kernel_size}: "
          f"steerable lift {errors['auto'][0]:.2e} conv {errors['auto'][1]:.2e}; "
          f"free lift {errors['free'][0]:.2e} conv {errors['free'][1]:.2e}")
    assert max(errors["auto"]) < C8_45_DEGREE_BOUND
    assert errors["auto"][0] < errors["free"][0] and errors["auto"][1] < errors["free"][1]


# --- checks on user input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [LiftingConv2d, GroupConv2d])
@pytest.mark.parametrize("kernel_size", [2, 4])
def test_even_kernel_size_is_a_config_error(layer, kernel_size):
    with pytest.raises(ConfigError, match="odd"):
        layer(ec.C(4), 3, 4, kernel_size=kernel_size)


@pytest.mark.parametrize("layer", [LiftingConv2d, GroupConv2d])
def test_unknown_filter_kind_is_a_config_error(layer):
    with pytest.raises(ConfigError, match="steerable"):
        layer(ec.C(4), 3, 4, filters="steerible")


def test_lifting_conv_names_the_expected_channel_count():
    lift = LiftingConv2d(ec.C(4), 5, 4, kernel_size=3)
    with pytest.raises(ShapeError, match="5") as info:
        lift(torch.randn(2, 3, 9, 9))
    assert "(2, 3, 9, 9)" in str(info.value)


def test_group_conv_names_the_expected_channel_count_and_group_axis():
    conv = GroupConv2d(ec.D(4), 5, 4, kernel_size=3)
    with pytest.raises(ShapeError, match="5"):
        conv(torch.randn(2, 3, 8, 9, 9))
    with pytest.raises(ShapeError, match="8"):
        conv(torch.randn(2, 5, 4, 9, 9))  # group axis of C(4) size, but D(4) has 8 elements
    with pytest.raises(ShapeError):
        conv(torch.randn(2, 5, 9, 9))  # an image, not regular features


@pytest.mark.parametrize("group", [ec.SO2(), ec.O2(), ec.SO3(), ec.S(3)], ids=repr)
@pytest.mark.parametrize("make", [
    lambda g: LiftingConv2d(g, 3, 4),
    lambda g: GroupConv2d(g, 3, 4),
    lambda g: RegularFeatures(g),
], ids=["LiftingConv2d", "GroupConv2d", "RegularFeatures"])
def test_non_finite_planar_groups_are_rejected(make, group):
    with pytest.raises(GroupMismatchError, match=r"C\(n\) or D\(n\)"):
        make(group)


def test_group_pool_mode_is_checked():
    with pytest.raises(ConfigError, match="max"):
        GroupPool("sum")


@pytest.mark.parametrize("shape", [(28, 29), (29, 28), (7, 12)])
@pytest.mark.parametrize("group", [ec.C(2), ec.D(2)], ids=repr)
def test_equivariant_avg_pool_keeps_the_centre_of_rectangles_of_mixed_parity(group, shape):
    pool = EquivariantAvgPool2d()
    image = ec.actions.Image(group)
    x = _randn(2, 3, *shape)
    assert pool(x).shape[-2:] == ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    assert_equivariant(pool, group, image, image, x)
    lift = LiftingConv2d(group, 3, 2, kernel_size=3, pool_above=0).double()
    assert_equivariant(lift, group, image, RegularFeatures(group), x)


# --- filters built once in eval mode ------------------------------------------------------------------------


def _layers(group: ec.groups.PlanarFiniteGroup, filters: str) -> list[tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    return [(LiftingConv2d(group, 3, 4, kernel_size=5, filters=filters).double(), _randn(2, 3, 11, 11)),
            (GroupConv2d(group, 3, 4, kernel_size=3, filters=filters).double(), _features(group, 10))]


CACHE_CASES = pytest.mark.parametrize("group,filters", [(g, f) for g in (ec.C(8), ec.D(4)) for f in FILTERS],
                                      ids=lambda v: v if isinstance(v, str) else repr(v))


def _evaluated(group: ec.groups.PlanarFiniteGroup, filters: str) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """The layers of :func:`_layers` in eval mode, with their first output (which builds the cache)."""
    out = []
    for layer, x in _layers(group, filters):
        layer.eval()
        with torch.no_grad():
            out.append((layer, x, layer(x)))
    return out


def _uncached(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's output with its filters built afresh (a copy in training mode; no batch statistics here)."""
    fresh = copy.deepcopy(layer).train()
    with torch.no_grad():
        return fresh(x)


@CACHE_CASES
def test_eval_mode_builds_filters_once_and_gives_the_same_outputs(group, filters):
    for layer, x, first in _evaluated(group, filters):
        cached = layer._filter_cache[1]
        with torch.no_grad():
            second = layer(x)
        assert layer._filter_cache[1] is cached  # reused, not rebuilt
        torch.testing.assert_close(first, _uncached(layer, x), rtol=0, atol=0)
        torch.testing.assert_close(second, first, rtol=0, atol=0)
        with torch.inference_mode():
            torch.testing.assert_close(layer(x), first, rtol=0, atol=0)


@CACHE_CASES
def test_cached_filters_follow_optimizer_steps_load_state_dict_and_dtype(group, filters):
    for layer, x, before in _evaluated(group, filters):
        opt = torch.optim.SGD(layer.parameters(), lr=0.5)
        layer.train()
        layer(x).square().mean().backward()
        opt.step()
        layer.eval()
        with torch.no_grad():
            stepped = layer(x)
        assert not torch.allclose(stepped, before)
        torch.testing.assert_close(stepped, _uncached(layer, x), rtol=0, atol=0)

        other = copy.deepcopy(layer)
        with torch.no_grad():
            for p in other.parameters():
                p.normal_()
        layer.load_state_dict(other.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(layer(x), _uncached(other, x), rtol=0, atol=0)
            single = layer.float()(x.float())
        torch.testing.assert_close(single, _uncached(other, x).float(), rtol=1e-5, atol=1e-5)

        with torch.no_grad():  # a write through .data is not versioned: clear_filter_cache is the way
            layer.weight.data.mul_(2.0)
        layer.clear_filter_cache()
        with torch.no_grad():
            torch.testing.assert_close(layer(x.float()), _uncached(layer, x.float()), rtol=0, atol=0)


@pytest.mark.parametrize("group", [ec.C(8), ec.D(4)], ids=repr)
def test_eval_mode_with_weight_gradients_builds_filters_in_the_graph(group):
    """Fine-tuning in eval mode (frozen batch statistics) still trains the filters; a frozen layer in eval
    mode reuses filters built under inference_mode and still passes gradients to its input."""
    for layer, x in _layers(group, "steerable"):
        layer.eval()
        layer(x).square().mean().backward()
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        assert layer._filter_cache is None
        layer.requires_grad_(False)
        with torch.inference_mode():
            expected = layer(x)
        x = x.clone().requires_grad_(True)
        out = layer(x)
        torch.testing.assert_close(out.detach(), expected, rtol=0, atol=0)
        out.square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", [9, 10])
@pytest.mark.parametrize("group", EXACT_GROUPS, ids=repr)
def test_layers_with_cached_filters_stay_exactly_equivariant(group, size, dtype):
    torch.manual_seed(0)
    lift = LiftingConv2d(group, 3, 4, kernel_size=5).to(dtype).eval().requires_grad_(False)
    conv = GroupConv2d(group, 4, 4, kernel_size=3).to(dtype).eval().requires_grad_(False)
    x = _randn(2, 3, size, size).to(dtype)
    # the checker runs a copy under no_grad: its first call builds the filters, the moved inputs reuse them
    assert_equivariant(lift, group, ec.actions.Image(group), RegularFeatures(group), x)
    assert_equivariant(conv, group, RegularFeatures(group), RegularFeatures(group), lift(x))
    assert lift._filter_cache is not None  # lift(x) above, in eval mode with frozen weights
