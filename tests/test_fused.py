"Property tests: `pat.fused.pat_loss_fused` equals `pat.losses.pat_loss_reference` in value and gradient."
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

from pat.fused import pat_loss_fused
from pat.losses import pat_loss_reference

OPTIONS = st.fixed_dictionaries({
    "T": st.floats(0.1, 100.0),
    "eps": st.floats(-2.0, 2.0),
    "normalize": st.sampled_from(["mask", "none"]),
    "curve": st.sampled_from(["eq4.44", "table5.1"]),
    "detach_weight": st.booleans(),
})


@st.composite
def batches(draw, dtype=torch.float64):
    "Random logits and targets: any shape, ignored pixels (possibly all), classes absent from images."
    B, C, H, W = draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ignore_index = draw(st.sampled_from([255, -100, 0 if C > 2 else 255]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    x = (scale * torch.randn(B, C, H, W, generator=g, dtype=torch.float64)).to(dtype)
    n_used = draw(st.integers(1, C))                        # labels drawn from a subset: absent classes
    labels = torch.randperm(C, generator=g)[:n_used]
    y = labels[torch.randint(0, n_used, (B, H, W), generator=g)]
    p_ignore = draw(st.sampled_from([0.0, 0.3, 1.0]))
    y[torch.rand(B, H, W, generator=g) < p_ignore] = ignore_index
    if draw(st.booleans()): y[0] = ignore_index             # one all-ignored image
    return x.requires_grad_(), y, ignore_index


def float64_atol(T, eps):
    """1e-10, or more where beta itself is huge: the gradient at a pixel with p_y ~ 1 is k (q_y - 1),
    and q_y - 1 is known to ~1e-16 absolute in both implementations, so they may differ by ~1e-16 * beta
    (e.g. T = 0.11, eps = -2: beta up to e^27 ~ 1e12). Found by hypothesis."""
    beta_max = math.exp((abs(1 - eps) + abs(eps)) / T)
    return max(1e-10, 1e-14 * beta_max)


def value_and_grad(fn, x, y, **kw):
    loss = fn(x, y, **kw)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), OPTIONS)
def test_fused_matches_reference_float64(batch, opts):
    x, y, ignore_index = batch
    lf, gf = value_and_grad(pat_loss_fused, x, y, ignore_index=ignore_index, **opts)
    lr, gr = value_and_grad(pat_loss_reference, x, y, ignore_index=ignore_index, **opts)
    assert torch.isfinite(lf) and torch.isfinite(gf).all()
    atol = float64_atol(opts["T"], opts["eps"])
    torch.testing.assert_close(lf, lr, atol=atol, rtol=1e-12)
    torch.testing.assert_close(gf, gr, atol=atol, rtol=1e-12)
    if bool((y == ignore_index).all()):
        assert lf.item() == 0.0 and gf.abs().sum().item() == 0.0


