"""Issue 14 experiment: where the host time of a kernel loss call goes, and what a gradient-in-forward kernel buys.

    python tools/gpu_overhead.py            # on a GPU machine
    TRITON_INTERPRET=1 python tools/gpu_overhead.py --check   # CPU: the variant's value and gradient equal the current kernels'
"""
import cProfile, io, pstats, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch, torch.nn.functional as F
import triton, triton.language as tl
from pat import triton_losses as TL
from pat.losses import get_loss
from pat.bench import power_law_counts


@triton.jit
def _gif_kernel(x_ptr, y_ptr, gx_ptr, sidx_ptr, part_ptr, cnt_ptr, out_ptr, inv_ptr, lock_ptr, w_ptr, nw_ptr, off_ptr, mar_ptr, nz_ptr,
                C, HW, sxb, sxc, sxp, sgb, sgc, sgp, ignore_index, n_iter, scale, gamma, a, c0, g, seed, nz_base, sigma, inv_B,
                TERM: tl.constexpr, DETACH: tl.constexpr, PER_CLASS: tl.constexpr, HAS_W: tl.constexpr,
                HAS_NW: tl.constexpr, HAS_OFF: tl.constexpr, HAS_MAR: tl.constexpr, NOISE: tl.constexpr,
                MEAN: tl.constexpr, GRAD: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr):
    j = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    cls = tl.arange(0, BLOCK_C)
    cmask = cls < C
    if PER_CLASS:
        acc = tl.zeros([BLOCK_C], tl.float32)
        cnt = tl.zeros([BLOCK_C], tl.int32)
    else:
        acc = tl.zeros([BLOCK_P], tl.float32)
        cnt = tl.zeros([BLOCK_P], tl.float32)
    for it in range(0, n_iter):
        pix = (j * n_iter + it) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = pix < HW
        valid, y = TL._labels(y_ptr, b, pix, pmask, HW, ignore_index)
        u = TL._logit_tile(x_ptr, b, pix, pmask, cls, cmask, y, sxb, sxc, sxp, HW, C, off_ptr, mar_ptr, nz_ptr,
                           seed, nz_base, sigma, scale, HAS_OFF, HAS_MAR, NOISE)
        mx = tl.max(u, axis=1)
        e = tl.exp(u - mx[:, None])
        se = tl.sum(e, axis=1)
        lse = mx + tl.log(se)
        hit = cls[None, :] == y[:, None]
        ce = lse - tl.sum(tl.where(hit, u, 0.0), axis=1)
        h, dh = TL._term(ce, gamma, a, c0, g, TERM, DETACH)
        if HAS_W:
            wy = tl.load(w_ptr + y, mask=valid, other=0.0)
            h = h * wy
            dh = dh * wy
        h = tl.where(valid, h, 0.0)
        if GRAD:
            k = tl.where(valid, dh * scale, 0.0)
            grad = k[:, None] * (e / se[:, None] - hit.to(tl.float32))
            tl.store(gx_ptr + b * sgb + pix[:, None] * sgp + cls[None, :] * sgc, grad.to(gx_ptr.dtype.element_ty),
                     mask=pmask[:, None] & cmask[None, :])
            if PER_CLASS:
                tl.store(sidx_ptr + b * HW + pix, b * C + y, mask=pmask)
        if PER_CLASS:
            onehot = hit & valid[:, None]
            acc += tl.sum(tl.where(onehot, h[:, None], 0.0), axis=0)
            cnt += tl.sum(onehot.to(tl.int32), axis=0)
        else:
            acc += h
            if HAS_NW:
                cnt += tl.load(nw_ptr + y, mask=valid, other=0.0)
            else:
                cnt += valid.to(tl.float32)
    slot = b * tl.num_programs(0) + j
    if PER_CLASS:
        tl.store(part_ptr + slot * C + cls, acc, mask=cmask)
        tl.store(cnt_ptr + slot * C + cls, cnt, mask=cmask)
    else:
        tl.store(part_ptr + slot, tl.sum(acc, axis=0))
        tl.store(cnt_ptr + slot, tl.sum(cnt, axis=0))
    B = tl.num_programs(1)
    tl.debug_barrier()
    ticket = tl.atomic_add(lock_ptr, 1, sem="acq_rel")
    if ticket == B * tl.num_programs(0) - 1:
        tl.debug_barrier()
        TL._combine(part_ptr, cnt_ptr, out_ptr, inv_ptr, B, tl.num_programs(0), C, inv_B, MEAN, PER_CLASS, BLOCK_J, BLOCK_C)
        tl.atomic_xchg(lock_ptr, 0)


