"Property tests of pat.losses beyond the notebook's inline tests."
import math
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from pat import losses
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


def _batch(seed=5, C=4):
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(2, C, 5, 6, generator=g, dtype=torch.float64), torch.randint(0, C, (2, 5, 6), generator=g)
    t[0, 0, :4] = 255
    return x, t


@pytest.mark.parametrize("name", list(LOSSES))
def test_reductions_agree(name):
    "'none' gives the per-pixel terms (0 where ignored) whose sum is 'sum'; 'mean' divides it by the valid pixels (PAT: by B)."
    x, t = _batch()
    mean, total = build(name).eval()(x, t), build(name, reduction="sum").eval()(x, t)
    xx = x.clone().requires_grad_()
    terms = build(name, reduction="none").eval()(xx, t)
    assert terms.shape == t.shape and (terms[t == 255] == 0).all()
    assert terms.sum().item() == pytest.approx(total.item(), rel=1e-12)
    norm = t.shape[0] if name == "pat" else (t != 255).sum().item()
    assert total.item() / norm == pytest.approx(mean.item(), rel=1e-12)
    terms.sum().backward()                                       # the per-pixel terms carry the gradient of 'sum'
    xs = x.clone().requires_grad_(); build(name, reduction="sum").eval()(xs, t).backward()
    assert torch.allclose(xx.grad, xs.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_class_weight(name):
    "Weights of one are no weights; a weight on one class alone keeps exactly that class's pixel terms."
    x, t = _batch()
    assert build(name, weight=[1.0] * 4).eval()(x, t).item() == pytest.approx(build(name).eval()(x, t).item(), rel=1e-12)
    terms = build(name, reduction="none").eval()(x, t)
    only2 = build(name, reduction="none", weight=[0.0, 0.0, 3.0, 0.0]).eval()(x, t)
    assert torch.allclose(only2, 3.0 * terms * (t == 2))


def test_weighted_ce_is_torchs():
    x, t = _batch()
    w = torch.tensor([0.5, 2.0, 1.0, 4.0], dtype=torch.float64)
    assert get_loss("ce", weight=w)(x, t).item() == pytest.approx(F.cross_entropy(x, t, weight=w, ignore_index=255).item(), rel=1e-6)


def test_bad_reduction_or_weight_is_named():
    with pytest.raises(ValueError, match="CE parameter `reduction` must be one of 'mean', 'sum', 'none', got 'avg'"):
        get_loss("ce", reduction="avg")
    with pytest.raises(ValueError, match="PAT parameter `weight` must be finite, non-negative weights, one per class"):
        get_loss("pat", weight=[1.0, -1.0])
    with pytest.raises(TypeError, match=r"CE parameter `weight` must be one number per class \(1-D\), got \[\[1, 2\], \[3, 4\]\]"):
        get_loss("ce", weight=[[1, 2], [3, 4]])                   # not 4 classes
    with pytest.raises(TypeError, match=r"BMS parameter `weight` must be one number per class \(1-D\), got 'abc'"):
        get_loss("bms", counts=[1, 2], weight="abc")
    x, t = _batch()
    with pytest.raises(ValueError, match="`weight` has 3 classes but logits have C=4"):
        get_loss("focal", weight=[1.0, 1.0, 1.0])(x, t)


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


# --- integer target dtypes -------------------------------------------------------------------------

def value_and_grad(loss, x, t):
    xx = x.clone().requires_grad_()
    v = loss(xx, t)
    v.backward()
    return v.detach(), xx.grad


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("name", list(LOSSES))
def test_every_integer_target_dtype_gives_the_int64_value_and_gradient(name, dtype, validate):
    g = torch.Generator().manual_seed(6)
    x, t = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (2, 5, 6), generator=g)
    ignore = -1 if dtype == torch.int8 else 255          # int8 cannot hold 255; uint8 uses 255 as label PNGs do
    t[0, 0] = ignore
    ref = value_and_grad(build(name, ignore_index=ignore, validate=validate), x, t)
    v, grad = value_and_grad(build(name, ignore_index=ignore, validate=validate), x, t.to(dtype))
    assert v.dtype == torch.float64 and v.item() > 0
    assert torch.equal(v, ref[0]) and torch.equal(grad, ref[1])
    assert grad[0, :, 0].abs().max().item() == 0.0        # ignored pixels: no gradient


def test_functional_pat_accepts_integer_targets():
    from pat.fused import pat_loss_fused
    g = torch.Generator().manual_seed(7)
    x, t = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (2, 4, 4), generator=g)
    t[1, 1] = 255
    for fn in (pat_loss_reference, pat_loss_fused):
        assert fn(x, t.to(torch.uint8)).item() == fn(x, t).item()
        assert fn(x, t.to(torch.int16)).item() == fn(x, t).item()


# --- hyperparameters ---------------------------------------------------------------------------------

