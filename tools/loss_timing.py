"""Timing a loss call as `pat.bench` does (synchronised before and after, forward + backward, names in a rotating
order), with the host's share: the time until `backward()` returns, before the closing synchronisation. And the host's
time alone on the CPU, with the kernel launch replaced (`NoLaunch`). Shared by tools/device_check.py (`loss_kernels`),
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


def per_call(fn, n: int = 2000, rounds: int = 1, sync=lambda: None) -> float:
    "µs per call of `fn`: the best of `rounds` rounds of `n` calls (each between two `sync()`s), after max(20, n // 10) untimed."
    for _ in range(max(20, n // 10)): fn()
    best = float("inf")
    for _ in range(rounds):
        sync(); t0 = time.perf_counter()
        for _ in range(n): fn()
        sync(); best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def interleaved(fns: dict, n: int = 300, rounds: int = 60) -> dict:
    """name -> (best, median) µs per call of `fns[name]()`: in each round every function runs `n` calls, in a rotating
    order, so that on a noisy machine every function sees the same moments (after `n` untimed calls each)."""
    for fn in fns.values():
        for _ in range(n): fn()
    names, times = list(fns), {k: [] for k in fns}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[k]; t0 = time.perf_counter()
            for _ in range(n): fn()
            times[k].append((time.perf_counter() - t0) / n * 1e6)
    return {k: (min(v), sorted(v)[len(v) // 2]) for k, v in times.items()}


class NoLaunch:
    "Stands in for the loss kernel (host-time measurements): `kernel[grid](*args)` writes only the per-pixel table index PAT's backward gathers with."
    def __getitem__(self, grid):
        return lambda *args, **kw: args[3].zero_()


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
