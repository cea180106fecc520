"""Issue 14 A/B on one GPU in one process: the kernels with a backward kernel (commit 24823a2) against the kernel that
computes the gradient in its forward pass (pat.triton_losses), and F.cross_entropy; synchronised single calls, as
pat.bench times them, with the host's share (until `backward()` returns).

    git show 24823a2:pat/triton_losses.py > pat/_old_triton_losses.py   # here, before carrying the tree
    python tools/loss_ab.py                                              # on the GPU machine
"""
import gc, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch, torch.nn.functional as F
from pat import triton_losses as new
try: from pat import _old_triton_losses as old
except ImportError: sys.exit("tools/loss_ab.py needs the old kernels: git show 24823a2:pat/triton_losses.py > pat/_old_triton_losses.py")
from pat.losses import get_loss
from pat.bench import power_law_counts


def table(shape, repeats=60, collect=True):
    B, C, H, W = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(*shape, device="cuda", generator=gen, requires_grad=True)
    p = torch.tensor(power_law_counts(C), device="cuda")
    y = torch.multinomial(p / p.sum(), B * H * W, replacement=True, generator=gen).view(B, H, W)
    w = torch.rand(C, device="cuda", generator=gen) + 0.5
    kinds = {"ce": dict(term="ce"), "focal": dict(term="focal", gamma=2.0), "cb": dict(term="ce", weight=w),
             "pat": dict(term="pat", per_image=True)}
    fns = {"F.cross_entropy": lambda a, b: F.cross_entropy(a, b, ignore_index=255)}
    for k, kw in kinds.items():
        fns[f"{k} old"] = (lambda kw: lambda a, b: old.softmax_loss_triton(a, b, old.LossSpec(**kw)))(kw)
        fns[f"{k} new"] = (lambda kw: lambda a, b: new.softmax_loss_triton(a, b, new.LossSpec(**kw)))(kw)
    fns["CELoss module"] = get_loss("ce", validate=False).cuda()
    fns["PATLoss module"] = get_loss("pat", validate=False).cuda()
    def call(fn):
        x.grad = None; fn(x, y).backward(); x.grad = None
    for fn in fns.values(): call(fn); call(fn)
    wall = {n: [] for n in fns}; host = {n: [] for n in fns}
    gc.collect()
    if not collect: gc.disable()
    names = list(fns)
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            torch.cuda.synchronize(); t0 = time.perf_counter(); call(fns[n]); t1 = time.perf_counter(); torch.cuda.synchronize()
            wall[n].append(time.perf_counter() - t0); host[n].append(t1 - t0)
    gc.enable()
    med = lambda v: sorted(v)[len(v) // 2]
    base = med(wall["F.cross_entropy"])
    print(f"## {list(shape)}, {repeats} rotating repeats, gc {'on' if collect else 'off'}: wall ms (x F.cross_entropy), host ms until backward returns, min wall", flush=True)
    for n in names:
        print(f"{n:16s} {med(wall[n]) * 1e3:7.4f} ({med(wall[n]) / base:5.3f}x)  host {med(host[n]) * 1e3:7.4f}  min {min(wall[n]) * 1e3:7.4f}", flush=True)


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, CPU " +
          next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"), flush=True)
    table((4, 20, 256, 512))
    table((4, 20, 256, 512), collect=False)
    table((8, 11, 360, 480))
