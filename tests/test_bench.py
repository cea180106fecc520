"Tests of the loss cost benchmark `pat.bench`: helpers, memory measurement, and a small end-to-end run."
import json

import pandas as pd
import pytest
import torch

from pat import bench


def test_summarize_ratios_per_repeat():
    raw = pd.DataFrame(dict(repeat=[0, 0, 1, 1, 2, 2], name=["ce_torch", "x"] * 3, seconds=[1.0, 1.2, 2.0, 2.2, 1.0, 3.0]))
    s = bench.summarize(raw).set_index("name")
    assert s.loc["x", "time_ratio_min"] == pytest.approx(1.1)
    assert s.loc["x", "time_ratio_median"] == pytest.approx(1.2)
    assert s.loc["x", "time_ratio_max"] == pytest.approx(3.0)
    assert s.loc["x", "time_ms_median"] == pytest.approx(2200.0)


def test_interleaving_rotates_order():
    seen = []
    fns = {n: (lambda n: (lambda: seen.append(n)))(n) for n in "abc"}
    raw = bench.time_interleaved(fns, {n: () for n in "abc"}, repeats=3, warmup=0)
    assert seen == list("abcbcacab") and raw.name.tolist() == seen


def test_every_loss_runs():
    x, y = bench.synthetic_batch(2, 5, 8, 8)
    for name in bench.LOSS_NAMES:
        bench.run_once(bench.make_loss(name, 5), x, y)
        assert x.grad is None                 # dropped after the call


def test_markdown_table():
    md = bench.to_markdown(pd.DataFrame(dict(a=["x"], b=[1.23456])))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| x | 1.23 |"]


def test_peak_rss_of_a_known_allocation():
    keep = []
    peak, method = bench.peak_rss_bytes(lambda: keep.append(torch.ones(16, 2**20)))     # 64 MiB kept
    if method != "VmHWM-VmRSS": pytest.skip("high-water mark cannot be reset here")
    assert 60 * 2**20 < peak < 72 * 2**20


def test_memory_subprocess_fused_below_ce():
    "In a fresh subprocess: CE's fwd+bwd holds ~3 logits-sizes at its peak, fused PAT ~1.3."
    rows = bench.memory_in_subprocess(dict(losses=["ce_torch", "pat_fused", "pat_reference"],
                                           shapes={"c": (4, 20, 64, 128)}, train=None, threads=1))
    peak = {r["name"]: r["peak_bytes"] / (4 * 20 * 64 * 128 * 4) for r in rows}
    if rows[0]["memory_method"] != "VmHWM-VmRSS": pytest.skip("high-water mark cannot be reset here")
    assert 2.5 < peak["ce_torch"] < 3.6, peak
    assert peak["pat_fused"] < 1.7, peak
    assert peak["pat_fused"] < peak["pat_reference"], peak


def test_run_bench_writes_tables_and_figure(tmp_path):
    "A trimmed --quick run (three losses, two repeats) writes every table and the figure."
    res = bench.run_bench(tmp_path / "bench", tmp_path / "fig6_3.png", quick=True, repeats=2, devices=["cpu"],
                          names=("ce_torch", "pat_fused", "pat_reference"), log=lambda *a: None)
    for f in ["table5_2.csv", "table5_2.md", "fused_vs_reference.csv", "fused_vs_reference.md", "scaling.csv",
              "scaling.md", "train_step.csv", "train_step.md", "raw_times.csv", "env.json"]:
        assert (tmp_path / "bench" / f).stat().st_size > 0, f
    assert (tmp_path / "fig6_3.png").stat().st_size > 10_000
    t = pd.read_csv(tmp_path / "bench" / "table5_2.csv")
    assert set(t.dataset) == set(bench.QUICK_SHAPES) and set(t.loss) == {"ce_torch", "pat_fused", "pat_reference"}
    assert (t[t.loss == "ce_torch"].time_ratio_median == 1).all() and t.peak_mb.notna().all()
    assert len(res["fused_vs_reference"]) == 3
    assert json.loads((tmp_path / "bench" / "env.json").read_text())["torch_threads"] == 1


def test_figure_shows_one_bar_per_distinct_computation():
    "On CPU PATLoss runs the fused code (one bar for both); on CUDA the Triton kernels, so the fused torch code is a bar of its own."
    from pat.bench import LOSS_NAMES, figure_names
    cpu, cuda = figure_names(list(LOSS_NAMES), "cpu"), figure_names(list(LOSS_NAMES), "cuda")
    assert "pat_fused" not in cpu and cpu["pat"] == "pat (fused)" and cpu["ce_torch"] == "F.cross_entropy"
    assert cuda["pat"] == "pat" and cuda["pat_fused"] == "pat (fused torch)"   # on CUDA every loss runs the kernels
    assert len(set(cpu.values())) == len(cpu) == len(LOSS_NAMES) - 1


def test_target_check_names_each_loss_and_its_limit():
    "Issue 14's targets: every loss within 1.25x CE in time and memory; PAT on CUDA within 1.0x in time."
    import pandas as pd
    from pat.bench import target_check
    rows = [dict(device=d, dataset="CityScapes", shape="[4,20,256,512]", loss=l, time_ratio_median=t, time_ratio_min=t,
                 time_ratio_max=t, mem_ratio=m) for d, l, t, m in [("cuda", "pat", 1.1, 0.5), ("cpu", "pat", 1.1, 0.5),
                                                                     ("cuda", "focal", 1.2, 1.3), ("cuda", "pat_reference", 3.0, 2.0)]]
    lines = target_check(pd.DataFrame(rows)).strip().splitlines()
    assert len(lines) == 3                                              # the registry's losses only
    assert "cuda" in lines[0] and "**pat**" in lines[0] and "NOT within 1.0x time" in lines[0]
    assert "cpu" in lines[1] and "within 1.25x time" in lines[1] and "NOT" not in lines[1]
    assert "**focal**" in lines[2] and "NOT within" in lines[2]        # memory 1.3x over 1.25x
