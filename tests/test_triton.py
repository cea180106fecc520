"""`pat.triton_pat.pat_loss_triton` equals `pat_loss_fused` / `pat_loss_reference` in value and gradient.

Without CUDA the kernels run in Triton's interpreter on CPU: TRITON_INTERPRET must be set before triton
is first imported, so it is set here, at import (it stays set for the rest of the pytest process).
With CUDA the same tests run the compiled kernels on the GPU."""
import itertools
import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set", allow_module_level=True)
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from pat.fused import pat_loss_fused                       # noqa: E402
from pat.losses import PATLoss, pat_loss_reference         # noqa: E402
from pat.triton_pat import pat_loss_triton, triton_available, use_triton   # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def batch(shape, seed=0, ignore_index=255, scale=3.0):
    "float32 logits and labels with a class absent from every image, ignored pixels and (B > 1) an all-ignored image."
    g = torch.Generator().manual_seed(seed)
    B, C = shape[:2]
    x = scale * torch.randn(*shape, generator=g)
    y = torch.randint(0, max(C - 1, 1), (B, *shape[2:]), generator=g)      # class C-1 absent
    y[torch.rand(y.shape, generator=g) < 0.2] = ignore_index
    if B > 1: y[-1] = ignore_index
    return x, y


def value_and_grad(fn, x, y, **kw):
    x = x.detach().requires_grad_()
    loss = fn(x, y, **kw)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


def check(x, y, rtol=1e-5, atol=1e-6, **kw):
    "Triton (float32, on DEV) against the reference in float64 on CPU."
    lt, gt = value_and_grad(pat_loss_triton, x.to(DEV), y.to(DEV), **kw)
    lr, gr = value_and_grad(pat_loss_reference, x.double(), y.long(), **kw)
    assert lt.dtype == x.dtype and gt.dtype == x.dtype and gt.shape == x.shape
    torch.testing.assert_close(lt.double().cpu(), lr, rtol=rtol, atol=atol)
    torch.testing.assert_close(gt.double().cpu(), gr, rtol=rtol, atol=atol * max(1.0, float(gr.abs().max())))


def test_available_and_used():
    assert triton_available()
    x, y = batch((2, 3, 4, 4))
    assert type(pat_loss_triton(x.to(DEV).requires_grad_(), y.to(DEV)).grad_fn).__name__ == "PATTritonFunctionBackward"
    assert not use_triton(torch.zeros(1, 2, 1, 1))                                # CPU logits: PATLoss keeps pat_loss_fused


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 3, 4, 4), (3, 11, 8, 6)])
def test_every_option(shape):
    x, y = batch(shape, seed=sum(shape))
    for normalize, curve, detach, (T, eps) in itertools.product(("mask", "none"), ("eq4.44", "table5.1"), (False, True),
                                                                ((20.0, 0.0), (0.7, 0.3), (2.0, -0.5))):
        check(x, y, T=T, eps=eps, normalize=normalize, curve=curve, detach_weight=detach)


