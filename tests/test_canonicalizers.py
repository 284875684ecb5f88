"""Canonicalizers: ``canonical(g·x) == canonical(x)`` and ``pose(g·x) == g pose(x)``.

One parametrized test walks the whole registry; the rest pins down
:class:`~equicanon.canonicalizers.GroupConv` (prior, crop, Gumbel noise,
statelessness, configuration errors) and the functional core (straight-through
estimator, Gram–Schmidt).
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
import torch.nn.functional as F

import equicanon as ec
from equicanon.canonicalizers import Canonicalization, GroupConv, available, create, entry
from equicanon.canonicalizers.functional import discrete_canonicalize, gram_schmidt, straight_through
from equicanon.errors import ConfigError, GroupMismatchError, ShapeError
from equicanon.nn import LiftingConv2d
from equicanon.testing import assert_canonicalizer, canonicalizer_error

SIZES = [28, 29, 32, 33]



# float32 tolerances for interpolating canonicalizers (SO2, O2) on the quarter turns and flips. The pose
# is a float32 Gram–Schmidt of the logits (measured worst 6e-5 over 40 random inits and inputs); the
# canonical form rotates a randn image by that pose, and bilinear interpolation turns a 1e-5 pose error
# into up to ~1e-3 of pixel error (measured worst 5.7e-3 over the same 40 draws).
FLOAT32_POSE_ATOL = 1e-4
FLOAT32_CANONICAL_ATOL = 1e-2


def _cases() -> list:
    """Image cases of the registry (input shapes with a "size" placeholder); other data: test_registry_geometric.py."""
    return [
        pytest.param(case, id=f"{name}:{case.name}")
        for name in available()
        for case in entry(name).test_cases()
        if "size" in case.input_shape
    ]


EXACT_CASES = [p for p in _cases() if p.values[0].exact]
INEXACT_CASES = [p for p in _cases() if not p.values[0].exact]


def _input(case, size: int, seed: int = 0) -> torch.Tensor:
    shape = tuple(size if s == "size" else s for s in case.input_shape)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _make(case, mode: str = "eval"):
    torch.manual_seed(0)
    canon = case.make()
    return canon.train() if mode == "train" else canon.eval()


def _signed_permutations(group, elements: torch.Tensor) -> torch.Tensor:
    """The elements whose matrix maps the pixel grid onto itself (quarter turns and flips), as a boolean mask."""
    m = group.matrix(elements, dtype=torch.float64)
    return ((m - m.round()).abs() < 1e-12).all(dim=(-2, -1))


def test_registry_is_not_empty_and_names_build_their_class():
    assert "group_conv" in available()
    for name in available():
        for case in entry(name).test_cases():
            assert isinstance(case.make(), entry(name).cls)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", EXACT_CASES)
def test_registered_canonicalizer_is_exactly_invariant(case, size, dtype, mode):
    """Exact cases: every testing element, float32 within 1e-5, float64 at the default tolerance."""
    canon = _make(case, mode)
    tol = {"atol": 1e-5, "rtol": 0.0} if dtype == torch.float32 else {}
    assert_canonicalizer(canon, _input(case, size), dtype=dtype, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", INEXACT_CASES)
def test_registered_canonicalizer_is_invariant_on_quarter_turns_and_flips(case, size, dtype):
    canon = _make(case)
    group = canon.group
    elements = group.testing_elements(dtype=torch.float64)
    elements = elements[_signed_permutations(group, elements)]
    assert group.batch_size(elements) >= 4
    x = _input(case, size)
    if dtype == torch.float64:
        assert_canonicalizer(canon, x, elements=elements, dtype=dtype)
        return
    report = canonicalizer_error(canon, x, elements=elements, dtype=dtype)
    assert report.pose.max_error <= FLOAT32_POSE_ATOL, str(report.pose)
    assert report.canonical.max_error <= FLOAT32_CANONICAL_ATOL, str(report.canonical)


@pytest.mark.parametrize("case", INEXACT_CASES)
def test_registered_canonicalizer_error_at_interpolated_angles_is_measured(case, smooth_image):
    """45°, 30°, ... interpolate. At random initialisation on randn images (which a 45° bilinear rotation
    visibly blurs) the pose is essentially unrelated; on a smooth image it is close (a few % for SO2).

    Only a sanity bound is asserted: results are finite; a bilinear rotation with zero padding never
    leaves ``[-max|x|, max|x|]``, so the canonical error is at most ``2 max|x|``; entries of orthogonal
    matrices differ by at most 2.
    """
    canon = _make(case)
    group = canon.group
    elements = group.testing_elements(dtype=torch.float64)
    elements = elements[~_signed_permutations(group, elements)]
    for size in SIZES:
        base = smooth_image(size)
        smooth = torch.cat([base * torch.tensor([1.0, 0.5, -0.7], dtype=torch.float64)[None, :, None, None],
                            base.flip(-1) * torch.tensor([-0.3, 1.0, 0.2], dtype=torch.float64)[None, :, None, None]])
        for kind, x in (("randn", _input(case, size)), ("smooth", smooth)):
            report = canonicalizer_error(canon, x, elements=elements)
            print(f"\n{case.name} size {size} {kind} input (max |x| {float(x.abs().max()):.2f}): canonical errors "
                  + ", ".join(f"{e:.2e}" for e in report.canonical.errors)
                  + " | pose errors " + ", ".join(f"{e:.2e}" for e in report.pose.errors)
                  + f" | elements {report.canonical.elements}")
            assert all(math.isfinite(e) for e in report.canonical.errors + report.pose.errors)
            assert report.canonical.max_error <= 2 * float(x.abs().max()) + 1e-9
            if not group.is_finite:
                assert report.pose.max_error <= 2 + 1e-9


@pytest.mark.parametrize("case", _cases())
def test_training_mode_with_gradients_keeps_canonical_form_exact(case):
    """The straight-through path (train mode, grad enabled) has the hard canonical form as its value."""
    canon = _make(case, "train")
    group, action = canon.group, canon.action
    x = _input(case, 29).float()
    res = canon(x)
    if group.is_finite and canon.trainable:
        assert res.canonical.requires_grad
        assert torch.equal(res.canonical, action(group.inverse(res.pose), x))
        assert torch.equal(res.pose, res.logits.argmax(dim=-1))
    elements = group.testing_elements(dtype=torch.float32)
    elements = elements[_signed_permutations(group, elements)]
    for k in range(group.batch_size(elements)):
        g = group.expand(group.take(elements, k), x.shape[0])
        moved = canon(action(g, x))
        if case.exact:
            assert torch.equal(moved.canonical, res.canonical), group.describe(g)
        else:
            torch.testing.assert_close(moved.canonical, res.canonical, atol=FLOAT32_CANONICAL_ATOL, rtol=0)


# --- non-square images ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("group", [ec.C(4), ec.D(4), ec.C(8)], ids=repr)
def test_quarter_turn_groups_reject_non_square_images(group, mode):
    torch.manual_seed(0)
    canon = GroupConv(group, 3, hidden=4, kernel_size=3)
    getattr(canon, mode)()
    with pytest.raises(ShapeError, match="square"):
        canon(torch.randn(2, 3, 28, 33))


@pytest.mark.parametrize("shape", [(28, 33), (29, 32)])
@pytest.mark.parametrize("group", [ec.C(2), ec.D(1), ec.D(2), ec.SO2(), ec.O2()], ids=repr)
def test_shape_keeping_groups_canonicalize_non_square_images(group, shape):
    """Half turns and flips map an H x W grid onto itself, so these canonicalizers work on any rectangle."""
    torch.manual_seed(0)
    canon = GroupConv(group, 3, hidden=4, kernel_size=3).eval()
    elements = None
    if not group.is_finite:  # keep the elements whose matrix is diagonal: identity, half turn, flips
        elements = group.testing_elements(dtype=torch.float64)
        elements = elements[(elements[:, 0, 1] == 0) & _signed_permutations(group, elements)]
        assert group.batch_size(elements) >= 2
    x = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    report = assert_canonicalizer(canon, x, elements=elements)
    assert len(report.canonical.errors) >= 2


# --- GroupConv: prior -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [ec.C(4), ec.D(4), ec.C(8)], ids=repr)
def test_discrete_prior_is_cross_entropy_against_the_identity(group):
    torch.manual_seed(0)
    canon = GroupConv(group, 3, hidden=4, kernel_size=3)
    res = canon(torch.randn(5, 3, 15, 15))
    loss = canon.prior_loss(res)
    assert loss.ndim == 0
    expected = -torch.log_softmax(res.logits, dim=-1)[:, 0].mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()  # the prior trains the canonicalizer
    lift = next(m for m in canon.modules() if isinstance(m, LiftingConv2d))
    assert lift.weight.grad is not None and lift.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("group", [ec.SO2(), ec.O2()], ids=repr)
def test_continuous_prior_is_squared_frobenius_distance_to_identity(group):
    torch.manual_seed(0)
    canon = GroupConv(group, 3, hidden=4, kernel_size=3, refine=False).double()
    res = canon(torch.randn(5, 3, 15, 15, dtype=torch.float64))
    loss = canon.prior_loss(res)
    assert loss.ndim == 0
    eye = torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(loss, ((res.pose - eye) ** 2).sum(dim=(-2, -1)).mean())
    if isinstance(group, ec.SO2):  # for a rotation by θ, ‖R − I‖²_F = 4 − 4 cos θ
        theta = group.angle(res.pose)
        torch.testing.assert_close(loss, (4 - 4 * torch.cos(theta)).mean())


def _train_prior(canon: GroupConv, x: torch.Tensor, steps: int = 30) -> list[float]:
    opt = torch.optim.Adam(canon.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        loss = canon.prior_loss(canon(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("group", [ec.C(4), ec.D(4), ec.C(8)], ids=repr)
def test_minimizing_the_prior_makes_identity_the_pose(group):
    torch.manual_seed(0)
    canon = GroupConv(group, 3, hidden=4, kernel_size=3).train()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    _train_prior(canon, x)
    with torch.no_grad():
        rate = float((canon(x).pose == 0).float().mean())
    assert rate >= 0.75, f"identity rate after 30 prior steps: {rate}"


def test_minimizing_the_prior_pulls_continuous_poses_to_identity():
    torch.manual_seed(0)
    canon = GroupConv(ec.SO2(), 3, hidden=4, kernel_size=3, refine=False).train()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    losses = _train_prior(canon, x)
    assert losses[-1] < 0.2 * losses[0], losses


# --- GroupConv: crop, Gumbel noise, statelessness -------------------------------------------------------------


@pytest.mark.parametrize("resize", [None, 9])
def test_network_sees_only_the_centre_crop_but_canonical_is_the_full_image(resize):
    torch.manual_seed(0)
    group = ec.C(4)
    canon = GroupConv(group, 3, hidden=4, kernel_size=3, crop=0.5, resize=resize).eval()
    x = torch.randn(2, 3, 28, 28)
    outside = torch.ones(28, 28, dtype=torch.bool)
    outside[7:21, 7:21] = False  # the centre half: 7 pixels off each side
    x_out = torch.where(outside, torch.randn(2, 3, 28, 28), x)
    x_in = x.clone()
    x_in[..., 14, 14] += 10.0
    with torch.no_grad():
        res, res_out, res_in = canon(x), canon(x_out), canon(x_in)
    assert torch.equal(res.logits, res_out.logits)
    assert not torch.equal(res.logits, res_in.logits)
    assert res.canonical.shape == x.shape
    assert torch.equal(res.canonical, canon.action(group.inverse(res.pose), x))
    assert torch.equal(res_out.canonical, canon.action(group.inverse(res_out.pose), x_out))


def test_gumbel_noise_is_added_in_training_only():
    torch.manual_seed(0)
    group = ec.C(4)
    canon = GroupConv(group, 3, hidden=4, kernel_size=3, gumbel=True)
    x = torch.randn(8, 3, 15, 15, generator=torch.Generator().manual_seed(0))
    canon.eval()
    with torch.no_grad():
        a, b = canon(x), canon(x)
    assert torch.equal(a.pose, b.pose) and torch.equal(a.canonical, b.canonical)
    assert torch.equal(a.pose, a.logits.argmax(-1))
    assert_canonicalizer(canon, x)
    canon.train()
    with torch.no_grad():
        results = [canon(x) for _ in range(10)]
    for r in results[1:]:  # logits are reported without noise
        torch.testing.assert_close(r.logits, results[0].logits)
    noisy = torch.stack([r.pose for r in results])
    assert (noisy != results[0].logits.argmax(-1)).any()


def test_calls_do_not_interact():
    torch.manual_seed(0)
    canon = GroupConv(ec.D(4), 3, hidden=4, kernel_size=3).eval()
    xa, xb = torch.randn(2, 3, 15, 15), torch.randn(3, 3, 15, 15)
    attributes = set(vars(canon))
    state = {k: v.clone() for k, v in canon.state_dict().items()}
    with torch.no_grad():
        ra = canon(xa)
        canon(xb)
        ra_again = canon(xa)
    assert torch.equal(ra.canonical, ra_again.canonical) and torch.equal(ra.pose, ra_again.pose)
    assert set(vars(canon)) == attributes
    assert all(torch.equal(v, state[k]) for k, v in canon.state_dict().items())


def test_one_module_serves_several_threads():
    torch.manual_seed(0)
    canon = GroupConv(ec.C(4), 3, hidden=4, kernel_size=3).eval()
    inputs = [torch.randn(2, 3, 15, 15, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.no_grad():
        expected = [canon(x).canonical for x in inputs]
        got: list[torch.Tensor | None] = [None] * len(inputs)

        def work(i: int) -> None:
            with torch.no_grad():
                got[i] = canon(inputs[i]).canonical

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


@pytest.mark.parametrize("case", _cases())
def test_input_is_never_modified(case):
    canon = _make(case, "train")
    x = _input(case, 28).float().requires_grad_(True)
    before = x.detach().clone()
    res = canon(x)
    (res.canonical.square().sum() + canon.prior_loss(res)).backward()
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize("kwargs", [
    {"crop": 1.5}, {"crop": 0}, {"crop": "0.8"}, {"temperature": 0}, {"temperature": -1.0},
    {"layers": 1}, {"hidden": 0}, {"kernel_size": 4}, {"resize": 0}, {"rotations": 0},
], ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()))
def test_invalid_configuration_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        GroupConv(ec.C(4), 3, **kwargs)


@pytest.mark.parametrize("hidden", [-1, 0])
def test_a_bad_hidden_width_is_reported_as_hidden(hidden):
    with pytest.raises(ConfigError, match=f"^hidden: expected an integer >= 1, got {hidden}$"):
        GroupConv(ec.C(4), 3, hidden=hidden)


def test_unknown_canonicalizer_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'group_conv'"):
        create("group_cnv", group=ec.C(4), in_channels=3)


def test_create_builds_a_working_canonicalizer_by_name():
    torch.manual_seed(0)
    canon = create("group_conv", group=ec.C(4), in_channels=3, hidden=4, kernel_size=3).eval()
    assert isinstance(canon, GroupConv)
    assert_canonicalizer(canon, torch.randn(2, 3, 13, 13, dtype=torch.float64))


@pytest.mark.parametrize("group", [ec.SO3(), ec.O3(), ec.S(4)], ids=repr)
def test_non_planar_group_is_a_group_mismatch(group):
    with pytest.raises(GroupMismatchError):
        GroupConv(group, 3)


# --- functional core: straight-through ------------------------------------------------------------------------


def test_straight_through_value_is_hard_and_gradient_reaches_both():
    hard = torch.randn(3, 4, requires_grad=True)
    soft = torch.randn(3, 4, requires_grad=True)
    out = straight_through(hard, soft)
    assert torch.equal(out, hard)
    w = torch.randn(3, 4)
    (out * w).sum().backward()
    assert torch.equal(hard.grad, w) and torch.equal(soft.grad, w)


def _inverse_transform_reference(group, k: int, x: torch.Tensor) -> torch.Tensor:
    """``g_k⁻¹·x`` with torch.rot90/flip: index k + n·s of D(n) is r^k f^s, so g⁻¹ = f^s r^-k."""
    n = group.n
    out = torch.rot90(x, -(k % n), dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= n else out


@pytest.mark.parametrize("noise", [False, True], ids=["plain", "gumbel"])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
@pytest.mark.parametrize("group", [ec.C(4), ec.D(4)], ids=repr)
def test_discrete_canonicalize_gradient_is_that_of_the_softmax_mixture(group, temperature, noise):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 7, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(3, group.order, generator=gen, dtype=torch.float64, requires_grad=True)
    eps = -torch.log(-torch.log(torch.rand(3, group.order, generator=gen, dtype=torch.float64))) if noise else None
    w = torch.randn(3, 2, 7, 7, generator=gen, dtype=torch.float64)

    canonical, pose = discrete_canonicalize(x, logits, group, ec.actions.Image(group), temperature=temperature,
                                            noise=eps)
    grad_x, grad_logits = torch.autograd.grad((canonical * w).sum(), (x, logits))

    scores = logits if eps is None else logits + eps
    copies = torch.stack([_inverse_transform_reference(group, k, x) for k in range(group.order)], dim=1)
    weights = torch.softmax(scores / temperature, dim=-1)
    soft = (weights[:, :, None, None, None] * copies).sum(1)
    hard = copies[torch.arange(3), scores.argmax(-1)]
    assert torch.equal(pose, scores.argmax(-1))
    assert torch.equal(canonical, hard.detach())
    ref_x, ref_logits = torch.autograd.grad(((hard + soft) * w).sum(), (x, logits))
    torch.testing.assert_close(grad_logits, ref_logits, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_x, ref_x, atol=1e-12, rtol=0)
    assert grad_logits.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("size", [9, 10])
@pytest.mark.parametrize("group", [ec.C(8), ec.D(8), ec.C(3), ec.C(4), ec.D(4)], ids=repr)
def test_mixture_gradient_without_full_size_copies_equals_the_mixture(group, size, dtype, monkeypatch):
    """An input that needs no gradient takes the path that rebuilds each copy in backward: same canonical
    form and pose, and the logits' gradient of the softmax mixture of all |G| copies, to rounding; it never
    builds the |G| copies at once (all_transforms is not called)."""
    from equicanon.canonicalizers import functional

    gen = torch.Generator().manual_seed(size)
    action = ec.actions.Image(group)
    x = torch.randn(4, 2, size, size, generator=gen, dtype=dtype)
    logits = torch.randn(4, group.order, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(4, 2, size, size, generator=gen, dtype=dtype)
    copies = functional.all_transforms(group, action, x)
    ref, ref_pose = discrete_canonicalize(x, logits, group, action, temperature=0.5, copies=copies)
    (ref_grad,) = torch.autograd.grad((ref * w).sum(), logits)

    def no_copies(*args, **kwargs):
        raise AssertionError("built all |G| copies")

    monkeypatch.setattr(functional, "all_transforms", no_copies)
    canonical, pose = discrete_canonicalize(x, logits, group, action, temperature=0.5)
    (grad,) = torch.autograd.grad((canonical * w).sum(), logits)
    assert torch.equal(pose, ref_pose)
    assert torch.equal(canonical, ref)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(grad, ref_grad, atol=tol, rtol=0)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("group", [ec.C(8), ec.D(8), ec.C(16), ec.C(6), ec.D(3)], ids=repr)
def test_exact_factors_split_each_element_into_an_index_move_after_a_residual(group):
    from equicanon.canonicalizers.functional import _exact_factors

    elements = group.elements()
    factors = _exact_factors(group, elements)
    residuals = {r for r, _ in factors if r >= 0}
    # C(8), D(8): the 45° turn is the one residual; C(16): 22.5°, 45°, 67.5°; C(6): 60°, 120° (the half turn is
    # exact); D(3): 120°, 240° (the flip is exact)
    expected = {"C(8)": 1, "D(8)": 1, "C(16)": 3, "C(6)": 2, "D(3)": 2}[repr(group)]
    assert len(residuals) == expected
    for k, (r, q) in enumerate(factors):
        if q is None:
            assert r == k
            continue
        rho = group.identity(1) if r < 0 else elements[r:r + 1]
        assert torch.equal(group.compose(q, rho), elements[k:k + 1])
        m = group.matrix(q, dtype=torch.float64)
        assert torch.equal(m, m.round())


def test_discrete_canonicalize_checks_logit_shape():
    group = ec.C(4)
    with pytest.raises(ShapeError, match=r"\(2, 4\)"):
        discrete_canonicalize(torch.randn(2, 1, 5, 5), torch.randn(2, 8), group, ec.actions.Image(group))


# --- gradients of continuous canonicalizers -------------------------------------------------------------------


@pytest.mark.parametrize("group", [ec.SO2(), ec.O2()], ids=repr)
def test_continuous_canonicalizer_passes_gradcheck(group):
    torch.manual_seed(0)
    canon = GroupConv(group, 1, hidden=2, kernel_size=3, batch_norm=False).double().eval()
    x = torch.randn(1, 1, 9, 9, dtype=torch.float64, requires_grad=True)

    def f(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        res: Canonicalization = canon(t)
        return res.canonical, res.pose

    # full Jacobian for SO2; O2 takes the same path with one more sign, so a random projection suffices
    assert torch.autograd.gradcheck(f, (x,), fast_mode=isinstance(group, ec.O2))


GS_CONFIGS = [(2, True, 2), (2, True, 1), (2, False, 2), (3, True, 3), (3, True, 2), (3, False, 3)]


def _vectors(d: int, k: int, spread: float = 1.0, seed: int = 0) -> torch.Tensor:
    """``(4, d, k)`` random columns. With ``spread < 1`` the input is nearly degenerate: the second column is
    at an angle ``≈ spread`` to the first (or, for a single column, the vector has norm ``≈ spread``)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(4, d, k, generator=gen, dtype=torch.float64)
    if spread >= 1:
        return v
    if k == 1:
        return spread * v
    a, n = v[:, :, 0], v[:, :, 1]
    unit = a / a.norm(dim=-1, keepdim=True)
    n = n - (n * unit).sum(-1, keepdim=True) * unit
    n = n / n.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)
    return torch.cat([a[..., None], (a + spread * n)[..., None], v[:, :, 2:]], dim=-1)


