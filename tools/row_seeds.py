"""How many seeds each row of a table needs for a 95% half-width of at most `--half` mIoU points, from the seed spread
of a finished (pilot) run of the pipeline: per run folder of `--runs/<group>`, the larger of the seed s.d. of validation
and test mIoU, then the fewest seeds (at least `--least`) whose Student-t half-width at that s.d. is `--half`
(pat.report.seeds_for). Prints every row, and the `grid.row_seeds` entry for a profile. The default profile's came from

    python tools/row_seeds.py --runs runs --groups t61 ablation --half 1.35 --least 5

on the runs of a clean `make repro` with 5 seeds in every row (the one whose dvc.lock commit 4128a08 recorded). The s.d. of 5 seeds is itself uncertain
(its 95% interval spans 0.6-2.9 times it), hence a target below the 1.5 points wanted.
"""
from __future__ import annotations
import argparse, json, sys
from pathlib import Path
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from seed_spread import spread


def run_spread(run_dir: Path) -> dict:
    "Seeds, and the seed s.d. of test and validation mIoU, of one run folder's `seed*/metrics.json`."
    ms = [json.loads(f.read_text()) for f in sorted(run_dir.glob("seed*/metrics.json"))]
    if len(ms) < 2: raise SystemExit(f"error: {run_dir} has {len(ms)} finished seeds; a spread needs at least 2")
    return dict(n=len(ms), test_sd=spread(ms)["sd"], val_sd=spread([m["val"] for m in ms])["sd"])


def main(argv=None):
    from pat.report import seeds_for
    from pat.pipeline import row_of
    ap = argparse.ArgumentParser(prog="python tools/row_seeds.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)   # the whole docstring: its examples too
    ap.add_argument("--runs", default="runs", help="the pipeline's runs folder (default runs)")
    ap.add_argument("--groups", nargs="+", default=["t61", "ablation"], help="table groups (default t61 ablation)")
    ap.add_argument("--half", type=float, default=1.35, help="the 95%% half-width to plan for, in mIoU points (default 1.35)")
    ap.add_argument("--least", type=int, default=5, help="the fewest seeds of a row (default 5)")
    a = ap.parse_args(argv)
    entry = {}
    for g in a.groups:
        dirs = sorted(p for p in (Path(a.runs) / g).glob("*") if p.is_dir())
        if not dirs: raise SystemExit(f"error: no run folders in {Path(a.runs) / g}")
        for d in dirs:
            s = run_spread(d)
            n = seeds_for(max(s["test_sd"], s["val_sd"]), a.half, a.least)
            row = row_of(d.name)
            print(f"{g} {row}: {s['n']} seeds, s.d. test {s['test_sd']:.2f}, val {s['val_sd']:.2f} -> {n} seeds")
            if n > a.least: entry.setdefault(g, {})[row] = n
    print("grid.row_seeds:", json.dumps(entry))


if __name__ == "__main__": main()