@settings(max_examples=50, deadline=None)
@given(batches(dtype=torch.float32), OPTIONS.filter(lambda o: o["T"] >= 0.5 and o["eps"] >= -1))
def test_fused_matches_reference_float32(batch, opts):
    x, y, ignore_index = batch
    lf, gf = value_and_grad(pat_loss_fused, x, y, ignore_index=ignore_index, **opts)
    lr, gr = value_and_grad(pat_loss_reference, x, y, ignore_index=ignore_index, **opts)
    assert lf.dtype == gf.dtype == torch.float32
    atol = max(1e-5, 1e-6 * math.exp((abs(1 - opts["eps"]) + abs(opts["eps"])) / opts["T"]))   # as float64_atol
    torch.testing.assert_close(lf, lr, atol=atol, rtol=1e-4)
    torch.testing.assert_close(gf, gr, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("curve", ["eq4.44", "table5.1"])
@pytest.mark.parametrize("normalize", ["mask", "none"])
def test_gradcheck(curve, normalize):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (2, 3, 4), generator=g)
    y[1, 0] = 255
    assert torch.autograd.gradcheck(lambda x: pat_loss_fused(x, y, T=0.3, eps=0.2, normalize=normalize, curve=curve), (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_upcast(dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 6, 6, generator=g).to(dtype).requires_grad_()
    y = torch.randint(0, 5, (2, 6, 6), generator=g)
    lf, gf = value_and_grad(pat_loss_fused, x, y)
    lr, gr = value_and_grad(pat_loss_reference, x.detach().double().requires_grad_(), y)
    assert gf.dtype == dtype and lf.dtype == dtype
    torch.testing.assert_close(lf.double(), lr, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(gf.double(), gr, atol=1e-3, rtol=1e-2)


def test_all_ignored_is_zero_without_nan():
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    y = torch.full((3, 5, 5), 255)
    for normalize in ("mask", "none"):
        loss = pat_loss_fused(x, y, normalize=normalize)
        loss.backward()
        assert loss.item() == 0.0 and x.grad.abs().sum().item() == 0.0
        x.grad = None


def test_retain_graph_twice_and_grad_output_scaling():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (2, 3, 3))
    loss = pat_loss_fused(x, y, T=1.0)
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(3.0 * loss, x)
    torch.testing.assert_close(g2, 3.0 * g1, atol=1e-14, rtol=1e-12)


def test_other_spatial_ranks():
    "Not only [B,C,H,W]: [B,C] and [B,C,D,H,W] work too (same formula)."
    for shape in [(4, 5), (2, 3, 2, 3, 4)]:
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, shape[1], (shape[0], *shape[2:]))
        lf, gf = value_and_grad(pat_loss_fused, x, y)
        lr, gr = value_and_grad(pat_loss_reference, x, y)
        torch.testing.assert_close(lf, lr, atol=1e-12, rtol=0)
        torch.testing.assert_close(gf, gr, atol=1e-12, rtol=0)


def test_no_import_cycle_between_losses_and_fused():
    "pat.fused imports pat.losses (its option checks), so pat.losses imports pat.fused only inside the function that needs it."
    import ast, pathlib, subprocess, sys
    src = pathlib.Path(__file__).resolve().parents[1].joinpath("pat", "losses.py").read_text()
    for node in ast.parse(src).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any("fused" in n for n in names), names
    for first in ("pat.fused", "pat.losses"):                  # either can be imported first, in a fresh interpreter
        subprocess.run([sys.executable, "-c", f"import {first}, pat.fused, pat.losses"], check=True)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("tdtype", [torch.int64, torch.int32, torch.uint8])
def test_layouts_and_target_dtypes(layout, tdtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 12, 14, generator=g, dtype=torch.float64)
    x = x.to(memory_format=torch.channels_last)[:, :, :6, :7] if layout == "channels_last" else x[:, :, ::2, ::2]
    x.requires_grad_()
    y = torch.randint(0, 5, (2, 6, 7), generator=g)
    y[0, 0] = 255
    lf, gf = value_and_grad(pat_loss_fused, x, y.to(tdtype))
    lr, gr = value_and_grad(pat_loss_reference, x, y)
    torch.testing.assert_close(lf, lr, atol=1e-12, rtol=0)
    torch.testing.assert_close(gf, gr, atol=1e-12, rtol=0)


@pytest.mark.parametrize("tdtype", [torch.int8, torch.int16])
def test_small_integer_target_dtypes(tdtype):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (2, 5, 6), generator=g)
    y[1, 0] = -1
    lf, gf = value_and_grad(pat_loss_fused, x, y.to(tdtype), ignore_index=-1)
    lr, gr = value_and_grad(pat_loss_reference, x, y, ignore_index=-1)
    torch.testing.assert_close(lf, lr, atol=1e-12, rtol=0)
    torch.testing.assert_close(gf, gr, atol=1e-12, rtol=0)


@pytest.mark.parametrize("normalize", ["mask", "none"])
@pytest.mark.parametrize("detach_weight", [False, True])
def test_no_data_dependent_host_reads_on_meta(normalize, detach_weight):
    "Forward and backward run on meta tensors (no data): nothing reads a value on the host, so nothing syncs on CUDA."
    x = torch.randn(2, 5, 16, 16, device="meta", requires_grad=True)
    y = torch.zeros(2, 16, 16, dtype=torch.uint8, device="meta")
    loss = pat_loss_fused(x, y, normalize=normalize, detach_weight=detach_weight)
    loss.backward()
    assert loss.shape == () and x.grad.shape == x.shape


def test_bin_count_paths_agree():
    from pat.losses import bin_counts
    g = torch.Generator().manual_seed(5)
    bins = torch.randint(0, 7, (3, 50), generator=g)
    assert torch.equal(bin_counts(bins, 9, scatter=True), bin_counts(bins, 9, scatter=False))
    assert bin_counts(bins, 9).tolist()[7:] == [0, 0] and bin_counts(bins, 9).sum().item() == 150


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("normalize", ["mask", "none"])
def test_no_sync_on_cuda(normalize):
    x = torch.randn(2, 5, 16, 16, device="cuda", requires_grad=True)
    y = torch.randint(0, 5, (2, 16, 16), device="cuda")
    pat_loss_fused(x, y, normalize=normalize).backward()    # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pat_loss_fused(x, y, normalize=normalize).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