class GIF(torch.autograd.Function):
    "Value and gradient in one forward pass; backward scales the stored gradient by the normaliser and grad_out (torch ops)."
    @staticmethod
    def forward(ctx, logits, target, spec):
        B, C = logits.shape[0], logits.shape[1]
        x = logits.reshape(B, C, -1)
        y = target.reshape(B, -1)
        if y.dtype not in (torch.int32, torch.int64): y = y.long()
        if not y.is_contiguous(): y = y.contiguous()
        HW, dev = x.shape[2], x.device
        block_c, block_p, nprog, n_iter = TL._geometry(B, C, HW, dev)
        seed, base = TL.philox_draw(spec.generator, dev, x.numel()) if spec.noise is not None else (0, 0)
        f32, width = torch.float32, (C if spec.per_image else 1)
        grad = ctx.needs_input_grad[0]
        gx = torch.empty_like(x) if grad else x
        sidx = torch.empty(B * HW if spec.per_image and grad else 1, dtype=torch.int64, device=dev)
        part = torch.empty(B * nprog * width, dtype=f32, device=dev)
        cnt = torch.empty(B * nprog * width, dtype=torch.int32 if spec.per_image else f32, device=dev)
        inv = torch.empty(B * C if spec.per_image else 1, dtype=f32, device=dev)
        out = torch.empty((), dtype=f32, device=dev)
        tables = TL._tables(spec, part)
        _gif_kernel[(nprog, B)](x, y, gx, sidx, part, cnt, out, inv, TL._lock(dev), *tables, C, HW, *x.stride(), *gx.stride(),
                                int(spec.ignore_index), n_iter, float(spec.scale), *spec.term_args, seed, base, float(spec.sigma), 1.0 / B,
                                HAS_NW=spec.norm_weight is not None, MEAN=spec.reduction == "mean", GRAD=grad,
                                BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_J=64, **spec.flags)
        ctx.save_for_backward(gx, inv, sidx)
        ctx.shape, ctx.per_image = logits.shape, spec.per_image
        return out

    @staticmethod
    def backward(ctx, go):
        gx, inv, sidx = ctx.saved_tensors
        B, C, HW = gx.shape
        s = inv[sidx].view(B, 1, HW) * go if ctx.per_image else inv * go
        return (gx * s).view(ctx.shape), None, None


class Trivial(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g):
        ctx.save_for_backward(g)
        return torch.empty((), device=x.device)
    @staticmethod
    def backward(ctx, go):
        return ctx.saved_tensors[0], None


def specs(C, device):
    counts = torch.tensor(power_law_counts(C))
    mods = {n: get_loss(n, validate=False, **({"counts": counts} if n not in ("ce", "focal", "pat") else {})).to(device)
            for n in ("ce", "focal", "cb", "cbfocal", "bms", "ldam", "pat")}
    return mods


def gif_loss(mod):
    "The module's loss through GIF (same LossSpec the module would build)."
    def fn(x, y):
        spec = mod.kernel_spec(x, y)
        return GIF.apply(x, y, TL.LossSpec(reduction=mod.reduction, ignore_index=mod.ignore_index, **spec))
    return fn


