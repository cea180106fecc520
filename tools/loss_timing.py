"""Timing a loss call as `pat.bench` does (synchronised before and after, forward + backward, names in a rotating
order), with the host's share: the time until `backward()` returns, before the closing synchronisation. And the host's
time alone on the CPU, with the kernel launch replaced (`host_only`). Shared by tools/device_check.py (`loss_kernels`),
tools/loss_ab.py, tools/profile_launch.py and tools/host_overhead.py."""
import time
import torch
from pat.bench import power_law_counts


def long_tailed_batch(shape, seed: int = 0, device="cuda"):
    "Logits `shape` = [B, C, H, W] that require grad and labels drawn from `pat.bench`'s power-law class shares."
    B, C, H, W = shape
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(*shape, device=device, generator=g, requires_grad=True)
    p = torch.tensor(power_law_counts(C), device=device)
    y = torch.multinomial(p / p.sum(), B * H * W, replacement=True, generator=g).view(B, H, W)
    return x, y


def interleaved(fns: dict, n: int = 300, rounds: int = 60, sync=lambda: None) -> dict:
    """name -> (best, median) µs per call of `fns[name]()`: in each round every function runs `n` calls (between two
    `sync()`s), in a rotating order, so that on a noisy machine every function sees the same moments (after `n` untimed
    calls each)."""
    for fn in fns.values():
        for _ in range(n): fn()
    names, times = list(fns), {k: [] for k in fns}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[k]; sync(); t0 = time.perf_counter()
            for _ in range(n): fn()
            sync(); times[k].append((time.perf_counter() - t0) / n * 1e6)
    return {k: (min(v), sorted(v)[len(v) // 2]) for k, v in times.items()}


def per_call(fn, n: int = 2000, rounds: int = 1, sync=lambda: None) -> float:
    "µs per call of `fn` alone: the best of `rounds` rounds of `n` calls (`interleaved` with one function)."
    return interleaved({fn: fn}, n, rounds, sync)[fn][0]


class NoLaunch:
    "Stands in for the loss kernel (host-time measurements): `kernel[grid](*args)` writes only the per-pixel table index PAT's backward gathers with."
    def __getitem__(self, grid):
        return lambda *args, **kw: args[3].zero_()


def host_only(*modules):
    """The host's time alone, on the CPU (TRITON_INTERPRET=1 set before triton was imported): one thread, the kernels
    used on CPU tensors with their launch a no-op in each of `modules` (pat.triton_losses and its copies), and a batch
    [2, 20, 4, 4] so small that compute is negligible: (logits, labels)."""
    torch.set_num_threads(1)
    for m in modules:
        m.set_kernels(True, cpu=True)
        m._loss_kernel = NoLaunch()
    return torch.randn(2, 20, 4, 4, requires_grad=True), torch.randint(0, 20, (2, 4, 4))


def time_calls(fns: dict, x, y, repeats: int = 40) -> dict:
    "name -> (median wall ms, median host ms, min wall ms) of `fns[name](x, y).backward()`, after two untimed calls each."
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    def call(fn):
        x.grad = None; fn(x, y).backward(); x.grad = None
    for fn in fns.values(): call(fn); call(fn)
    names = list(fns)
    wall, host = {n: [] for n in names}, {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            sync(); t0 = time.perf_counter(); call(fns[n]); t1 = time.perf_counter(); sync()
            wall[n].append(time.perf_counter() - t0); host[n].append(t1 - t0)
    med = lambda v: sorted(v)[len(v) // 2] * 1e3
    return {n: (med(wall[n]), med(host[n]), min(wall[n]) * 1e3) for n in names}


def loss_kernel_call(x, y, spec):
    """The loss kernel's grid, runtime arguments and constexprs for logits `x` [B, C, *] and labels `y`, as
    `SoftmaxLossFunction.forward` builds them (with a gradient, reduction 'mean', no noise; buffers made once here):
    for launching the kernel alone (tools/profile_launch.py, tools/launch_cache.py). `spec.ignore_index` as given."""
    import pat.triton_losses as TL
    B, C = x.shape[:2]
    xx, yy = x.detach().reshape(B, C, -1), y.reshape(B, -1)
    HW = xx.shape[2]
    block_c, block_p, nprog, n_iter = TL._geometry(B, C, HW, xx.device)
    lock, part, _, cnt = TL._workspace(xx.device, B * nprog)
    gx, inv, out = torch.empty_like(xx), torch.empty((), device=xx.device), torch.empty((), device=xx.device)
    args = (xx, yy, gx, lock, part, cnt, out, inv, lock, *TL._tables(spec, part), C, HW, *xx.stride(), *gx.stride(),
            spec.ignore_index, n_iter, 1.0, *spec.term_args, 0, 0, 0.0, 1.0 / B)
    kw = dict(HAS_NW=False, MEAN=True, GRAD=True, BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_J=64, **spec.flags)
    return (nprog, B), args, kw
