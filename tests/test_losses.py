"Property tests of pat.losses beyond the notebook's inline tests."
import math
import pytest
import torch
from hypothesis import given, settings, strategies as st
from pat.losses import LOSSES, COUNT_LOSSES, get_loss, mask_sizes, pat_loss_reference

COUNTS = [5000.0, 800.0, 60.0, 3.0]


def build(name, **kw):
    extra = {"counts": COUNTS} if name in COUNT_LOSSES else {}
    if name == "blv": extra["generator"] = torch.Generator().manual_seed(0)
    return get_loss(name, **extra, **kw)


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 6), seed=st.integers(0, 10_000),
       ignore_frac=st.floats(0, 1), scale=st.floats(0.01, 30))
def test_all_losses_finite_nonnegative(B, H, W, seed, ignore_frac, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, H, W, generator=g, dtype=torch.float64) * scale
    t = torch.randint(0, 4, (B, H, W), generator=g)
    t[torch.rand(B, H, W, generator=g) < ignore_frac] = 255
    for name in LOSSES:
        xx = x.clone().requires_grad_()
        v = build(name)(xx, t)
        v.backward()
        assert torch.isfinite(v) and v.item() >= 0, name
        assert torch.isfinite(xx.grad).all(), name


@pytest.mark.parametrize("name", [n for n in LOSSES if n != "blv"])
def test_batch_order_does_not_matter(name):
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64), torch.randint(0, 4, (3, 5, 5), generator=g)
    perm = torch.tensor([2, 0, 1])
    assert build(name)(x, t).item() == pytest.approx(build(name)(x[perm], t[perm]).item(), rel=1e-12)


def test_pat_mask_normalization_ignores_mask_size():
    # Tiling an image 2x2 multiplies every S_i^l and every class sum by 4: PAT ("mask") is unchanged,
    # and so is CE (a mean); but PAT weighs classes equally, CE by area.
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (1, 4, 4), generator=g)
    xt, tt = x.repeat(1, 1, 2, 2), t.repeat(1, 2, 2)
    for name in ("pat", "ce"):
        assert get_loss(name)(x, t).item() == pytest.approx(get_loss(name)(xt, tt).item(), rel=1e-12)
    # Growing one class's mask (copying its pixels' logits) changes CE's weight of it but not PAT's (beta = 1).
    t2 = torch.tensor([[[0, 0, 0, 1]]]); x2 = torch.tensor([[[[2., 2., 2., 0.]], [[0., 0., 0., 1.]]]], dtype=torch.float64)
    t3 = torch.tensor([[[0, 1]]]); x3 = x2[..., 2:]
    pat = dict(T=1e12)
    assert get_loss("pat", **pat)(x2, t2).item() == pytest.approx(get_loss("pat", **pat)(x3, t3).item(), rel=1e-9)
    assert get_loss("ce")(x2, t2).item() != pytest.approx(get_loss("ce")(x3, t3).item(), rel=1e-3)


def test_mask_sizes_counts_per_image():
    t = torch.tensor([[[0, 0, 255], [2, 2, 2]], [[1, 255, 255], [255, 255, 255]]])
    assert mask_sizes(t, 3).tolist() == [[2, 0, 3], [0, 1, 0]]


def test_batch_counts_equal_dataset_counts_of_the_batch():
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (2, 6, 6), generator=g)
    t[0, 0] = 255
    n = torch.bincount(t[t != 255], minlength=3).tolist()
    for name in ("cb", "ldam", "bms"):
        assert get_loss(name, batch_counts=True)(x, t).item() == pytest.approx(get_loss(name, counts=n)(x, t).item(), rel=1e-12)


def test_counts_travel_with_the_module():
    loss = get_loss("ldam", counts=COUNTS)
    assert "counts" in loss.state_dict() and loss.state_dict()["counts"].tolist() == COUNTS
    loss2 = get_loss("ldam", counts=[1.0] * 4)
    loss2.load_state_dict(loss.state_dict())
    assert loss2.counts.tolist() == COUNTS


def test_pat_weight_range_at_T20():
    # At T=20 the Eq. 4.44 weight lies in [1, e^0.05]: PAT(normalize="none") is within 5.2% of CE.
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(2, 5, 8, 8, generator=g, dtype=torch.float64) * 3, torch.randint(0, 5, (2, 8, 8), generator=g)
    ce = get_loss("ce")(x, t).item()
    pat = pat_loss_reference(x, t, T=20, normalize="none").item()
    assert ce < pat <= ce * math.exp(0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(2, 4, 16, 16, generator=g), torch.randint(0, 4, (2, 16, 16), generator=g)
    for name in LOSSES:
        if name == "blv": continue
        cpu = build(name)(x, t).item()
        gpu = build(name).cuda()(x.cuda(), t.cuda()).item()
        assert gpu == pytest.approx(cpu, rel=1e-4), name


@pytest.mark.parametrize("options", [dict(), dict(normalize="none", curve="table5.1", T=2.0),
                                     dict(detach_weight=True, eps=0.1, T=5.0)])
def test_pat_module_defaults_to_fused_and_matches_reference(options):
    from pat.fused import PATFusedFunction
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (2, 7, 9), generator=g); t[0, :2] = 255
    fused_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    fused = get_loss("pat", **options)(fused_x, t)
    ref = get_loss("pat", fused=False, **options)(ref_x, t)
    assert isinstance(fused.grad_fn, PATFusedFunction._backward_cls)  # the default really is the fused path
    fused.backward(); ref.backward()
    assert torch.allclose(fused, ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(fused_x.grad, ref_x.grad, rtol=1e-9, atol=1e-12)