@pytest.mark.parametrize("spread", [1.0, 1e-3], ids=["generic", "nearly-collinear"])
@pytest.mark.parametrize(("d", "special", "k"), GS_CONFIGS)
def test_gram_schmidt_passes_gradcheck(d, special, k, spread):
    v = _vectors(d, k, spread).requires_grad_(True)
    # near-degenerate inputs make the map steep (derivatives ~1/spread): a finite-difference step of 1e-7
    # stays in its linear range
    assert torch.autograd.gradcheck(lambda t: gram_schmidt(t, special=special), (v,), eps=1e-7)


@pytest.mark.parametrize(("d", "special", "k"), GS_CONFIGS)
def test_gram_schmidt_gives_orthogonal_matrices_that_rotate_with_the_input(d, special, k):
    v = _vectors(d, k)
    q = gram_schmidt(v, special=special)
    eye = torch.eye(d, dtype=torch.float64)
    # eps in quadrature shortens a column of norm r by eps²/(2r²): 1e-12-ish for these inputs
    torch.testing.assert_close(q.transpose(-1, -2) @ q, eye.expand_as(q), atol=1e-8, rtol=0)
    if special:
        torch.testing.assert_close(torch.linalg.det(q), torch.ones(4, dtype=torch.float64))
    rot = (ec.SO2() if d == 2 else ec.SO3()).sample(4, generator=torch.Generator().manual_seed(1),
                                                    dtype=torch.float64)
    torch.testing.assert_close(gram_schmidt(rot @ v, special=special), rot @ q, atol=1e-10, rtol=0)
    if not special:  # O(d) poses keep reflections
        mirror = torch.diag(torch.tensor([-1.0] + [1.0] * (d - 1), dtype=torch.float64))
        torch.testing.assert_close(gram_schmidt(mirror @ v, special=False), mirror @ q, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["collinear", "zero"])
