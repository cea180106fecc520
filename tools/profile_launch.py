"""Where the CPU time of a loss call goes on CUDA (issue 14): per-op launch costs, a cProfile of the kernel path, the loss
kernel's launch alone (through the JIT and through the compiled kernel), synchronised single calls as pat.bench times them,
and pat.bench's loss timing with and without its two PAT variants beside the eight losses.

    python tools/profile_launch.py      # on a GPU machine; prints µs per call of each piece
"""
import cProfile, functools, io, platform, pstats, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch, torch.nn.functional as F
import triton, triton.language as tl
from pat.losses import get_loss
from pat import triton_losses as TL
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_timing import long_tailed_batch, loss_kernel_call, per_call, time_calls


@triton.jit
def _noop(x_ptr, n):
    tl.store(x_ptr + tl.arange(0, 16), tl.arange(0, 16).to(tl.float32), mask=tl.arange(0, 16) < n)


per_call = functools.partial(per_call, sync=torch.cuda.synchronize)     # µs per call, the GPU's work included


def main():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}, CPU {cpu}", flush=True)
    d = torch.empty(1024, device="cuda")
    B, C, H, W = 1, 20, 8, 8
    x = torch.randn(B, C, H, W, device="cuda", requires_grad=True)
    y = torch.randint(0, C, (B, H, W), device="cuda")
    spec = TL.LossSpec()
    # the pieces, CPU time per call (GPU work negligible at this size)
    print(f"torch.empty: {per_call(lambda: torch.empty(1000, device='cuda')):.1f} us", flush=True)
    print(f"tensor.add_ (one torch kernel): {per_call(lambda: d.add_(1.0)):.1f} us", flush=True)
    print(f"triton launch, 2 args: {per_call(lambda: _noop[(1,)](d, 16)):.1f} us", flush=True)
    def fwd_only():
        with torch.no_grad(): TL.softmax_loss_triton(x, y, spec)
    print(f"softmax_loss_triton without a gradient (one launch and its buffers): {per_call(fwd_only):.1f} us", flush=True)
    def both(fn):
        def run():
            x.grad = None; fn(x, y).backward()
        return run
    ce = get_loss("ce", validate=False).cuda()
    print(f"F.cross_entropy fwd+bwd: {per_call(both(lambda a, b: F.cross_entropy(a, b, ignore_index=255)), 1000):.1f} us", flush=True)
    print(f"softmax_loss_triton fwd+bwd: {per_call(both(lambda a, b: TL.softmax_loss_triton(a, b, spec)), 1000):.1f} us", flush=True)
    print(f"CELoss (kernels) fwd+bwd: {per_call(both(ce), 1000):.1f} us", flush=True)
    TL.set_kernels(False)
    print(f"CELoss (torch) fwd+bwd: {per_call(both(ce), 1000):.1f} us", flush=True)
    TL.set_kernels(True)
    pr = cProfile.Profile(); pr.enable()
    for _ in range(300): both(ce)()
    torch.cuda.synchronize(); pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(40); print(s.getvalue()[-12000:], flush=True)


def launch_alone(x, y, spec):
    "The loss kernel's launch alone (buffers made once): through Triton's JIT, and through the compiled kernel the JIT returns."
    grid, args, kw = loss_kernel_call(x, y, spec)
    jit = lambda: TL._loss_kernel[grid](*args, **kw)
    print(f"_loss_kernel launch through the JIT ({len(args)} arguments): {per_call(jit):.1f} us", flush=True)
    compiled = jit()
    full = [{**dict(zip(TL._loss_kernel.arg_names, args)), **kw}[n] for n in TL._loss_kernel.arg_names]
    try:
        runner = compiled[(*grid, 1)]
        print(f"_loss_kernel launch through the compiled kernel: {per_call(lambda: runner(*full)):.1f} us", flush=True)
    except Exception as e: print(f"compiled kernel launch failed: {type(e).__name__}: {e}", flush=True)


def single_calls(shape=(4, 20, 256, 512), repeats=40):
    "Synchronised single calls, as pat.bench times them: median wall and host (until backward() returns) ms."
    x, y = long_tailed_batch(shape)
    fns = {"F.cross_entropy": lambda a, b: F.cross_entropy(a, b, ignore_index=255), "CELoss": get_loss("ce", validate=False).cuda(),
           "PATLoss": get_loss("pat", validate=False).cuda(), "softmax_loss_triton": lambda a, b: TL.softmax_loss_triton(a, b, TL.LossSpec())}
    t = time_calls(fns, x, y, repeats)
    for n, (wall, host, _) in t.items():
        print(f"{list(shape)} {n}: wall {wall:.4f} ms ({wall / t['F.cross_entropy'][0]:.3f}x), host {host:.4f} ms", flush=True)


def bench_neighbours(repeats=30):
    "pat.bench's loss timing at the Cityscapes shape with all its losses and without the two PAT variants: do the neighbours move the medians? And does the caching allocator call cudaMalloc while timing?"
    from pat import bench as PB
    PB.set_threads(1)
    cfg = PB.settings(repeats=repeats, threads=1)
    cfg["shapes"] = {"CityScapes": cfg["shapes"]["CityScapes"]}
    for label, names in (("all losses, as pat.bench", PB.LOSS_NAMES), ("CE and the eight losses", (PB.BASELINE,) + PB.REGISTRY)):
        before = torch.cuda.memory_stats().get("num_device_alloc", 0)
        summary, _ = PB.bench_losses(cfg, "cuda", names)
        print(f"## {label}: cudaMalloc calls while timing {torch.cuda.memory_stats().get('num_device_alloc', 0) - before}", flush=True)
        print(summary[["name", "time_ms_median", "time_ratio_median", "time_ratio_min", "time_ratio_max"]].to_string(index=False), flush=True)


if __name__ == "__main__":
    import argparse
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_launch.py times launches on a CUDA GPU and there is none here; "
                 "on the CPU, python tools/host_overhead.py measures the host's share")
    main()
    launch_alone(torch.randn(1, 20, 8, 8, device="cuda"), torch.randint(0, 20, (1, 8, 8), device="cuda"), TL.LossSpec())
    single_calls()
    bench_neighbours()
