"""The Triton kernels (`pat.triton_losses`) equal the torch losses in value and gradient.

Without CUDA the kernels run in Triton's interpreter on CPU: TRITON_INTERPRET must be set before triton
is first imported, so it is set here, at import (it stays set for the rest of the pytest process).
With CUDA the same tests run the compiled kernels on the GPU, and the CUDA-only tests compare the
kernels with torch's code on the GPU at a realistic size and check that nothing synchronises."""
import itertools
import math
import os
import re
import sys

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set", allow_module_level=True)
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from pat.fused import pat_loss_fused                       # noqa: E402
from pat.losses import LOSSES, PATLoss, get_loss, pat_loss_reference   # noqa: E402
from pat.triton_losses import (TUNING, LossSpec, adjusted_logits_triton, pat_loss_triton, philox_draw,   # noqa: E402
                               set_kernels, softmax_loss_triton, triton_available, use_kernels)

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
    assert type(pat_loss_triton(x.to(DEV).requires_grad_(), y.to(DEV)).grad_fn).__name__ == "SoftmaxLossFunctionBackward"
    assert not use_kernels(torch.zeros(1, 2, 1, 1))                   # CPU logits: the modules keep their torch code
    assert not use_kernels(torch.zeros(1, 2, 1, 1, dtype=torch.float64, device=DEV))   # float64 keeps torch's precision


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


def test_a_label_outside_the_classes_makes_the_loss_nan():
    """Labels are not read back on CUDA (no synchronisation): a label outside 0..C-1, which torch would refuse, makes
    the loss NaN and the gradient NaN at that pixel only, and is never used as an index into the class tables."""
    x, y = batch((2, 4, 5, 6), seed=11)
    specs = (LossSpec(), LossSpec(term="pat", per_image=True), LossSpec(weight=torch.tensor([1.0, 2.0, 3.0, 4.0]), reduction="sum"),
             LossSpec(margin=torch.full((4,), 0.5), scale=2.0, norm_weight=torch.ones(4)))
    for label, spec in itertools.product((4, -1, 100), specs):
        yb = y.clone(); yb[0, 2, 3] = label
        xg = x.to(DEV).requires_grad_()
        loss = softmax_loss_triton(xg, yb.to(DEV), spec)
        loss.backward()
        assert loss.isnan(), (label, spec)
        assert xg.grad.isnan().any(1).nonzero().tolist() == [[0, 2, 3]], (label, spec)
    assert torch.isfinite(softmax_loss_triton(x.to(DEV), y.to(DEV), specs[1]))      # in range: finite


