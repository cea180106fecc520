"""Where the CPU time of a loss call goes on CUDA (issue 14): per-op launch costs and a cProfile of the kernel path.

    python tools/profile_launch.py      # on a GPU machine; prints µs per call of each piece
"""
import cProfile, io, platform, pstats, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch, torch.nn.functional as F
import triton, triton.language as tl
from pat.losses import get_loss
from pat import triton_losses as TL


@triton.jit
def _noop(x_ptr, n):
    tl.store(x_ptr + tl.arange(0, 16), tl.arange(0, 16).to(tl.float32), mask=tl.arange(0, 16) < n)


def per_call(fn, n=2000):
    for _ in range(20): fn()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


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
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(28); print(s.getvalue()[-9000:], flush=True)


if __name__ == "__main__":
    main()
