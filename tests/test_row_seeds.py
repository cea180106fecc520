"tools/row_seeds.py: each row's seeds for a target half-width, from the larger of its validation and test seed s.d."
import importlib.util, json, statistics
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("row_seeds", ROOT / "tools" / "row_seeds.py")
row_seeds = importlib.util.module_from_spec(spec); spec.loader.exec_module(row_seeds)


def _runs(root: Path, group: str, key: str, test, val):
    for s, (t, v) in enumerate(zip(test, val)):
        d = root / group / key / f"seed{s}"; d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"miou": t, "iou": [t], "val": {"miou": v, "iou": [v]}}))


def test_rows_get_the_seeds_their_spread_asks_for(tmp_path, capsys):
    wide, narrow = [40.0, 44.0, 37.0, 45.0, 41.0], [52.0, 52.5, 52.2, 51.9, 52.4]
    _runs(tmp_path, "t61", "synthetic-attunet-ldam", wide, narrow)            # test spread the larger
    _runs(tmp_path, "t61", "synthetic-attunet-ce", narrow, narrow)
    _runs(tmp_path, "ablation", "synthetic-attunet-pat-mask-only", narrow, wide)  # validation spread the larger
    row_seeds.main(["--runs", str(tmp_path), "--groups", "t61", "ablation", "--half", "1.35"])
    out = capsys.readouterr().out
    sd = statistics.stdev(wide)                                                  # 3.21: t(0.975, 24) * 3.21 / 5 = 1.32 <= 1.35; n = 24 gives 1.36
    assert f"t61 attunet-ldam: 5 seeds, s.d. test {sd:.2f}, val {statistics.stdev(narrow):.2f} -> 25 seeds" in out
    assert "t61 attunet-ce: 5 seeds" in out and out.count("-> 5 seeds") == 1
    assert out.splitlines()[-1] == 'grid.row_seeds: {"t61": {"attunet-ldam": 25}, "ablation": {"attunet-pat-mask-only": 25}}'


def test_a_run_with_one_seed_has_no_spread(tmp_path):
    _runs(tmp_path, "t61", "synthetic-attunet-ce", [50.0], [50.0])
    with pytest.raises(SystemExit, match="synthetic-attunet-ce has 1 finished seeds; a spread needs at least 2"):
        row_seeds.main(["--runs", str(tmp_path), "--groups", "t61"])
    with pytest.raises(SystemExit, match="no run folders in"):
        row_seeds.main(["--runs", str(tmp_path), "--groups", "ablation"])
