"""Issue 14 A/B on one GPU in one process: the kernels with a backward kernel (commit 24823a2) against the kernel that
computes the gradient in its forward pass (pat.triton_losses), and F.cross_entropy; synchronised single calls, as
pat.bench times them, with the host's share (until `backward()` returns).

    git show 24823a2:pat/triton_losses.py > pat/_old_triton_losses.py   # here, before carrying the tree
    python tools/loss_ab.py                                              # on the GPU machine
"""
import gc, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch, torch.nn.functional as F
from pat import triton_losses as new
try: from pat import _old_triton_losses as old
except ImportError: sys.exit("tools/loss_ab.py needs the old kernels: git show 24823a2:pat/triton_losses.py > pat/_old_triton_losses.py")
from pat.losses import get_loss
from loss_timing import long_tailed_batch, time_calls


def table(shape, repeats=60, collect=True):
    x, y = long_tailed_batch(shape)
    w = torch.rand(shape[1], device="cuda", generator=torch.Generator(device="cuda").manual_seed(1)) + 0.5
    kinds = {"ce": dict(term="ce"), "focal": dict(term="focal", gamma=2.0), "cb": dict(term="ce", weight=w),
             "pat": dict(term="pat", per_image=True)}
    fns = {"F.cross_entropy": lambda a, b: F.cross_entropy(a, b, ignore_index=255)}
    for k, kw in kinds.items():
        fns[f"{k} old"] = (lambda kw: lambda a, b: old.softmax_loss_triton(a, b, old.LossSpec(**kw)))(kw)
        fns[f"{k} new"] = (lambda kw: lambda a, b: new.softmax_loss_triton(a, b, new.LossSpec(**kw)))(kw)
    fns["CELoss module"] = get_loss("ce", validate=False).cuda()
    fns["PATLoss module"] = get_loss("pat", validate=False).cuda()
    gc.collect()
    if not collect: gc.disable()
    try: t = time_calls(fns, x, y, repeats)
    finally: gc.enable()
    base = t["F.cross_entropy"][0]
    print(f"## {list(shape)}, {repeats} rotating repeats, gc {'on' if collect else 'off'}: wall ms (x F.cross_entropy), host ms until backward returns, min wall", flush=True)
    for n, (wall, host, low) in t.items():
        print(f"{n:16s} {wall:7.4f} ({wall / base:5.3f}x)  host {host:7.4f}  min {low:7.4f}", flush=True)


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, CPU " +
          next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"), flush=True)
    table((4, 20, 256, 512))
    table((4, 20, 256, 512), collect=False)
    table((8, 11, 360, 480))