def test_matches_fused_float32():
    x, y = batch((2, 6, 5, 7), seed=1)
    for normalize, detach in itertools.product(("mask", "none"), (False, True)):
        kw = dict(T=1.5, eps=0.1, normalize=normalize, detach_weight=detach)
        lt, gt = value_and_grad(pat_loss_triton, x.to(DEV), y.to(DEV), **kw)
        lf, gf = value_and_grad(pat_loss_fused, x, y, **kw)
        torch.testing.assert_close(lt.cpu(), lf, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gt.cpu(), gf, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalize", ["mask", "none"])
def test_all_ignored_is_zero_without_nan(normalize):
    x = torch.randn(2, 3, 4, 4)
    lt, gt = value_and_grad(pat_loss_triton, x.to(DEV), torch.full((2, 4, 4), 255, device=DEV), normalize=normalize)
    assert lt.item() == 0.0 and gt.abs().sum().item() == 0.0


def test_huge_logits_finite():
    x = torch.tensor([[[[1e4]], [[-1e4]], [[0.0]]]])
    lt, gt = value_and_grad(pat_loss_triton, x.to(DEV), torch.tensor([[[1]]], device=DEV))
    lr, gr = value_and_grad(pat_loss_reference, x.double(), torch.tensor([[[1]]]))
    assert torch.isfinite(lt) and torch.isfinite(gt).all()
    torch.testing.assert_close(lt.double().cpu(), lr, rtol=1e-5, atol=0)
    torch.testing.assert_close(gt.double().cpu(), gr, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ignore_index,tdtype", [(255, torch.int32), (255, torch.uint8), (-100, torch.int64), (-1, torch.int8)])
def test_ignore_index_and_target_dtypes(ignore_index, tdtype):
    x, y = batch((2, 4, 5, 6), seed=2, ignore_index=ignore_index)
    lt, gt = value_and_grad(pat_loss_triton, x.to(DEV), y.to(tdtype).to(DEV), ignore_index=ignore_index)
    lr, gr = value_and_grad(pat_loss_reference, x.double(), y, ignore_index=ignore_index)
    torch.testing.assert_close(lt.double().cpu(), lr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gt.double().cpu(), gr, rtol=1e-5, atol=1e-6)


def test_layouts_ranks_and_grad_output():
    x, y = batch((2, 5, 12, 14), seed=3)
    check(x.to(memory_format=torch.channels_last)[:, :, :6, :7], y[:, :6, :7])      # non-contiguous logits
    check(x[:, :, ::2, ::2], y[:, ::2, ::2])
    for shape in [(2, 4, 9), (2, 4, 3, 4, 2)]:                                       # 1 and 3 spatial dims
        check(*batch(shape, seed=4))
    x = x.to(DEV).requires_grad_()
    loss = pat_loss_triton(x, y.to(DEV))
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g3,) = torch.autograd.grad(loss, x, grad_outputs=torch.tensor(3.0, device=DEV))
    torch.testing.assert_close(g3, 3 * g1)


def test_half_precision():
    x, y = batch((2, 5, 6, 6), seed=5)
    x = x.half()
    lt, gt = value_and_grad(pat_loss_triton, x.to(DEV), y.to(DEV))
    lr, gr = value_and_grad(pat_loss_reference, x.double(), y)
    assert lt.dtype == gt.dtype == torch.float16
    torch.testing.assert_close(lt.double().cpu(), lr, rtol=2e-3, atol=1e-3)
    torch.testing.assert_close(gt.double().cpu(), gr, rtol=2e-3, atol=1e-4)


@CUDA
@pytest.mark.parametrize("normalize", ["mask", "none"])
@pytest.mark.parametrize("detach_weight", [False, True])
def test_cuda_matches_fused_and_patloss_dispatches(normalize, detach_weight):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, 19, 64, 96, device="cuda", generator=g)
    y = torch.randint(0, 19, (4, 64, 96), device="cuda", generator=g)
    y[y == 7] = 255
    y[1] = 255
    kw = dict(T=2.0, eps=0.1, normalize=normalize, detach_weight=detach_weight)
    lt, gt = value_and_grad(pat_loss_triton, x, y, **kw)
    lf, gf = value_and_grad(pat_loss_fused, x.double(), y, **kw)
    torch.testing.assert_close(lt.double(), lf, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gt.double(), gf, rtol=1e-4, atol=1e-9)
    loss_fn = PATLoss(**kw)
    xl = x.clone().requires_grad_()
    loss = loss_fn(xl, y)
    assert type(loss.grad_fn).__name__ == "PATTritonFunctionBackward"
    loss.backward()
    torch.testing.assert_close(xl.grad, gt)
    xd = x.double().requires_grad_()                      # float64 keeps the exact float64 fused path
    assert type(loss_fn(xd, y).grad_fn).__name__ == "PATFusedFunctionBackward"


@CUDA
def test_cuda_bfloat16_and_no_sync():
    x = torch.randn(2, 5, 16, 16, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, 5, (2, 16, 16), device="cuda")
    pat_loss_triton(x, y).backward()                      # warm-up (compiles)
    assert x.grad.dtype == torch.bfloat16
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pat_loss_triton(x, y).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