POS, NONNEG, FIN, BETA = "a finite number > 0", "a finite number >= 0", "a finite number", "None or a number in [0, 1)"
BAD_PARAMS = [  # (loss, parameter, value, error, what the message says it must be)
    ("pat", "T", "20", TypeError, POS), ("pat", "T", True, TypeError, POS), ("pat", "T", None, TypeError, POS),
    ("pat", "T", 0, ValueError, POS), ("pat", "T", -1.0, ValueError, POS), ("pat", "T", float("inf"), ValueError, POS),
    ("pat", "T", float("nan"), ValueError, POS),
    ("pat", "eps", "0.1", TypeError, FIN), ("pat", "eps", False, TypeError, FIN), ("pat", "eps", float("nan"), ValueError, FIN),
    ("pat", "normalize", "batch", ValueError, "one of 'mask', 'none'"), ("pat", "normalize", 1, TypeError, "one of 'mask', 'none'"),
    ("pat", "curve", "eq4.43", ValueError, "one of 'eq4.44', 'table5.1'"), ("pat", "curve", 4.44, TypeError, "one of 'eq4.44', 'table5.1'"),
    ("focal", "gamma", "2", TypeError, NONNEG), ("focal", "gamma", True, TypeError, NONNEG), ("focal", "gamma", -0.5, ValueError, NONNEG),
    ("cbfocal", "gamma", "2", TypeError, NONNEG), ("cbfocal", "gamma", -1, ValueError, NONNEG),
    ("cb", "beta", "0.99", TypeError, BETA), ("cb", "beta", True, TypeError, BETA), ("cb", "beta", 1.0, ValueError, BETA),
    ("cb", "beta", -0.1, ValueError, BETA), ("cbfocal", "beta", 1.5, ValueError, BETA),
    ("ldam", "mu", "0.5", TypeError, NONNEG), ("ldam", "mu", -0.1, ValueError, NONNEG),
    ("ldam", "s", "20", TypeError, POS), ("ldam", "s", 0, ValueError, POS), ("ldam", "s", True, TypeError, POS),
    ("blv", "sigma", "0.5", TypeError, NONNEG), ("blv", "sigma", -1, ValueError, NONNEG), ("blv", "sigma", float("inf"), ValueError, NONNEG),
]
TITLES = {"ce": "CE", "focal": "Focal", "cb": "CB", "cbfocal": "CBFocal", "bms": "BMS", "ldam": "LDAM", "blv": "BLV", "pat": "PAT"}


@pytest.mark.parametrize("loss, param, value, error, expected", BAD_PARAMS, ids=[f"{l}-{p}-{v!r}" for l, p, v, _, _ in BAD_PARAMS])
def test_bad_hyperparameter_is_named(loss, param, value, error, expected):
    with pytest.raises(error) as info:
        build(loss, **{param: value})
    message = f"{TITLES[loss]} parameter `{param}` must be {expected}, got {value!r} ({type(value).__name__})"
    assert message in str(info.value)


def test_good_hyperparameters_are_floats():
    import numpy as np
    pat = build("pat", T=np.float32(5), eps=1)
    assert (pat.T, pat.eps) == (5.0, 1.0) and type(pat.T) is float
    assert build("ldam", mu=0, s=30).s == 30.0 and build("cb", beta=0).beta == 0.0 and build("focal", gamma=0).gamma == 0.0


def test_pat_reference_checks_its_options():
    x, t = torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(TypeError, match="PAT parameter `T` must be a finite number > 0, got '20' \\(str\\)"):
        pat_loss_reference(x, t, T="20")


