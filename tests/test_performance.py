"""Fast paths of canonicalization: inference mode, autocast, chunking, pooling, blocked k-NN, and the benchmark script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import equicanon as ec
from equicanon.canonicalizers import Contrastive, GroupConv, VectorNeurons
from equicanon.models import ConvEncoder
from equicanon.nn import vector_neurons
from equicanon.testing import assert_invariant

ROOT = Path(__file__).resolve().parent.parent


def _images(batch: int = 3, size: int = 24) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _models() -> dict[str, ec.Canonicalized]:
    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), nn.LazyLinear(5))
    return {
        "group_conv": ec.Canonicalized(head, GroupConv(ec.C(4), 3, hidden=4, kernel_size=3, crop=0.8, resize=16,
                                                       pool_above=8)).eval(),  # pools the 16-px view once
        "contrastive": ec.Canonicalized(nn.Sequential(nn.Flatten(), nn.LazyLinear(5)),
                                        Contrastive(ec.C(4), ConvEncoder(3, out_dim=16, hidden=4), crop=0.8, resize=16)).eval(),
    }


@pytest.mark.parametrize("name", ["group_conv", "contrastive"])
def test_inference_mode_gives_the_float32_result(name: str) -> None:
    model, x = _models()[name], _images()
    with torch.no_grad():
        want, res = model(x, return_canonicalization=True)
    with torch.inference_mode():
        got, res_inf = model(x, return_canonicalization=True)
    assert torch.equal(res_inf.pose, res.pose)
    assert torch.equal(res_inf.canonical, res.canonical)
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["group_conv", "contrastive"])
def test_bfloat16_autocast_inference_keeps_poses_and_dtypes(name: str) -> None:
    model = _models()[name]
    # an input with one clear orientation: poses of its rotated copies must be its pose moved by g
    x = _images(1).repeat(4, 1, 1, 1)
    g = torch.arange(4)
    moved = ec.actions.Image(ec.C(4))(g, x)
    with torch.inference_mode():
        _, ref = model(moved, return_canonicalization=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, res = model(moved, return_canonicalization=True)
    assert res.canonical.dtype == torch.float32  # the canonical form stays in the input's dtype
    assert res.pose.dtype == torch.int64 and out.shape == (4, 5)
    assert out.dtype in (torch.bfloat16, torch.float32)
    assert torch.equal(ref.pose, ec.C(4).compose(g, ref.pose[:1].expand(4)))  # float32: equivariant
    # bfloat16 keeps ~3 digits: poses agree with float32 wherever float32's top-2 margin is clear of that
    err = (res.logits.float() - ref.logits).abs().max()
    assert err <= 0.05 * ref.logits.abs().max()
    top = ref.logits.topk(2, dim=-1).values
    clear = (top[:, 0] - top[:, 1]) > 2 * err
    assert torch.equal(res.pose[clear], ref.pose[clear])


def test_contrastive_chunking_is_bit_identical() -> None:
    torch.manual_seed(0)
    net = ConvEncoder(3, out_dim=16, hidden=4).eval()
    whole = Contrastive(ec.D(4), net, embed_dim=8).eval()
    chunked = Contrastive(ec.D(4), net, embed_dim=8, inputs_per_call=2).eval()
    chunked.load_state_dict(whole.state_dict())
    x = _images(5)
    a, b = whole(x), chunked(x)
    assert torch.equal(a.pose, b.pose) and torch.equal(a.canonical, b.canonical)
    torch.testing.assert_close(a.extras["embeddings"], b.extras["embeddings"], rtol=1e-6, atol=1e-6)


def test_contrastive_inference_skips_the_full_size_copies() -> None:
    """With crop/resize the |G| full-size copies are needed only for training gradients."""
    canon = Contrastive(ec.C(4), ConvEncoder(3, out_dim=16, hidden=4), crop=0.8, resize=12).eval()
    x = _images(2, 40)
    calls: list[tuple[int, ...]] = []
    from equicanon.canonicalizers import contrastive as module

    original = module.all_transforms

    def spy(group, action, inp, **kw):  # type: ignore[no-untyped-def]
        calls.append(tuple(inp.shape))
        return original(group, action, inp, **kw)

    module.all_transforms = spy
    try:
        with torch.inference_mode():
            res = canon(x)
    finally:
        module.all_transforms = original
    assert calls == [(2, 3, 12, 12)]  # only the small views were copied |G| times
    assert torch.equal(res.canonical, ec.actions.Image(ec.C(4))(ec.C(4).inverse(res.pose), x))


def test_group_averaged_chunking_is_identical() -> None:
    torch.manual_seed(0)
    pred = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4)).eval()
    x = _images(3, 12)
    whole = ec.GroupAveraged(pred, ec.D(4))(x)
    for chunk in (1, 3):
        torch.testing.assert_close(ec.GroupAveraged(pred, ec.D(4), elements_per_call=chunk)(x), whole, rtol=1e-6, atol=1e-6)


def test_pooled_group_conv_is_invariant_and_cheaper() -> None:
    torch.manual_seed(0)
    canon = GroupConv(ec.D(4), 3, hidden=4, kernel_size=3, pool_above=0).eval()
    convs = [m for m in canon.net if isinstance(m, (ec.nn.LiftingConv2d, ec.nn.GroupConv2d))]
    assert [m.pool_above for m in convs] == [0, 0, None]  # every convolution but the last halves its output
    for size in (28, 29):
        x = _images(2, size).double()
        assert_invariant(lambda t: canon.double()(t).canonical, ec.D(4), ec.actions.Image(ec.D(4)), x)


def test_default_group_conv_pools_large_views_only() -> None:
    """The documented call's 96-px view is pooled to 48 and 24 px, a 22-px view once, a 16-px view not at all."""
    canon = GroupConv(ec.C(8), 3, crop=0.8, resize=96).eval()
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for m in canon.net
             if isinstance(m, (ec.nn.LiftingConv2d, ec.nn.GroupConv2d))]
    with torch.inference_mode():
        canon(_images(1, 224))
        canon(_images(1, 28))  # the 0.8 crop of 28 px is 22 px
        canon(_images(1, 20))  # ... of 20 px, 16 px
    for h in hooks:
        h.remove()
    assert sizes == [48, 24, 24, 11, 11, 11, 16, 16, 16]