@pytest.mark.parametrize(("d", "special", "k"), GS_CONFIGS)
def test_gram_schmidt_is_finite_on_degenerate_inputs(d, special, k, kind):
    v = _vectors(d, k)
    v = v[:, :, :1].expand_as(v).clone() if kind == "collinear" else torch.zeros_like(v)
    v.requires_grad_(True)
    q = gram_schmidt(v, special=special)
    q.square().sum().backward()
    assert torch.isfinite(q).all() and torch.isfinite(v.grad).all()


def test_gram_schmidt_checks_shapes():
    with pytest.raises(ShapeError):
        gram_schmidt(torch.randn(2, 3, 1), special=True)
    with pytest.raises(ShapeError, match="d vectors"):
        gram_schmidt(torch.randn(2, 3, 2), special=False)


def test_prior_gradient_matches_a_manual_cross_entropy():
    """The prior is an ordinary differentiable loss of the logits (no straight-through involved)."""
    logits = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    canon = GroupConv(ec.C(8), 1, hidden=2, kernel_size=3)
    res = Canonicalization(torch.zeros(4, 1, 3, 3), torch.zeros(4, dtype=torch.long), ec.C(8), logits=logits)
    (grad,) = torch.autograd.grad(canon.prior_loss(res), logits)
    expected = (torch.softmax(logits, -1) - F.one_hot(torch.zeros(4, dtype=torch.long), 8)) / 4
    torch.testing.assert_close(grad, expected.detach())
