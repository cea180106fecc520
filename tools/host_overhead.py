"""The Python host time of the losses' kernel path, measurable without a GPU (issue 14): CPU tensors so small that
compute is negligible, Triton's interpreter flag so the modules take the kernel path, and the loss kernel's launch
replaced by a no-op. What is left is what the host pays per call besides the launch itself (tools/profile_launch.py
measures the launch on a GPU): the module, `LossSpec`, the buffers, `autograd.Function` and its Python backward.
Printed beside `F.cross_entropy` and beside the floor of any Python `autograd.Function` (two buffers, backward one
multiplication), in µs per call: the best and the median of interleaved rounds (`loss_timing.interleaved`).

    python tools/host_overhead.py
"""
import os, sys
from pathlib import Path
os.environ["TRITON_INTERPRET"] = "1"                 # before triton is imported: the kernel path on CPU tensors
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch, torch.nn.functional as F
from pat.losses import get_loss
from pat import triton_losses as TL
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_timing import host_only, interleaved


class Floor(torch.autograd.Function):
    "The least a Python autograd.Function costs here: two buffers in forward, one multiplication in backward."
    @staticmethod
    def forward(ctx, logits, target):
        ctx.save_for_backward(torch.empty_like(logits), torch.empty(1))
        return torch.empty(())
    @staticmethod
    def backward(ctx, g):
        gx, inv = ctx.saved_tensors
        return gx * (inv * g), None


def main():
    x, y = host_only(TL)
    counts = [10.0 ** (5 - c / 4) for c in range(20)]
    calls = {"F.cross_entropy": lambda a, b: F.cross_entropy(a, b, ignore_index=255),
             "autograd.Function floor": Floor.apply,
             "softmax_loss_triton (CE)": lambda a, b, spec=TL.LossSpec(): TL.softmax_loss_triton(a, b, spec)}
    for name in ("ce", "focal", "cb", "ldam", "pat"):
        calls[f"{name} module, validate=False"] = get_loss(name, validate=False, **({"counts": counts} if name in ("cb", "ldam") else {}))
    print(f"torch {torch.__version__}, CPU tensors {list(x.shape)}, launch replaced by a no-op; µs per call, best and median "
          "of 60 interleaved rounds of 300 calls", flush=True)
    timed = {}
    for name, fn in calls.items():
        timed[name, "forward"] = lambda fn=fn: fn(x, y)
        timed[name, "forward+backward"] = lambda fn=fn: fn(x, y).backward()
    t = interleaved(timed)
    for name in calls:
        (f, fm), (b, bm) = t[name, "forward"], t[name, "forward+backward"]
        print(f"{name:32s} forward {f:6.1f} ({fm:6.1f})   forward+backward {b:6.1f} ({bm:6.1f})", flush=True)


if __name__ == "__main__":
    import argparse
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
