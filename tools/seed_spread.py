"""How much Table 6.1's rows vary between seeds under other training settings (issue 12): trains the `t61` runs of
some losses for some seeds with settings changed, and prints each loss's mIoU mean, seed s.d., 95% half-width and
each class's IoU (mean and s.d.), on the validation split (settings are chosen on it) and on the test split. The
default profile's schedule and the README's spread figures came from

    python tools/seed_spread.py --losses ce,focal,cb,cbfocal,bms,ldam,blv,pat --seeds 0-3 --set lr=0.02 --set iterations=800
    python tools/seed_spread.py --losses ce,focal,ldam --seeds 0-3 --set lr=0.02 --set iterations=1000
    python tools/seed_spread.py --losses ce,focal,ldam --seeds 0-3 --set lr=0.02 --set iterations=500 --set batch_size=16

Data are prepared from params.yaml's dataset settings into `--out` (not data/), so the pipeline is untouched;
finished seeds are reused from `--out` like any run folder.
"""
from __future__ import annotations
import argparse, math, statistics, sys
from pathlib import Path
import yaml
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def seed_list(text: str) -> list[int]:
    "'0-5' -> [0, 1, 2, 3, 4, 5]; '0,3' -> [0, 3]."
    if "-" in text:
        lo, hi = map(int, text.split("-")); return list(range(lo, hi + 1))
    return [int(s) for s in text.split(",")]


def t61_run(params: dict, loss: str) -> dict:
    "The settings of the `t61` run of `loss` (its seeds dropped)."
    runs = [r for r in params["t61"].values() if r["loss"] == loss]
    if not runs: raise SystemExit(f"error: no t61 run with loss {loss!r} in the params file")
    return {k: v for k, v in runs[0].items() if k != "seeds"}


def spread(metrics: list[dict]) -> dict:
    "mIoU mean, seed s.d. and 95% half-width over seeds, and each class's IoU mean and s.d. (s.d.s nan for one seed)."
    from pat.report import mean_ci
    miou = [m["miou"] for m in metrics]
    mean, half, n = mean_ci(miou)
    sd = statistics.stdev(miou) if n > 1 else math.nan
    classes = list(zip(*(m["iou"] for m in metrics)))
    return dict(n=n, mean=mean, sd=sd, half=half, class_mean=[statistics.mean(c) for c in classes],
                class_sd=[statistics.stdev(c) if n > 1 else math.nan for c in classes])


def report(loss: str, metrics: list[dict]) -> str:
    "One line per split: `loss val: ...` (the runs' `val` metrics) and `loss: ...` (test)."
    lines = []
    for label, ms in ((f"{loss} val", [m["val"] for m in metrics]), (loss, metrics)):
        s = spread(ms)
        lines.append(f"{label}: mIoU {s['mean']:.2f}, seed s.d. {s['sd']:.2f}, 95% half-width {s['half']:.2f} over {s['n']} seeds; "
                     f"class IoU mean {[round(x, 1) for x in s['class_mean']]}, s.d. {[round(x, 1) for x in s['class_sd']]}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python tools/seed_spread.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)   # the whole docstring: its examples too
    ap.add_argument("--params", default="params.yaml", help="the params file (default params.yaml)")
    ap.add_argument("--losses", default="ce", help="comma-separated losses, e.g. ce,focal,ldam")
    ap.add_argument("--seeds", default="0-5", help="seeds, '0-5' or '0,3'")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run setting changed (YAML value), e.g. batch_size=16")
    ap.add_argument("--out", default="runs/.seed_spread", help="work folder: data and runs (default runs/.seed_spread)")
    ap.add_argument("--workers", type=int, default=None, help="processes at a time (default: 1 per core)")
    a = ap.parse_args(argv)
    from pat.pipeline import load_params
    from pat.data import prepare, write_stats
    from pat.train import pick_device, run_config, run_jobs, cpu_workers
    params, out = load_params(a.params), Path(a.out)
    changes = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    cfgs = {l: run_config({**t61_run(params, l), **changes}) for l in a.losses.split(",")}   # fails here on a bad setting
    datasets = {c["dataset"] for c in cfgs.values()}
    for d in datasets:
        if not (out / "data" / d / "meta.json").exists():
            write_stats(prepare(d, a.params, out / "data"), out / "stats", out / "figures")
    tag = ",".join(f"{k}={v}" for k, v in sorted(changes.items())) or "as-is"
    jobs = [(c, s, out / "runs" / tag / l / f"seed{s}", out / "data", out / "stats") for l, c in cfgs.items() for s in seed_list(a.seeds)]
    workers = a.workers or cpu_workers()
    device = pick_device(next(iter(cfgs.values()))["device"])
    results = run_jobs(jobs, min(workers, len(jobs)), device, f"{tag}: {len(jobs)} seeds")
    print(f"settings changed: {tag}")
    for l in cfgs: print(report(l, [m for (c, *_), m in zip(jobs, results) if c is cfgs[l]]))
    return results


if __name__ == "__main__":
    main()