def check():
    TL.set_kernels(True, cpu=True)
    torch.manual_seed(0)
    for shape in ((2, 5, 7, 9), (3, 20, 5, 6)):
        B, C, H, W = shape
        x = torch.randn(*shape, requires_grad=True)
        y = torch.randint(0, C, (B, H, W)); y[0, 0, :3] = 255
        for n, mod in specs(C, "cpu").items():
            x.grad = None; a = mod(x, y); a.backward(); ga = x.grad.clone()
            x.grad = None; b = gif_loss(mod)(x, y); (b * 1.7).backward(); gb = x.grad.clone()
            print(n, shape, float(a), float(b), float((ga * 1.7 - gb).abs().max()), flush=True)
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6) and torch.allclose(ga * 1.7, gb, rtol=1e-4, atol=1e-6), n


def per_call(fn, n=1000):
    for _ in range(20): fn()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def both(fn, x, y):
    def run():
        x.grad = None; fn(x, y).backward()
    return run


def host_table():
    B, C, H, W = 1, 20, 8, 8
    x = torch.randn(B, C, H, W, device="cuda", requires_grad=True)
    y = torch.randint(0, C, (B, H, W), device="cuda")
    g = torch.randn_like(x)
    mods = specs(C, "cuda")
    print("## host us per call at [1,20,8,8] (no sync between calls)", flush=True)
    rows = {
        "F.cross_entropy": both(lambda a, b: F.cross_entropy(a, b, ignore_index=255), x, y),
        "x.sum().backward() (C++ autograd)": both(lambda a, b: a.sum(), x, y),
        "Trivial Function fwd+bwd": both(lambda a, b: Trivial.apply(a, g), x, y),
        "CELoss kernels": both(mods["ce"], x, y),
        "PATLoss kernels": both(mods["pat"], x, y),
        "softmax_loss_triton ce": both(lambda a, b: TL.softmax_loss_triton(a, b, TL.LossSpec()), x, y),
        "GIF ce": both(gif_loss(mods["ce"]), x, y),
        "GIF pat": both(gif_loss(mods["pat"]), x, y),
    }
    for n, f in rows.items(): print(f"{n}: {per_call(f):.1f}", flush=True)
    with torch.no_grad():
        spec = TL.LossSpec()
        print(f"CELoss forward only (no_grad): {per_call(lambda: mods['ce'](x, y)):.1f}", flush=True)
        print(f"GIF forward only (no_grad): {per_call(lambda: GIF.apply(x, y, spec)):.1f}", flush=True)
        print(f"LossSpec() construction: {per_call(lambda: TL.LossSpec(term='pat', per_image=True)):.1f}", flush=True)
        print(f"torch.empty x5: {per_call(lambda: [torch.empty(100, device='cuda') for _ in range(5)]):.1f}", flush=True)
        print(f"mods['pat'].kernel_spec: {per_call(lambda: mods['pat'].kernel_spec(x, y)):.1f}", flush=True)
    # the forward launch alone through the JIT (same args as SoftmaxLossFunction.forward)
    xx = x.detach().reshape(B, C, -1); yy = y.reshape(B, -1)
    bc, bp, nprog, n_iter = TL._geometry(B, C, H * W, x.device)
    lse = torch.empty(B * H * W, device="cuda"); part = torch.empty(B * nprog, device="cuda"); cnt = torch.empty(B * nprog, device="cuda")
    inv = torch.empty(1, device="cuda"); out = torch.empty((), device="cuda"); tables = TL._tables(spec, lse); lock = TL._lock(x.device)
    args = (xx, yy, lse, part, cnt, out, inv, lock, *tables, C, H * W, *xx.stride(), 255, n_iter, 1.0, *spec.term_args, 0, 0, 0.0, 1.0)
    kw = dict(HAS_NW=False, MEAN=True, BLOCK_P=bp, BLOCK_C=bc, BLOCK_J=64, **spec.flags)
    print(f"_fwd_kernel launch via JIT ({len(args)} args): {per_call(lambda: TL._fwd_kernel[(nprog, B)](*args, **kw)):.1f}", flush=True)
    compiled = TL._fwd_kernel[(nprog, B)](*args, **kw)
    names = TL._fwd_kernel.arg_names
    full = [dict(zip(names, args), **kw)[n] for n in names]
    for label, a in (("all args", full), ("non-constexpr args", list(args))):
        try:
            runner = compiled[(nprog, B, 1)]
            runner(*a); torch.cuda.synchronize()
            print(f"_fwd_kernel direct compiled run ({label}): {per_call(lambda: runner(*a)):.1f}", flush=True)
        except Exception as e:
            print(f"_fwd_kernel direct compiled run ({label}): failed {type(e).__name__}: {str(e)[:200]}", flush=True)
    pr = cProfile.Profile(); f = rows["PATLoss kernels"]; pr.enable()
    for _ in range(300): f()
    torch.cuda.synchronize(); pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(22); print(s.getvalue()[-6000:], flush=True)


