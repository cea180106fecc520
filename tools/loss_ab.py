"""Issue 14 A/B in one process: the loss kernels' host code of another revision (`--old`: a git revision, or a copy of
its pat/triton_losses.py) against the working tree's, beside F.cross_entropy, for CE, focal, CB (class weights) and PAT.
On a GPU: synchronised single calls as pat.bench times them (forward+backward), with the host's share (until
`backward()` returns). With `--host`, on the CPU: the Python host time alone (tiny CPU tensors, the kernel launch of
both sides replaced by a no-op, as in tools/host_overhead.py), in interleaved rounds so both sides see the same machine.

    python tools/loss_ab.py --old 7ab0a2a --host                              # here, no GPU
    git show 7ab0a2a:pat/triton_losses.py > .carry/old_triton_losses.py        # here, before carrying the tree
    python tools/loss_ab.py --old .carry/old_triton_losses.py                 # on the GPU machine (no .git there)
    python tools/loss_ab.py --old pat/triton_losses.py --cached-launch          # GPU: the same code, new side launching
                                                                               # through tools/launch_cache.py
"""
import argparse, gc, importlib.util, os, subprocess, sys, tempfile
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def load_old(old: str):
    "pat/triton_losses.py of `old` (a file, or a git revision of this repository) as the module `pat._old_triton_losses`."
    text = Path(old).read_text() if Path(old).is_file() else \
        subprocess.run(["git", "show", f"{old}:pat/triton_losses.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_triton_losses.py"
    path.write_text(text)                                          # a file: Triton's JIT reads the kernels' source
    spec = importlib.util.spec_from_file_location("pat._old_triton_losses", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss_calls(old, new, device):
    "F.cross_entropy and, per kind of loss, `softmax_loss_triton` of the old and the new code."
    import torch, torch.nn.functional as F
    w = torch.rand(20, generator=torch.Generator().manual_seed(1)).to(device) + 0.5
    kinds = {"ce": dict(term="ce"), "focal": dict(term="focal", gamma=2.0), "cb": dict(term="ce", weight=w),
             "pat": dict(term="pat", per_image=True)}
    fns = {"F.cross_entropy": lambda a, b: F.cross_entropy(a, b, ignore_index=255)}
    for k, kw in kinds.items():
        for side, m in (("old", old), ("new", new)):
            fns[f"{k} {side}"] = (lambda m, spec: lambda a, b: m.softmax_loss_triton(a, b, spec))(m, m.LossSpec(**kw))
    return fns


def gpu_table(old, new, shape, repeats=60, collect=True):
    from loss_timing import long_tailed_batch, time_calls
    x, y = long_tailed_batch(shape)
    fns = loss_calls(old, new, "cuda")
    gc.collect()
    if not collect: gc.disable()
    try: t = time_calls(fns, x, y, repeats)
    finally: gc.enable()
    base = t["F.cross_entropy"][0]
    print(f"## {list(shape)}, {repeats} rotating repeats, gc {'on' if collect else 'off'}: wall ms (x F.cross_entropy), host ms until backward returns, min wall", flush=True)
    for n, (wall, host, low) in t.items():
        print(f"{n:16s} {wall:7.4f} ({wall / base:5.3f}x)  host {host:7.4f}  min {low:7.4f}", flush=True)


def host_table(old, new):
    from loss_timing import host_only, interleaved
    x, y = host_only(old, new)
    timed = {n: (lambda fn: lambda: fn(x, y).backward())(fn) for n, fn in loss_calls(old, new, "cpu").items()}
    t = interleaved(timed)
    print(f"## host µs per forward+backward, CPU tensors {list(x.shape)}, launch a no-op: best (median) of 60 interleaved rounds", flush=True)
    for n, (best, med) in t.items():
        print(f"{n:16s} {best:7.1f} ({med:7.1f})", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="a git revision, or a copy of its pat/triton_losses.py")
    ap.add_argument("--host", action="store_true", help="on the CPU: host time alone, launches replaced by a no-op")
    ap.add_argument("--cached-launch", action="store_true", help="the new side launches its kernel through tools/launch_cache.py (GPU)")
    a = ap.parse_args()
    if a.host: os.environ["TRITON_INTERPRET"] = "1"            # before triton is imported: the kernel path on CPU tensors
    import torch
    from pat import triton_losses as new
    old = load_old(a.old)
    if a.cached_launch:
        from launch_cache import CachedLaunch
        new._loss_kernel = CachedLaunch(new._loss_kernel)
    print(f"old: {a.old}, new: the working tree{' through CachedLaunch' if a.cached_launch else ''}; torch {torch.__version__}, " +
          (torch.cuda.get_device_name() if not a.host else "CPU ") +
          next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"), flush=True)
    if a.host: host_table(old, new)
    else:
        gpu_table(old, new, (4, 20, 256, 512))
        gpu_table(old, new, (4, 20, 256, 512), collect=False)
        gpu_table(old, new, (8, 11, 360, 480))