def test_blocked_knn_matches_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 300, 3, generator=torch.Generator().manual_seed(1))
    whole = vector_neurons.knn(x, 8)
    monkeypatch.setattr(vector_neurons, "KNN_CPU_BLOCK", 2 * 300 * 37)  # 37 rows per block, last block partial
    blocked = vector_neurons.knn(x, 8)
    assert torch.equal(torch.sort(blocked, -1).values, torch.sort(whole, -1).values)
    torch.manual_seed(0)
    vn = VectorNeurons(ec.SO3(), hidden=8, layers=1, k=8).eval()
    monkeypatch.setattr(vector_neurons, "KNN_CPU_BLOCK", 2**24)
    monkeypatch.setattr(vector_neurons, "EDGE_BLOCK", 2**24)
    pose = vn(x).pose
    monkeypatch.setattr(vector_neurons, "KNN_CPU_BLOCK", 2 * 300 * 37)
    monkeypatch.setattr(vector_neurons, "EDGE_BLOCK", 8 * 8 * 7)  # 7 points per edge block, last one partial
    torch.testing.assert_close(vn(x).pose, pose)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device synchronisation only exists with a GPU")
def test_forward_does_not_synchronise_with_the_gpu() -> None:
    models = {k: m.cuda() for k, m in _models().items()}
    x = _images().cuda()
    with torch.inference_mode():
        for m in models.values():
            m(x)  # warm-up: lazy modules, cached tables
        torch.cuda.set_sync_debug_mode("error")
        try:
            for m in models.values():
                m(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_benchmark_script_quick(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "performance.py"), "--quick", "--threads", "1",
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for title in ("1. Inference", "2. GroupAveraged", "3. Training step", "4. Contrastive", "5. Point canonicalizers"):
        assert title in proc.stdout
    assert {r["model"] for r in json.loads((tmp_path / "benchmarks" / "performance.json").read_text())["tables"]["points"]
            } == {"VectorNeurons(SO3())", "ParticleVectorNeurons(SE3(), features=1)"}
    data = json.loads((tmp_path / "benchmarks" / "performance.json").read_text())
    assert data["quick"] and data["machine"]["threads"] == 1
    for row in data["tables"]["inference"] + data["tables"]["group_averaged"] + data["tables"]["training"]:
        assert row["ratio"] > 0
    doc = (tmp_path / "benchmarks.md").read_text()
    assert "GroupAveraged / canonicalized" in doc and "<!-- END GENERATED -->" in doc