def wall_table(shape=(4, 20, 256, 512), repeats=40):
    B, C, H, W = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(*shape, device="cuda", generator=gen, requires_grad=True)
    p = torch.tensor(power_law_counts(C), device="cuda")
    y = torch.multinomial(p / p.sum(), B * H * W, replacement=True, generator=gen).view(B, H, W)
    mods = specs(C, "cuda")
    fns = {"F.cross_entropy": lambda a, b: F.cross_entropy(a, b, ignore_index=255)}
    for n, m in mods.items():
        fns[n] = m
        fns[n + " GIF"] = gif_loss(m)
    for n in ("ce", "pat", "cb"):                                  # equal values and gradients on CUDA
        x.grad = None; a = mods[n](x, y); a.backward(); ga = x.grad.clone()
        x.grad = None; b = gif_loss(mods[n])(x, y); b.backward(); gb = x.grad.clone(); x.grad = None
        print(f"check {n}: value {float(a):.6f} vs {float(b):.6f}, grad rel err {float((ga - gb).norm() / ga.norm()):.2e}", flush=True)
    def call(fn):
        x.grad = None; fn(x, y).backward(); x.grad = None
    for fn in fns.values(): call(fn); call(fn)
    times = {n: [] for n in fns}
    for r in range(repeats):
        names = list(fns); names = names[r % len(names):] + names[:r % len(names)]
        for n in names:
            torch.cuda.synchronize(); t0 = time.perf_counter(); call(fns[n]); torch.cuda.synchronize()
            times[n].append(time.perf_counter() - t0)
    base = sorted(times["F.cross_entropy"])[repeats // 2]
    print(f"## wall ms at {list(shape)} (synchronised single call, median of {repeats}); ratio to F.cross_entropy", flush=True)
    for n, t in times.items():
        m = sorted(t)[repeats // 2]
        print(f"{n}: {m * 1e3:.4f} ms  {m / base:.3f}x", flush=True)
    for n in ("ce", "pat"):
        torch.cuda.reset_peak_memory_stats(); m0 = torch.cuda.memory_allocated()
        call(fns[n]); torch.cuda.synchronize(); a = torch.cuda.max_memory_allocated() - m0
        torch.cuda.reset_peak_memory_stats(); call(fns[n + " GIF"]); torch.cuda.synchronize(); b = torch.cuda.max_memory_allocated() - m0
        torch.cuda.reset_peak_memory_stats(); call(fns["F.cross_entropy"]); torch.cuda.synchronize(); c = torch.cuda.max_memory_allocated() - m0
        print(f"peak extra MB {n}: kernels {a / 1e6:.1f}, GIF {b / 1e6:.1f}, F.cross_entropy {c / 1e6:.1f}", flush=True)


if __name__ == "__main__":
    if "--check" in sys.argv: check(); sys.exit()
    print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}", flush=True)
    host_table()
    wall_table()
    wall_table((8, 11, 360, 480))