# --- mixed precision -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LOSSES))
def test_autocast_bf16_logits_give_the_float32_loss(name):
    g = torch.Generator().manual_seed(8)
    x, t = torch.randn(2, 4, 6, 6, generator=g), torch.randint(0, 4, (2, 6, 6), generator=g)
    t[0, 0] = 255
    conv = torch.nn.Conv2d(4, 4, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        assert h.dtype == torch.bfloat16
        v = build(name)(h, t)
    ref = build(name)(h.float(), t)
    assert v.dtype == torch.float32 and v.item() == ref.item()


# --- BLV's generator -------------------------------------------------------------------------------------

def test_blv_generator_state_is_checkpointable():
    g = torch.Generator().manual_seed(9)
    x, t = torch.randn(2, 4, 5, 5, generator=g), torch.randint(0, 4, (2, 5, 5), generator=g)
    loss = build("blv")
    state = loss.generator.get_state()
    first, second = loss(x, t), loss(x, t)
    assert first.item() != second.item()
    fresh = build("blv")
    fresh.generator.set_state(state)
    assert fresh(x, t).item() == first.item() and fresh(x, t).item() == second.item()


def test_blv_generator_on_another_device_is_named():
    loss = build("blv")                                   # a CPU generator; meta logits stand in for CUDA ones
    x, t = torch.randn(2, 4, 3, 3, device="meta"), torch.zeros(2, 3, 3, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="BLV parameter `generator` is on cpu but the logits are on meta"):
        loss(x, t)
    with pytest.raises(TypeError, match="BLV parameter `generator` must be None or a torch.Generator"):
        get_loss("blv", counts=COUNTS, generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_blv_cuda_generator():
    x, t = torch.randn(2, 4, 5, 5, device="cuda"), torch.randint(0, 4, (2, 5, 5), device="cuda")
    loss = get_loss("blv", counts=COUNTS, generator=torch.Generator(device="cuda").manual_seed(0)).cuda()
    state = loss.generator.get_state()
    first = loss(x, t).item()
    loss.generator.set_state(state)
    assert loss(x, t).item() == first
    with pytest.raises(ValueError, match="`generator` is on cpu but the logits are on cuda"):
        build("blv").cuda()(x, t)


# --- no host-device synchronisation ---------------------------------------------------------------------

SYNC_CASES = ([(n, {}) for n in LOSSES] + [(n, {"batch_counts": True}) for n in COUNT_LOSSES]
              + [("cb", {"beta": 0.9}), ("pat", {"fused": False}), ("pat", {"normalize": "none"}),
                 ("pat", {"normalize": "none", "fused": False}), ("pat", {"detach_weight": True, "curve": "table5.1"})])
SYNC_IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in SYNC_CASES]
COUNTS5 = [1e4, 1e3, 1e2, 10.0, 1.0]


def sync_case(name, kw, device, generator=None):
    extra = {"counts": COUNTS5} if name in COUNT_LOSSES else {}
    if name == "blv": extra["generator"] = generator
    return get_loss(name, **extra, **kw).to(device)


@pytest.mark.parametrize("name, kw", SYNC_CASES, ids=SYNC_IDS)
def test_no_data_dependent_host_reads_on_meta(name, kw, monkeypatch):
    "Meta tensors hold no data: .item(), if tensor, nonzero, x[mask], unique, bincount all fail on them."
    monkeypatch.setitem(losses._DEBUG, "checks", False)      # even where the tests run with PAT_DEBUG_CHECKS=1
    x = torch.randn(2, 5, 16, 16, device="meta", requires_grad=True)
    t = torch.zeros(2, 16, 16, dtype=torch.uint8, device="meta")
    v = sync_case(name, kw, "meta")(x, t)
    v.backward()
    assert v.shape == () and v.dtype == torch.float32 and x.grad.shape == x.shape


def test_debug_checks_from_the_environment():
    import os, subprocess, sys
    code = "import torch, pat.losses as L; print(L.checks_values(torch.zeros(1, device='meta')))"
    out = [subprocess.run([sys.executable, "-c", code], env={**os.environ, "PAT_DEBUG_CHECKS": v}, capture_output=True,
                          text=True, check=True).stdout.strip() for v in ("1", "0")]
    assert out == ["True", "False"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name, kw", SYNC_CASES, ids=SYNC_IDS)
def test_no_sync_on_cuda(name, kw, monkeypatch):
    monkeypatch.setitem(losses._DEBUG, "checks", False)      # debug mode's label check does synchronise
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 5, 16, 16, generator=g).cuda().requires_grad_()
    t = torch.randint(0, 5, (2, 16, 16), generator=g).to(torch.uint8)
    t[0, 0] = 255
    t = t.cuda()
    loss = sync_case(name, kw, "cuda", torch.Generator(device="cuda").manual_seed(0))
    loss(x, t).backward()                                   # warm-up: one-time initialisation may synchronise
    torch.cuda.synchronize()
    x.grad = None
    torch.cuda.set_sync_debug_mode("error")
    try:
        v = loss(x, t)
        v.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(v).item() and torch.isfinite(x.grad).all().item()


def test_create_graph_on_cpu():
    """A gradient taken with create_graph=True: the torch code of every loss differentiates it again (a gradient
    penalty changes the gradient); PAT's default fused backward, a closed form, refuses at once and names the reference."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (2, 4, 5), generator=g)
    counts = [500.0, 50.0, 5.0]
    for name in LOSSES:
        kw = dict(counts=counts) if name in COUNT_LOSSES else {}
        loss = get_loss(name, **kw, **({"fused": False} if name == "pat" else {}))(x, y)
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
        (penalized,) = torch.autograd.grad(loss + (grad ** 2).sum(), x)
        assert not torch.allclose(penalized, grad), name
    with pytest.raises(RuntimeError, match=r"create_graph=True; for a second derivative use PATLoss\(fused=False\)"):
        torch.autograd.grad(get_loss("pat")(x, y), x, create_graph=True)


def test_compile_traces_every_loss_in_one_graph():
    """torch.compile (here its eager backend, fullgraph: a graph break is an error) traces every loss whole, as on CUDA,
    where labels are not read: the check for torch.func transforms stays out of its way."""
    x, t = _batch()
    for name in LOSSES:
        loss = get_loss(name, validate=False, **({"counts": [5e4, 5e3, 5e2, 50.0]} if name in COUNT_LOSSES else {})).eval()
        compiled = torch.compile(loss, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, t), loss(x, t), msg=name)
