"tools/seed_spread.py: the spread it prints is that of the seeds it trained (recomputed here from their metrics.json)."
import importlib.util, json, math, re
from pathlib import Path
import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("seed_spread", ROOT / "tools" / "seed_spread.py")
seed_spread = importlib.util.module_from_spec(spec); spec.loader.exec_module(seed_spread)


def test_seed_list():
    assert seed_spread.seed_list("0-5") == [0, 1, 2, 3, 4, 5]
    assert seed_spread.seed_list("0,3") == [0, 3]
    assert seed_spread.seed_list("7") == [7]


def test_unknown_loss_is_named():
    with pytest.raises(SystemExit, match="no t61 run with loss 'nope'"):
        seed_spread.main(["--params", str(ROOT / "params.yaml"), "--losses", "nope", "--out", "/nonexistent"])


def test_printed_spread_is_the_seeds(tmp_path, capsys):
    seed_spread.main(["--params", str(ROOT / "params.yaml"), "--losses", "ce", "--seeds", "0-2",
                      "--set", "iterations=3", "--set", "checkpoint_every=1000", "--out", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    runs = sorted((tmp_path / "runs" / "checkpoint_every=1000,iterations=3" / "ce").glob("seed*/metrics.json"))
    metrics = [json.loads(p.read_text()) for p in runs]
    assert [m["seed"] for m in metrics] == [0, 1, 2] and {m["steps"] for m in metrics} == {3}
    for label, split in (("ce:", metrics), ("ce val:", [m["val"] for m in metrics])):
        check_line(next(l for l in out if l.startswith(label)), split)
    assert metrics[0]["miou"] != metrics[0]["val"]["miou"]   # the two lines are of different splits


def check_line(line, metrics):
    "The printed mean, s.d., half-width and per-class s.d. are those of `metrics`."
    miou = np.array([m["miou"] for m in metrics])
    sd = miou.std(ddof=1)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert sd > 0
    assert f"mIoU {miou.mean():.2f}, seed s.d. {sd:.2f}, 95% half-width {half:.2f} over 3 seeds" in line
    iou = np.array([m["iou"] for m in metrics])
    mean, sd = re.search(r"class IoU mean \[(.*)\], s\.d\. \[(.*)\]", line).groups()
    assert mean == ", ".join(str(round(float(x), 1)) for x in iou.mean(axis=0))
    assert sd == ", ".join(str(round(float(x), 1)) for x in iou.std(axis=0, ddof=1))