def test_an_image_whose_elements_lie_beyond_32_bit_offsets_is_refused_by_its_strides(monkeypatch):
    """The kernels index within an image with 32-bit offsets: what is refused is an image whose elements lie 2**31 or
    more apart (its strides), not only one of 2**31 elements; refused before any launch (meta tensors: no memory)."""
    from pat.triton_losses import OFFSET_LIMIT, SoftmaxLossFunction
    assert OFFSET_LIMIT == 2**31
    y = torch.zeros((1, 4, 4), dtype=torch.long, device="meta")
    strided = lambda stride: torch.empty(0, device="meta").as_strided((1, 2, 4, 4), stride)
    says = lambda span: re.escape(f"logits (1, 2, 4, 4): one image spans {span} elements, beyond the kernels' 32-bit offsets (at most {2**31 - 1})")
    # 32 elements, but class 1 starts 2**31 - 16 elements after class 0: its last pixel is at offset 2**31
    with pytest.raises(ValueError, match=says(2**31)):
        SoftmaxLossFunction.apply(strided((2**32, 2**31 - 16, 4, 1)), y, LossSpec())
    # pixels 143165577 elements apart (channels-last-like): the last one at offset 15 * 143165577 + 1
    with pytest.raises(ValueError, match=says(15 * 143165577 + 2)):
        SoftmaxLossFunction.apply(strided((2**40, 1, 4 * 143165577, 143165577)), y, LossSpec())
    # one element less is within the limit: not refused (it goes on to the launch geometry, stopped there: no data)
    import pat.triton_losses as TL

    class PastTheCheck(Exception): pass

    def stop(*a, **k): raise PastTheCheck
    monkeypatch.setattr(TL, "_geometry", stop)
    with pytest.raises(PastTheCheck):
        SoftmaxLossFunction.apply(strided((2**32, 2**31 - 17, 4, 1)), y, LossSpec())


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
    check(x.to(memory_format=torch.channels_last), y)                               # walked with one stride, no copy
    check(x.to(memory_format=torch.channels_last)[:, :, :6, :7], y[:, :6, :7])      # non-contiguous logits
    check(x[:, :, ::2, ::2], y[:, ::2, ::2])
    check(x[:, :, :6], y.transpose(1, 2).contiguous().transpose(1, 2)[:, :6])      # non-contiguous labels
    for shape in [(2, 4, 9), (2, 4, 3, 4, 2), (3, 4), (2, 4, 1, 5)]:                 # 1, 3 and no spatial dims, a dim of 1
        check(*batch(shape, seed=4))
    x5, y5 = batch((2, 3, 5, 4, 1), seed=5)     # a pixel dim of size 1 whose stride fits no single pixel stride: copied
    check(x5.permute(0, 1, 3, 4, 2), y5.permute(0, 2, 3, 1))                       # (before: wrong values, writes out of bounds)
    x5, y5 = batch((2, 3, 4, 2, 5), seed=6)
    check(x5[:, :, :, ::2], y5[:, :, ::2])
    with pytest.raises(ValueError, match=r"target \(2, 12, 13\) must be logits \(2, 5, 12, 14\)"):
        softmax_loss_triton(x.to(DEV), y[:, :, :13].to(DEV), LossSpec())
    x = x.to(DEV).requires_grad_()
    for spec in (LossSpec(term="pat", per_image=True), LossSpec(term="focal", gamma=2.0)):   # 1/D per image and class, or one 1/D
        loss = softmax_loss_triton(x, y.to(DEV), spec)
        (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
        (g3,) = torch.autograd.grad(loss, x, grad_outputs=torch.tensor(3.0, device=DEV))   # the stored gradient is not scaled in place
        torch.testing.assert_close(g3, 3 * g1)


def test_create_graph_fails():
    """G is a constant of the kernel, so a gradient taken with create_graph=True (whose derivative would be wrong: a
    penalty `loss + (g ** 2).sum()` would lose its term through the loss) fails at once, naming the torch code."""
    x, y = batch((2, 5, 6, 7), seed=13)
    x, y = x.to(DEV).requires_grad_(), y.to(DEV)
    for spec in (LossSpec(term="pat", per_image=True), LossSpec(term="ce")):
        with pytest.raises(RuntimeError, match=r"create_graph=True; for a second derivative use pat\.triton_losses\.set_kernels\(False\)"):
            torch.autograd.grad(softmax_loss_triton(x, y, spec), x, create_graph=True)
        g1 = torch.ones((), device=DEV, requires_grad=True)                          # an upstream gradient with a graph
        with pytest.raises(RuntimeError, match="closed form"):
            torch.autograd.grad(softmax_loss_triton(x, y, spec), x, grad_outputs=g1, create_graph=True)


def test_value_without_gradient():
    "Under no_grad, or for logits that need no gradient (the kernel then writes none), the loss has no graph and the same value."
    x, y = batch((2, 5, 6, 7), seed=12)
    x, y = x.to(DEV), y.to(DEV)
    for spec in (LossSpec(term="pat", per_image=True), LossSpec(term="ce")):
        with_grad = softmax_loss_triton(x.clone().requires_grad_(), y, spec)
        with torch.no_grad(): no_grad = softmax_loss_triton(x.clone().requires_grad_(), y, spec)
        plain = softmax_loss_triton(x, y, spec)
        assert with_grad.grad_fn is not None and no_grad.grad_fn is None and plain.grad_fn is None
        assert torch.equal(no_grad, with_grad.detach()) and torch.equal(plain, no_grad)


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
    assert type(loss.grad_fn).__name__ == "SoftmaxLossFunctionBackward"
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


# --- every loss module: kernels against its own torch code ------------------------------------------------

COUNTS = [5e5, 1e5, 2e4, 3e3, 400.0, 40.0]
MODULES = [("ce", {}), ("focal", {"gamma": 2.0}), ("focal", {"gamma": 0.5}), ("cb", {"counts": COUNTS}),
           ("cb", {"counts": COUNTS, "beta": 0.99}), ("cbfocal", {"counts": COUNTS, "gamma": 1.5}),
           ("bms", {"counts": COUNTS}), ("ldam", {"counts": COUNTS}), ("ldam", {"counts": COUNTS, "mu": 1.0, "s": 5.0}),
           ("blv", {"counts": COUNTS}), ("pat", {}), ("pat", {"T": 0.7, "eps": 0.3, "curve": "table5.1"}),
           ("pat", {"normalize": "none", "detach_weight": True}), ("cb", {"counts": None, "batch_counts": True})]


@pytest.fixture
def kernels_on_cpu():
    "The loss modules use the kernels on CPU tensors too (interpreter), and small tiles so loops and padding run."
    set_kernels(cpu=True)
    TUNING.update(block_p=16, programs=3)
    yield
    set_kernels()
    TUNING.update(block_p=None, programs=None)


def both_paths(loss, x, y):
    "(value, gradient) of `loss` on x, y with the kernels and with the torch code."
    set_kernels(cpu=True)
    k = value_and_grad(loss, x, y)
    set_kernels(False)
    r = value_and_grad(loss, x, y)
    set_kernels(cpu=True)
    return k, r


@pytest.mark.parametrize("name,params", MODULES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(MODULES)])
@pytest.mark.parametrize("extra", [{}, {"reduction": "sum"}, {"weight": [1.0, 2.0, 0.5, 3.0, 0.0, 1.0]}], ids=["mean", "sum", "weight"])
def test_every_loss_matches_its_torch_code(name, params, extra, kernels_on_cpu):
    x, y = batch((3, 6, 7, 9), seed=len(name))
    loss = get_loss(name, **params, **extra).to(DEV).eval()           # eval: BLV without noise (tested below)
    (lk, gk), (lr, gr) = both_paths(loss, x.to(DEV), y.to(DEV))
    assert lk.dtype == torch.float32 and gk.shape == x.shape
    torch.testing.assert_close(lk, lr, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(gk, gr, rtol=2e-5, atol=2e-6 * max(1.0, float(gr.abs().max())))


def test_torch_func_takes_the_torch_code(kernels_on_cpu):
    "Inside torch.func every loss leaves the kernels for its torch code: torch transforms that, not a closed-form backward."
    x, y = batch((2, 6, 5, 5), seed=11)
    x, y = x.to(DEV), y.to(DEV)
    for name, params in MODULES:
        loss = get_loss(name, **params).to(DEV).eval()
        _, (_, torch_grad) = both_paths(loss, x, y)
        torch.testing.assert_close(torch.func.grad(lambda a: loss(a, y))(x), torch_grad, msg=name)
        by_labels = torch.func.vmap(lambda b: loss(x[:1], b[None]))(y)                  # only the labels batched
        torch.testing.assert_close(by_labels, torch.stack([loss(x[:1], b[None]) for b in y]), rtol=2e-5, atol=1e-6, msg=name)


def test_every_registered_loss_has_a_kernel_spec(kernels_on_cpu):
    x, y = batch((2, 6, 4, 4))
    for name, cls in LOSSES.items():
        params = {"counts": COUNTS} if "counts" in cls.__init__.__code__.co_varnames else {}
        assert get_loss(name, **params).kernel_spec(x, y) is not None, name
    assert get_loss("pat", fused=False).kernel_spec(x, y) is None          # the autograd reference stays itself
    assert get_loss("ce", reduction="none").kernel_loss(x, y) is None       # per-pixel terms: torch


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_in_place(dtype, kernels_on_cpu):
    "Half-precision logits are read as they are (no float32 copy) and get a gradient of their dtype."
    x, y = batch((2, 6, 5, 6), seed=7)
    x = x.to(dtype).to(DEV)
    for name in ("cbfocal", "ldam", "pat"):
        loss = get_loss(name, **({} if name == "pat" else {"counts": COUNTS})).to(DEV)
        (lk, gk), (lr, gr) = both_paths(loss, x, y.to(DEV))
        assert gk.dtype == dtype and lk.dtype == torch.float32
        torch.testing.assert_close(lk, lr, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gk.float(), gr.float(), rtol=2e-2, atol=1e-4)


def test_layouts_and_ranks(kernels_on_cpu):
    x, y = batch((2, 6, 8, 10), seed=8)
    loss = get_loss("cbfocal", counts=COUNTS, weight=[1, 2, 3, 1, 1, 2.0]).to(DEV)
    for xs, ys in [(x.to(memory_format=torch.channels_last), y), (x.to(memory_format=torch.channels_last)[:, :, 1:6, 2:9], y[:, 1:6, 2:9]),
                   (x[:, :, ::2, ::3], y[:, ::2, ::3]), (x.flatten(2), y.flatten(1)), (x[:, :, :1, :1].flatten(1), y[:, 0, 0])]:
        (lk, gk), (lr, gr) = both_paths(loss, xs.to(DEV), ys.to(DEV))
        assert gk.shape == xs.shape
        torch.testing.assert_close(lk, lr, rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(gk, gr, rtol=2e-5, atol=2e-6)


def test_geometry_loops_and_one_program(kernels_on_cpu):
    "Many tiles per program, one program per image, one big tile: the same value."
    x, y = batch((2, 5, 12, 11), seed=9)
    loss = get_loss("pat", T=2.0).to(DEV)
    values = []
    for block_p, programs in [(16, 1), (16, 2), (32, 100), (256, 4)]:
        TUNING.update(block_p=block_p, programs=programs)
        values.append(value_and_grad(loss, x.to(DEV), y.to(DEV)))
    for v, g in values[1:]:
        torch.testing.assert_close(v, values[0][0], rtol=1e-5, atol=1e-7)    # tile shapes change float32 rounding only
        torch.testing.assert_close(g, values[0][1], rtol=1e-5, atol=1e-7)


def test_all_ignored_and_no_valid_weight(kernels_on_cpu):
    x = torch.randn(2, 6, 4, 4, device=DEV)
    for name in ("ce", "cbfocal", "ldam", "pat"):
        loss = get_loss(name, **({} if name in ("ce", "pat") else {"counts": COUNTS})).to(DEV)
        lk, gk = value_and_grad(loss, x, torch.full((2, 4, 4), 255, device=DEV))
        assert lk.item() == 0.0 and gk.abs().sum().item() == 0.0
    zero_w = get_loss("ce", weight=[0.0] * 6).to(DEV)                   # valid pixels, all weights 0: 0, as torch's code gives
    (lk, gk), (lr, gr) = both_paths(zero_w, x, torch.zeros(2, 4, 4, dtype=torch.long, device=DEV))
    assert lk.item() == lr.item() == 0.0 and gk.abs().sum().item() == 0.0


def test_class_tables_follow_counts_and_parameters(kernels_on_cpu):
    "The cached class tables change when the counts change in place or a parameter changes (no stale loss)."
    x, y = batch((2, 6, 5, 5), seed=10)
    x, y = x.to(DEV), y.to(DEV)
    loss = get_loss("ldam", counts=COUNTS).to(DEV)
    first = loss(x, y)
    loss.counts.copy_(torch.tensor(COUNTS[::-1], dtype=torch.float64))   # e.g. load_state_dict
    second = loss(x, y)
    loss.mu = 0.1
    third = loss(x, y)
    fresh = get_loss("ldam", counts=COUNTS[::-1], mu=0.1).to(DEV)
    assert not torch.allclose(first, second) and not torch.allclose(second, third)
    torch.testing.assert_close(third, fresh(x, y))
    set_kernels(False)
    torch.testing.assert_close(third, loss(x, y), rtol=2e-5, atol=1e-6)


def test_blv_noise_is_the_reference_perturbation(kernels_on_cpu):
    "BLV in training: the kernels' loss and gradient are CE's on the logits u they perturbed; the generator moves on."
    x, y = batch((2, 6, 7, 8), seed=11)
    x, y = x.to(DEV), y.to(DEV)
    gen = torch.Generator(device=DEV).manual_seed(5)
    loss = get_loss("blv", counts=COUNTS, sigma=0.5, generator=gen).to(DEV).train()
    state = gen.get_state()
    lk, gk = value_and_grad(loss, x, y)
    after = gen.get_state()
    gen.set_state(state)
    spec = LossSpec(**loss.kernel_spec(x, y))
    seed, offset = philox_draw(gen, x.device, x.numel())
    u = adjusted_logits_triton(x, y, spec, seed, offset)
    lr, gr = value_and_grad(lambda z, t: F.cross_entropy(z + (u - x), t, ignore_index=255), x, y)
    torch.testing.assert_close(lk, lr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gk, gr, rtol=1e-5, atol=1e-6)
    assert torch.equal(gen.get_state(), after)                          # the draw moved the generator as the loss did
    scale = loss.variation_scale(x, y, torch.float32)
    noise = (u - x).transpose(0, 1).reshape(6, -1)                      # per class: |clip(sigma delta, -1, 1)| f_c / max f
    assert (noise >= 0).all() and torch.all(noise.amax(1) <= scale + 1e-6)
    gen.set_state(state)
    torch.testing.assert_close(loss(x, y), lk)                          # same state, same noise
    assert not torch.allclose(loss(x, y), lk)                           # next call, new noise


def test_blv_noise_distribution():
    "|clip(sigma delta, -1, 1)| for delta ~ N(0, 1): mean and second moment of the clipped half-normal (sigma = 0.5)."
    x = torch.zeros(1, 2, 128, 128, device=DEV)
    spec = LossSpec(noise=torch.ones(2), sigma=0.5)
    seed, offset = philox_draw(torch.Generator(device=DEV).manual_seed(0), x.device, x.numel())
    n = adjusted_logits_triton(x, torch.zeros(1, 128, 128, dtype=torch.long, device=DEV), spec, seed, offset).double()
    phi2, tail = math.exp(-2) / math.sqrt(2 * math.pi), math.erfc(2 / math.sqrt(2))     # phi(2), P(|delta| > 2)
    mean = 0.5 * 2 * (1 / math.sqrt(2 * math.pi) - phi2) + tail                         # E min(|delta|/2, 1)
    second = 0.25 * (1 - 2 * (2 * phi2 + tail / 2)) + tail
    assert abs(n.mean().item() - mean) < 0.01 and abs((n ** 2).mean().item() - second) < 0.01


def test_spec_errors():
    with pytest.raises(ValueError, match="term must be one of"): LossSpec(term="dice")
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"): LossSpec(reduction="none")


# --- CUDA: the compiled kernels against torch on the GPU, no synchronisation --------------------------------

@CUDA
@pytest.mark.parametrize("name,params", MODULES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(MODULES)])
def test_cuda_every_loss_matches_torch_and_never_syncs(name, params):
    g = torch.Generator(device="cuda").manual_seed(0)
    C = len(COUNTS)
    x = torch.randn(4, C, 64, 96, device="cuda", generator=g).to(memory_format=torch.channels_last)
    y = torch.randint(0, C, (4, 64, 96), device="cuda", generator=g)
    y[y == 3] = 255
    loss = get_loss(name, validate=False, **params).cuda().eval()
    (lk, gk), (lr, gr) = both_paths(loss, x, y)
    set_kernels()
    torch.testing.assert_close(lk, lr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gk, gr, rtol=1e-4, atol=1e-8)
    value_and_grad(loss.train(), x, y)                                  # warm: tables cached, kernels compiled
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        value_and_grad(loss, x.bfloat16(), y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
