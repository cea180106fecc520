"""The DVC pipeline end to end on the `ci` profile, resuming a killed run, early failure on bad settings, and the
committed results of the default profile: made by the committed code, and quoted right by README.

These tests copy the repository's tracked files to a temporary folder and run `dvc` there, so the
working tree is never touched. They take a few minutes on 2 CPU cores. The two about the committed results read
the last commit (HEAD), not the working tree, which may hold another profile's params.yaml and results.
"""
import itertools, json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
import yaml
from pat_imports import imports, notebook_code, pat_closure, source_imports

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cmd, cwd, check=True, timeout=900):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    r = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def tracked_files() -> list:
    "The files git tracks in the working tree (paths relative to the root)."
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    return [f for f in files if f and (ROOT / f).is_file()]


def committed_text(path) -> str:
    "A file as the last commit holds it."
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def copy_committed(dst):
    "The last commit's files at `dst`, as a fresh git repository."
    dst.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return as_repository(dst)


def as_repository(dst):
    "`dst` as a fresh git repository whose one commit holds every file in it."
    sh("git init -q && git config user.name t && git config user.email t@t && git add -A && git commit -qm copy", dst)
    return dst


def copy_tracked(dst, files=None):
    "A clean copy of the tracked files (or of `files`, a list of them) at `dst`, as a fresh git repository."
    for f in files or tracked_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    return as_repository(dst)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    "A clean copy of the tracked files, as a fresh git repository, with the `ci` profile active."
    dst = copy_tracked(tmp_path_factory.mktemp("checkout") / "pat")
    sh("python -m pat.pipeline use ci", dst)
    return dst


EXPECTED = ["results/tables/table5_1.md", "results/tables/table6_1.md", "results/tables/table6_2.md",
            "results/tables/table6_3.md", "results/tables/table6_4.md", "results/tables/ablation.md",
            "results/bench/table5_2.md", "results/figures/fig4_5.png", "results/figures/fig6_3.png",
            "results/figures/fig6_3_training.png", "results/figures/predictions/synthetic.png",
            "results/figures/data_synthetic_shares.png", "results/figures/data_synthetic_mask_sizes.png",
            "results/plots/t61_train_loss.csv"]


ALWAYS_CHANGED = ["source@synthetic", "environment"]   # the `ci` profile's stages that run at every repro


def test_repro_writes_every_table_and_figure(checkout):
    """`make repro`'s steps on a fresh clone: the data stages, every seed in one pool (`pack`), then `python -m pat.repro`
    (dvc repro with its stages numbered), which copies the packed seeds out."""
    stages = sh("dvc stage list --name-only", checkout).stdout.split()
    fresh = sh("python -c 'from pat.repro import count_pending; print(len(count_pending()))'", checkout).stdout
    assert int(fresh) == len(stages) - 1 > 20                 # nothing has run: every stage is pending (counted without a dry run)
    # but `profile`, which has no outputs and whose dependencies (profiles/, code) are the committed ones
    sh("dvc repro prepare@synthetic stats@synthetic && python -m pat.train pack", checkout, timeout=1800)
    work = {p.parent.name + "/" + p.parent.parent.name: p.read_bytes() for p in (checkout / "runs" / ".work").glob("*/seed*/metrics.json")}
    r = sh("python -m pat.repro --skip bench", checkout, timeout=1800)      # as `make repro`: every stage but the benchmark
    _check_numbering(r.stdout, [s for s in stages if not s.startswith(("prepare@", "stats@")) and s not in ("bench", "profile")])
    # (`source@synthetic` ran before `pack` too, but runs at every repro, as `environment` does)
    assert re.search(r"(ce|ldam|pat)/(segnet|unet|dlv3p) seeds 0,1: 100%", r.stderr), r.stderr[-2000:]   # the runs' bars reach the terminal
    assert (checkout / "results/tables/table6_1.md").exists() and not (checkout / "results/bench").exists()
    _check_numbering(sh("python -m pat.repro", checkout, timeout=600).stdout, [*ALWAYS_CHANGED, "bench"])   # then the benchmark is left
    # (and the stages that run at every repro)
    missing = [f for f in EXPECTED if not (checkout / f).exists()]
    assert not missing, missing
    t61 = (checkout / "results/tables/table6_1.md").read_text()
    assert "not run" in t61 and "76.14" in t61          # thesis cells beside ours, real datasets marked "not run"
    # each stage copied its packed seeds, trained nothing (same bytes: same timings); runs equal in two tables trained once
    published = list((checkout / "runs").glob("[!.]*/*/seed*/metrics.json"))
    keys = {json.loads(p.read_text())["run_key"] + "/" + p.parent.name for p in published}
    assert len(work) == len(keys) < len(published)
    for p in published:
        m = json.loads(p.read_text())
        assert p.read_bytes() == work[f"{p.parent.name}/{m['run_key']}"], p
    assert not list((checkout / "runs").glob("[!.]*/*/seed*/checkpoint.pt"))
    _check_training_cost(checkout)


def _check_numbering(out, pending):
    "`python -m pat.repro`'s output: the count, then each of the `pending` stages once, numbered 1 to n in order."
    n = len(pending)
    assert f"dvc repro: {n} stages to run or check" in out, out[:2000]
    numbered = re.findall(r"^\[stage (\d+) of (\d+)\] (?:Running stage '([^']+)'|Stage '([^']+)')", out, re.M)
    assert [(int(k), int(of)) for k, of, *_ in numbered] == [(k, n) for k in range(1, n + 1)], numbered
    assert sorted(a or b for *_, a, b in numbered) == sorted(pending)


def _check_training_cost(checkout):
    "Fig. 6.3's numbers: each Table 6.1 loss's step time and peak memory over CE's on the same seed, averaged over seeds."
    import pandas as pd
    cost = pd.read_csv(checkout / "results/tables/fig6_3_training.csv").set_index("loss")
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    runs = {run["loss"]: {s: _metrics(checkout, "t61", key, s) for s in run["seeds"]} for key, run in params["t61"].items()}
    assert set(cost.index) == set(runs) and (cost.reference == "ce").all()
    for loss, seeds in runs.items():
        for metric, col in (("sec_per_step", "time_ratio"), ("peak_memory_mb", "memory_ratio")):
            ratios = [m[metric] / runs["ce"][s][metric] for s, m in seeds.items()]
            assert cost.loc[loss, col] == pytest.approx(sum(ratios) / len(ratios), rel=1e-9), (loss, col)
    assert cost.loc["ce", "time_ratio"] == 1 and cost.loc["ce", "time_ratio_sd"] == 0


def test_second_repro_does_nothing(checkout):
    """A second repro runs only `source@synthetic` and `environment` (DVC cannot see the machine or the libraries, so
    they look at every repro); their outputs are unchanged, so nothing else runs and nothing trains."""
    r = sh("dvc repro", checkout)
    assert re.findall(r"^Running stage '([^']+)'", r.stdout, re.M) == ALWAYS_CHANGED, r.stdout[-2000:]
    _check_numbering(sh("python -m pat.repro", checkout).stdout, ALWAYS_CHANGED)
    assert json.loads(sh("dvc status --json", checkout).stdout) == {s: ["always changed"] for s in ALWAYS_CHANGED}


def test_dvc_metrics_and_plots_show_the_tables(checkout, tmp_path):
    "The tables' numbers are DVC metrics and the figures DVC plots, so dvc metrics/plots/exp compare experiments."
    shown = sh("dvc metrics show --json", checkout).stdout
    for key in ("results/metrics/table6_1.json", "synthetic-segnet-pat", "miou_mean", "miou_tail_mean", "miou_ci", "miou_mid_mean",
                "miou_vs_ce_mean", "miou_tail_vs_ce_ci"): assert key in shown, key
    ours = json.loads((checkout / "results/metrics/table6_1.json").read_text())["t61"]["synthetic-segnet-pat"]
    seeds = [_metrics(checkout, "t61", "synthetic-segnet-pat", s)["miou"] for s in (0, 1)]
    ce = [_metrics(checkout, "t61", "synthetic-segnet-ce", s)["miou"] for s in (0, 1)]
    assert ours["miou_mean"] == pytest.approx(sum(seeds) / 2, abs=1e-4)
    assert ours["miou_vs_ce_mean"] == pytest.approx((seeds[0] - ce[0] + seeds[1] - ce[1]) / 2, abs=1e-4)
    sh(f"dvc plots show -o {tmp_path}/plots", checkout)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "fig4_5.png" in html and "fig6_3.png" in html
    assert '"field": "pat"' in html and '"field": "ldam"' in html        # Table 6.1's training curves, one line per loss


def test_committed_results_are_fresh(tmp_path):
    """The results this repository shows were made by its code: on a copy of the last commit, `dvc status` names no
    tracked file (code, notebooks, params.yaml, and the metrics and plot data git tracks and README quotes) as changed
    since dvc.lock recorded it. The data and the DVC-cached outputs are not in a clone: those may be missing."""
    dst, stale = copy_committed(tmp_path / "pat"), []
    tracked = set(sh("git ls-files -z", dst).stdout.split("\0"))          # the last commit's files
    for stage, changes in json.loads(sh("dvc status --json", dst).stdout).items():
        for change in changes:
            if isinstance(change, str):
                stale += [f"{stage}: {change}"] if change != "always changed" else []
                continue
            stale += [f"{stage}: {path} {what}" for paths in change.values() for path, what in paths.items()
                      if path in tracked or what not in ("deleted", "not in cache")]
    assert not stale, ("dvc.lock and the committed results are stale: `make repro` and `make bench` on a clean clone, then "
                       f"commit dvc.lock, results/metrics and results/plots (and README's numbers). dvc status: {stale[:12]}")


def test_every_stage_depends_on_every_pat_module_it_loads():
    """A stage lists among its deps each pat module its command loads (`python -m pat.x`, and for a notebook stage
    pat.runner and what the notebook imports), directly or through other modules: a change there reruns it.
    `environment` runs at every repro anyway."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        if stage.get("always_changed"): continue
        entry = set(re.findall(r"-m pat\.(\w+)", stage["cmd"]))
        for notebook in re.findall(r"nbs/experiments/\w+\.ipynb", stage["cmd"])[:1]:     # the one it runs, not its copy
            assert notebook in stage["deps"], (name, notebook)
            entry |= source_imports(notebook_code(ROOT / notebook))[2]
        assert entry, name
        loaded = entry.union(*(pat_closure(m) for m in entry))
        missing = sorted(f"pat/{m}.py" for m in loaded if f"pat/{m}.py" not in stage["deps"])
        assert not missing, f"stage {name} loads {missing} without depending on it"


def test_notebook_stages_depend_on_the_paths_they_pass():
    """Each path a table or figure stage passes its notebook (`-p name path`) is among its deps, so data it reads
    (runs, prepared datasets, their statistics) is never undeclared; params reach a stage through `params:`, and
    `results_dir` is where it writes."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    checked = 0
    for name, stage in stages.items():
        if "foreach" in stage or "pat.runner" not in stage["cmd"]: continue
        read = {v for k, v in re.findall(r"-p (\w+) (\S+)", stage["cmd"]) if k not in ("params_file", "results_dir")}
        assert read <= set(stage["deps"]), f"stage {name} reads {sorted(read - set(stage['deps']))} without depending on it"
        checked += 1
    assert checked == 7

def test_a_preparations_working_folders_are_not_data():
    """An interrupted `prepare` leaves `.<dataset>.partial-<key>/` (and, stopped mid-swap, `.<dataset>.old-<pid>/`) in
    data/prepared; .dvcignore keeps them out of the table stages' `data/prepared` dependency, the datasets not."""
    paths = ["data/prepared/.camvid.partial-0123/train_images.npy", "data/prepared/.camvid.old-7", "data/prepared/camvid/meta.json"]
    assert sh(f"dvc check-ignore {' '.join(paths)}", ROOT, check=False).stdout.split() == paths[:2]

def test_an_edited_profile_is_not_up_to_date(tmp_path):
    """A profile edited without `python -m pat.pipeline use` leaves params.yaml as it was: the `profile` stage then
    shows in `dvc status`, and `dvc repro` fails there naming the command, until params.yaml is written again."""
    dst = copy_tracked(tmp_path / "pat")
    f = dst / "profiles" / "default.yaml"
    f.write_text(f.read_text().replace("  iterations: 800\n", "  iterations: 801\n", 1))
    assert "profile" in json.loads(sh("dvc status --json", dst).stdout)
    r = sh("dvc repro profile", dst, check=False)
    assert r.returncode != 0 and "run `python -m pat.pipeline use default`" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    sh("python -m pat.pipeline use default && dvc repro profile", dst)
    assert "profile" not in json.loads(sh("dvc status --json", dst).stdout)


def _readme_table(readme: str, title: str) -> list:
    "The rows (dicts by column, bold removed) of README's first markdown table after the line starting with `title`."
    lines = readme.splitlines()
    after = lines[next(i for i, line in enumerate(lines) if line.startswith(title)) + 1:]
    is_row = lambda line: line.startswith("|")
    block = list(itertools.takewhile(is_row, itertools.dropwhile(lambda line: not is_row(line), after)))
    cells = [[c.strip().replace("**", "") for c in line.strip("|").split("|")] for line in block]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def _readme_paragraph(readme: str, start: str) -> str:
    "README's paragraph that starts with `start`."
    return next(p for p in readme.split("\n\n") if p.startswith(start))


def _quoted(text: str) -> tuple[list, bool]:
    "The numbers of a README cell or phrase such as '+3.91 ± 0.62 *', and whether it is starred."
    return [float(v) for v in re.findall(r"[-+]?\d+\.\d+", text)], text.rstrip().endswith("*")


def test_readme_quotes_the_committed_metrics():
    """README's results of the default profile are those of results/metrics (which `test_committed_results_are_fresh`
    ties to the code), to the 2 decimals it prints: Table 6.1, its class-group table with the differences to CE (and
    their stars), the ablation's table and its differences to CE, Tables 6.2 and 6.3's single runs. (The prose's
    rounded numbers are not checked.)"""
    readme = committed_text("README.md")               # the last commit's: the working tree may hold another profile's
    metrics = {t: json.loads(committed_text(f"results/metrics/{t}.json")) for t in ("table6_1", "table6_2", "table6_3", "ablation")}
    t61, ablation = metrics["table6_1"]["t61"], metrics["ablation"]["ablation"]
    def of(group, name): return next(m for key, m in group.items() if key.endswith(f"-{name}"))   # <dataset>-<model>-<name>
    def same(text, numbers, starred=False):     # 2 printed decimals of numbers kept to 4
        printed, star = _quoted(text)
        return star == starred and len(printed) == len(numbers) and all(abs(p - n) <= 0.0051 for p, n in zip(printed, numbers))
    def ci(m, metric): return [m[f"{metric}_mean"], m[f"{metric}_ci"]]
    def vs_ce(m, metric): return [m[f"{metric}_vs_ce_mean"], m[f"{metric}_vs_ce_ci"]]
    def starred(m, metric): return abs(m[f"{metric}_vs_ce_mean"]) > m[f"{metric}_vs_ce_ci"]
    columns = {"mIoU %": "miou", "Pix Acc %": "pixel_acc", "Dice Err": "dice_error"}
    groups = {"mIoU %": "miou", "head mIoU": "miou_head", "mid mIoU": "miou_mid", "tail mIoU": "miou_tail"}
    rows = _readme_table(readme, "**Table 6.1** (")
    assert len(rows) == len(t61)
    assert all(same(row[c], ci(of(t61, row["loss"]), g)) for row in rows for c, g in columns.items()), rows
    rows = _readme_table(readme, "**Table 6.1, class groups")
    assert len(rows) == len(t61)
    for row in rows:
        m = of(t61, row["loss"])
        assert all(same(row[c], ci(m, g)) for c, g in groups.items()), row
        for c, g in (("Δ mIoU % vs ce", "miou"), ("Δ tail mIoU vs ce", "miou_tail")):
            assert row[c] == "(reference)" if row["loss"] == "ce" else same(row[c], vs_ce(m, g), starred(m, g)), (row, c)
    rows = _readme_table(readme, "**PAT ablation**")
    assert len(rows) == len(ablation)
    assert all(same(row[c], ci(of(ablation, row["variant"]), g)) for row in rows for c, g in (columns | groups).items()), rows
    against = [p.strip() for p in _readme_paragraph(readme, "Against CE on the same seed").split(":", 1)[1].split(",")]
    labels = {"mask-only": "pat-mask-only", "weight-only": "pat-weight-only", "PAT": "pat", "curve of Table 5.1": "pat-curve-table51"}
    assert len(against) == len(ablation) - 1, against
    for phrase in against:
        label = next(label for label in labels if phrase.startswith(label))
        assert same(phrase[len(label):], vs_ce(of(ablation, labels[label]), "miou")), phrase
    names = {"ce": "CE", "focal": "focal", "cb": "CB", "cbfocal": "CB-focal", "bms": "BMS", "ldam": "LDAM", "blv": "BLV", "pat": "PAT"}
    t62 = _readme_paragraph(readme, "**Table 6.2**")
    for key, m in metrics["table6_2"]["t62"].items():
        quoted = re.search(rf"\b{names[key.rsplit('-', 1)[1]]} (\d+\.\d+)\b", t62)
        assert quoted and same(quoted[1], [m["miou_mean"]]), (key, m["miou_mean"], t62)
    t63 = _readme_paragraph(readme, "**Table 6.3**")
    for key, m in metrics["table6_3"]["t63"].items():
        quoted = re.search(rf"(\d+\.\d+) \((?:T = )?{key.rsplit('-T', 1)[1]}\)", t63)
        assert quoted and same(quoted[1], [m["miou_mean"]]), (key, m["miou_mean"], t63)


def _ran(output, train=False):
    "The stages a dvc command ran (only the training stages with `train`)."
    return {s for s in re.findall(r"Running stage '([^']+)'", output) if not train or s.startswith("train_")}


def _train_stages(checkout, keep=lambda run: True):
    from pat.pipeline import GROUPS, load_params
    params = load_params(checkout / "params.yaml")
    return {f"train_{g}@{k}" for g in GROUPS for k, run in params[g].items() if keep(run)}


def test_exp_run_sets_one_loss_parameter_reruns_only_its_runs_and_restores_them_from_the_run_cache(checkout):
    """`dvc exp run -S losses.pat.T=10` re-runs exactly the PAT runs of every group and the tables built from them;
    setting T back restores those runs from DVC's run-cache: nothing trains, the metrics are the first ones again."""
    sh("dvc repro", checkout, timeout=1800)
    pat_runs = _train_stages(checkout, lambda run: run["loss"] == "pat")
    before = _metrics(checkout, "t61", "synthetic-segnet-pat")
    r = sh("dvc exp run -S losses.pat.T=10", checkout, timeout=1800)
    assert _ran(r.stdout, train=True) == pat_runs, _ran(r.stdout, train=True) ^ pat_runs
    assert _ran(r.stdout) - pat_runs == {*ALWAYS_CHANGED, "table6_1", "table6_2", "table6_3", "table6_4", "ablation", "figures"}
    assert _metrics(checkout, "t61", "synthetic-segnet-pat")["config"]["loss_params"] == {"T": 10}
    assert _metrics(checkout, "t63", "synthetic-segnet-pat-T5")["config"]["loss_params"] == {"T": 5}     # its own T
    shown = sh("dvc exp show --csv", checkout).stdout
    assert "losses.pat.T" in shown and "t61.synthetic-segnet-pat.miou_mean" in shown
    r = sh("dvc exp run -S losses.pat.T=20", checkout, timeout=1800)
    assert not _ran(r.stdout, train=True), _ran(r.stdout, train=True)
    assert pat_runs <= set(re.findall(r"Stage '([^']+)' is cached - skipping run, checking out outputs", r.stdout))
    assert _metrics(checkout, "t61", "synthetic-segnet-pat") == before


def test_two_workers_split_the_runs_over_a_shared_remote_and_a_third_clone_trains_nothing(checkout, tmp_path):
    """Scale-out: two clones reproduce disjoint shares of the training stages at the same time and push outputs and
    run-cache to a shared (local-folder) remote; a third clone restores every run from it without training, and its
    tables equal the single-machine repro's."""
    sh("dvc repro", checkout, timeout=1800)                        # the single-machine reference
    origin = tmp_path / "origin"
    sh(f"git clone -q {checkout} {origin}", tmp_path)
    (origin / "params.yaml").write_text((checkout / "params.yaml").read_text())      # the ci profile
    sh(f"dvc remote add -d shared {tmp_path / 'remote'} && git add -A && git commit -qm 'ci profile, shared remote'", origin)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    workers = []
    for k in (1, 2):
        w = tmp_path / f"worker{k}"
        sh(f"git clone -q {origin} {w}", tmp_path)
        stages = sh(f"python -m pat.train stages --share {k}/2", w).stdout.split()
        workers.append((stages, subprocess.Popen(f"dvc repro --pull {' '.join(stages)} && dvc push --run-cache", cwd=w, shell=True,
                                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    trained = []
    for stages, p in workers:
        out = p.communicate(timeout=1800)[0]
        assert p.returncode == 0, out[-3000:]
        trained.append(_ran(out, train=True))
        assert trained[-1] == set(stages), out[-3000:]
    every = _train_stages(checkout)
    assert trained[0] and trained[1] and not trained[0] & trained[1] and trained[0] | trained[1] == every
    assembler = tmp_path / "assembler"
    sh(f"git clone -q {origin} {assembler}", tmp_path)
    r = sh("dvc repro --pull", assembler, timeout=1800)
    assert not _ran(r.stdout, train=True), _ran(r.stdout, train=True)
    assert every <= set(re.findall(r"Stage '([^']+)' is cached - skipping run, checking out outputs", r.stdout))
    for table in sorted((checkout / "results" / "tables").glob("*.md")):
        assert (assembler / "results" / "tables" / table.name).read_text() == table.read_text(), table.name


def test_a_run_without_prediction_figures(checkout, tmp_path):
    "train.n_predictions: 0 writes no predictions.png, and the training notebook still finishes (it failed showing the missing figure)."
    if not (checkout / "data/prepared/synthetic/meta.json").exists(): sh("dvc repro prepare@synthetic stats@synthetic", checkout)
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    params["train"].update(n_predictions=0, iterations=2)
    f, out, key = tmp_path / "params.yaml", tmp_path / "run", next(iter(params["t61"]))
    f.write_text(yaml.safe_dump(params))
    sh(f"python -m pat.runner nbs/experiments/train_run.ipynb {out}/train_run.ipynb -p params_file {f} -p group t61 -p key {key} "
       f"-p out_dir {out} -p data_root data/prepared -p stats_root data/stats", checkout)
    seed = out / f"seed{params['t61'][key]['seeds'][0]}"
    assert (out / "train_run.ipynb").exists() and (seed / "metrics.json").exists() and not (seed / "predictions.png").exists()


def _train_cmd(out, data_root, stats_root, stop=""):
    return (f"python -c \"from pat.train import train_run; train_run(dict(dataset='synthetic', model='segnet', "
            f"model_options={{'width': 0.125}}, loss='blv', loss_params={{'sigma': 0.5}}, iterations=12, batch_size=4, "
            f"checkpoint_every=3, eval_batch_size=8), 0, '{out}', '{data_root}', '{stats_root}', progress=False)\"")


def test_killed_run_resumes_to_the_same_metrics(checkout, tmp_path):
    data, stats = checkout / "data/prepared", checkout / "data/stats"
    if not (data / "synthetic/meta.json").exists(): sh("dvc repro prepare@synthetic stats@synthetic", checkout)
    sh(_train_cmd(tmp_path / "straight", data, stats), checkout)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    out = tmp_path / "killed"
    p = subprocess.Popen(_train_cmd(out, data, stats), cwd=checkout, shell=True, env=env, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint.pt").exists() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed"
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert not (out / "metrics.json").exists()
    sh(_train_cmd(out, data, stats), checkout)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "straight", out))
    assert b["steps"] == 12
    for k in ("miou", "pixel_acc", "dice_error", "iou", "confusion_matrix"):
        assert a[k] == b[k], k


@pytest.mark.parametrize("param, value, message", [
    ("loss", "dice", "run.loss: expected one of ce, focal, cb, cbfocal, bms, ldam, blv, pat, got 'dice'"),
    ("model", "resnet", "run.model: expected one of segnet, unet"),
    ("loss_params", "{T: 0}", "run.loss_params.T: PAT parameter `T` must be"),
    ("iterations", '"3"', "run.iterations: expected an integer >= 1, got '3' (str)"),
    ("dataset", "nyuv2", "dataset 'nyuv2' (parameter `dataset`) is not prepared"),
])
def test_invalid_settings_fail_before_training(checkout, tmp_path, param, value, message):
    out = tmp_path / "run"
    r = sh(f"python -m pat.runner nbs/experiments/train_run.ipynb {out}/train_run.ipynb -p {param} '{value}' "
           f"-p out_dir {out} -p data_root data/prepared -p stats_root data/stats", checkout, check=False)
    assert r.returncode != 0
    assert message in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nbs/experiments/train_run.ipynb failed: "), r.stderr   # one line, not a traceback
    assert not (out / "seed0" / "checkpoint.pt").exists() and not (out / "train_run.ipynb").exists()
    assert "Traceback" in (out / "train_run.failed.ipynb").read_text() or "ename" in (out / "train_run.failed.ipynb").read_text()


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml") if p.stem != "base"))
def test_every_profile_gives_params_dvc_can_find(profile):
    "Each run stage names its params as `group.key`, `models.<model>` and `losses.<loss>`; DVC splits them at dots, so each lookup must land."
    from pat.pipeline import expand_profile, load_profile
    params = expand_profile(load_profile(profile, ROOT / "profiles"))
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    def lookup(path):
        node = params
        for part in path.split("."): node = node[part]
        return node
    for stage in stages.values():
        if "foreach" not in stage: continue
        group = stage["foreach"].strip("${}")
        if not isinstance(params.get(group), dict): continue      # e.g. `data.enabled`, a list of datasets
        assert stage["do"]["params"] == [f"{group}.${{key}}", "train", "models.${item.model}", "losses.${item.loss}"]
        for key, run in params[group].items():
            assert lookup(f"{group}.{key}")["seeds"], f"{profile}: {group}.{key} has no seeds"
            assert isinstance(lookup(f"models.{run['model']}"), dict) and isinstance(lookup(f"losses.{run['loss']}"), dict)


def test_dataset_defaults_have_one_home():
    """pat.prepared.DEFAULTS is the one home of the dataset defaults: profiles/base.yaml holds none of them (a copy
    there could drift), and every profile's `data` is DEFAULTS with only what that profile's file changes."""
    from pat.pipeline import deep_merge, load_profile, profile_names
    from pat.prepared import DEFAULTS
    base = yaml.safe_load((ROOT / "profiles" / "base.yaml").read_text())
    assert "data" not in base, "profiles/base.yaml: dataset settings belong in pat.prepared.DEFAULTS (nbs/02a_prepared.ipynb)"
    for name in profile_names(ROOT / "profiles"):
        own = yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text()).get("data") or {}
        data = load_profile(name, ROOT / "profiles")["data"]
        assert {d: data[d] for d in DEFAULTS} == {d: deep_merge(DEFAULTS[d], own.get(d, {})) for d in DEFAULTS}, name
    assert load_profile("ci", ROOT / "profiles")["data"]["synthetic"]["splits"] == {"train": 16, "val": 4, "test": 8}


def test_training_stages_and_run_key_cover_every_module_a_run_executes():
    "A change to any module a training run imports reruns its stage (dvc.yaml deps) and retrains it (the run key's code hash)."
    from pat.train import CODE_FILES
    used = pat_closure("train") | {"train"}
    assert "triton_losses" in used                                 # the CUDA kernels, imported inside SegLoss.kernel_loss
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train_t61"]["do"]["deps"]
    assert {f"pat/{m}.py" for m in used} <= set(deps), sorted({f"pat/{m}.py" for m in used} - set(deps))
    numeric = pat_closure("losses") | pat_closure("models") | pat_closure("data") | {"train", "losses", "models", "data"}
    assert {f"{m}.py" for m in numeric - {"schema", "files", "pipeline"}} <= set(CODE_FILES)


def test_data_stages_depend_on_every_data_module():
    "`python -m pat.data` imports pat.prepared, pat.synthetic and pat.sources: a change to any of them reruns source, prepare and stats."
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    data = {f"pat/{m}.py" for m in pat_closure("data") - {"schema", "files"}} | {"pat/data.py"}
    assert {"pat/prepared.py", "pat/synthetic.py", "pat/sources.py"} <= data
    for name in ("source", "prepare", "stats"):
        assert data <= set(stages[name]["do"]["deps"]), (name, sorted(data - set(stages[name]["do"]["deps"])))
    assert "pat/synthetic.py" in stages["prepare"]["do"]["deps"]                           # the generator of synthetic data
    assert stages["source"]["foreach"] == stages["prepare"]["foreach"] == "${data.enabled}"  # every dataset has its manifest
    assert "data/sources/${item}.json" in stages["prepare"]["do"]["deps"]                    # (raw files and libraries)


def test_params_check_key_covers_the_modules_it_checks_with():
    "The params check's cache key (pat.files.CHECK_CODE) holds pat.pipeline and every pat module it imports that checks settings."
    from pat.files import CHECK_CODE
    assert {f"{m}.py" for m in imports("pipeline")[2] - {"files"}} | {"pipeline.py"} <= set(CHECK_CODE)


def _one_line_error(r, *needles):
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("error"), r.stderr
    for n in needles: assert n in lines[0], lines[0]


def test_bad_params_fail_at_once_with_one_line(checkout, tmp_path):
    "A profile typo, a wrong type and a missing params file: one line naming the file and the key, before any work."
    prof = checkout / "profiles" / "typo.yaml"
    prof.write_text((checkout / "profiles" / "ci.yaml").read_text().replace("train:", "trian:"))
    try:
        _one_line_error(sh("python -m pat.pipeline use typo", checkout, check=False),
                        "profiles/typo.yaml: trian: unknown key; did you mean 'train'?")
        listed = sh("python -m pat.pipeline list", checkout).stdout      # one broken profile does not break the list
        assert "typo: (broken) profiles/typo.yaml: trian: unknown key" in listed and "\nci: Smoke test" in listed
    finally: prof.unlink()
    bad = tmp_path / "params.yaml"
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    run = next(iter(params["t61"]))
    params["t61"][run]["lr"] = "abc"
    bad.write_text(yaml.safe_dump(params))
    _one_line_error(sh(f"python -m pat.runner nbs/experiments/table6_1.ipynb {tmp_path}/t.ipynb -p params_file {bad}", checkout, check=False),
                    f"{bad}: t61.{run}.lr: expected a number > 0, got 'abc' (str)")
    _one_line_error(sh(f"python -m pat.bench --params {tmp_path}/params.camvdi.yaml", checkout, check=False),
                    f"{tmp_path}/params.camvdi.yaml: file not found")
    assert not (tmp_path / "t.ipynb").exists()


def _set(checkout, edit):
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    edit(params)
    (checkout / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _metrics(checkout, group, key, seed=0):
    return json.loads((checkout / "runs" / group / key / f"seed{seed}" / "metrics.json").read_text())


def test_data_or_code_change_retrains_instead_of_reusing_old_metrics(checkout):
    "The two stale-metrics defects of issue 10: a changed dataset seed and a changed loss give retrained, fresh metrics."
    sh("dvc repro", checkout, timeout=1800)
    key = "synthetic-segnet-ce"
    before = _metrics(checkout, "t61", key)
    _set(checkout, lambda p: p["data"]["synthetic"].update(seed=7))
    sh(f"dvc repro train_t61@{key}", checkout)
    after = _metrics(checkout, "t61", key)
    assert after["data_hash"] != before["data_hash"] and after["confusion_matrix"] != before["confusion_matrix"]
    assert f"train_t61@{key}" not in json.loads(sh("dvc status --json", checkout).stdout)
    losses = checkout / "pat" / "losses.py"
    original = losses.read_text()
    losses.write_text(original + "\n# a changed line of code\n")
    try:
        sh(f"dvc repro train_t61@{key}", checkout)
        assert _metrics(checkout, "t61", key)["code_hash"] != after["code_hash"]
    finally:
        losses.write_text(original)
    _set(checkout, lambda p: p["data"]["synthetic"].update(seed=0))
    sh("dvc repro", checkout, timeout=1800)


def test_an_environment_change_retrains(checkout, tmp_path):
    "Another version of a numeric library (here a stand-in timm 9.9.9 first on the path): the `environment` stage's file changes and DVC retrains."
    sh("dvc repro", checkout, timeout=1800)
    key, before = "synthetic-segnet-ce", _metrics(checkout, "t61", "synthetic-segnet-ce")
    fake = tmp_path / "site" / "timm-9.9.9.dist-info"
    fake.mkdir(parents=True); (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: timm\nVersion: 9.9.9\n")
    path = f"PYTHONPATH={fake.parent}:$PYTHONPATH"
    assert f"train_t61@{key}" not in json.loads(sh(f"{path} dvc status --json", checkout).stdout)   # DVC alone cannot see it
    r = sh(f"{path} dvc repro train_t61@{key}", checkout)
    assert json.loads((checkout / "data/environment.json").read_text())["auto"]["timm"] == "9.9.9"
    assert f"Running stage 'train_t61@{key}'" in r.stdout, r.stdout[-2000:]
    after = _metrics(checkout, "t61", key)
    assert after["environment_hash"] != before["environment_hash"] and after["run_key"] != before["run_key"]
    r = sh("dvc repro", checkout, timeout=1800)                 # back: the first environment's runs, from DVC's run-cache
    assert _metrics(checkout, "t61", key)["run_key"] == before["run_key"] and f"train_t61@{key}" in r.stdout


def test_tables_hold_exactly_the_runs_and_seeds_of_the_params(checkout):
    "The stale-seeds defect: fewer seeds or fewer losses leave no old run in the tables."
    sh("dvc repro", checkout, timeout=1800)
    _set(checkout, lambda p: p["t61"]["synthetic-segnet-pat"].update(seeds=[0], iterations=2))
    sh("dvc repro table6_1", checkout)
    t61 = (checkout / "results/tables/table6_1.md").read_text()
    assert "seeds 0, 1 each except synthetic-segnet-pat: seeds 0." in t61
    pat_row = next(l for l in t61.splitlines() if l.startswith("| pat "))
    assert "±" not in pat_row.split("|")[2]                                 # one seed: a mean, no interval
    assert _metrics(checkout, "t61", "synthetic-segnet-pat")["miou"] == pytest.approx(float(pat_row.split("|")[2].strip(" *")), abs=0.006)
    _set(checkout, lambda p: p["t61"].pop("synthetic-segnet-ldam"))
    sh("dvc repro table6_1", checkout)
    assert "| ldam " not in (checkout / "results/tables/table6_1.md").read_text()
    sh("python -m pat.pipeline use ci && dvc repro", checkout, timeout=1800)


def test_an_edited_raw_label_reruns_prepare(checkout, tmp_path):
    "Raw sources are watched: rewriting one CamVid label PNG makes `prepare@camvid` run again; an unchanged source does not."
    from test_data import camvid_mask, make_camvid, png
    src = make_camvid(tmp_path / "CamVid")
    def enable(p):
        p["data"]["enabled"] = ["synthetic", "camvid"]
        p["data"]["camvid"]["path"] = str(src)
    _set(checkout, enable)
    try:
        ran = lambda: set(re.findall(r"Running stage '([^']+)'", sh("dvc repro prepare@camvid", checkout).stdout))
        assert ran() == {"source@camvid", "prepare@camvid"}
        assert ran() == {"source@camvid"}                                   # rescanned, unchanged: not prepared again
        png(src / "trainannot" / "train0.png", camvid_mask(1))
        assert ran() == {"source@camvid", "prepare@camvid"}
    finally:
        sh("python -m pat.pipeline use ci", checkout)


def test_another_library_version_prepares_again(checkout, tmp_path):
    """Another version of a library that decodes, generates or resizes the images (here a stand-in Pillow 9.9.9 first
    on the path): the source manifest changes and DVC prepares the data again, which DVC alone cannot see."""
    ran = lambda env="": sh(f"{env} dvc repro prepare@synthetic", checkout).stdout
    ran()
    assert re.findall(r"Running stage '([^']+)'", ran()) == ["source@synthetic"]            # same libraries: not prepared again
    fake = tmp_path / "site" / "pillow-9.9.9.dist-info"
    fake.mkdir(parents=True); (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: pillow\nVersion: 9.9.9\n")
    out = ran(f"PYTHONPATH={fake.parent}:$PYTHONPATH")
    assert re.findall(r"Running stage '([^']+)'", out) == ["source@synthetic", "prepare@synthetic"], out[-2000:]
    assert json.loads((checkout / "data/sources/synthetic.json").read_text())["libraries"]["pillow"] == "9.9.9"
    assert "prepare@synthetic" in ran()                       # back: the first libraries' data, from DVC's run-cache
    assert json.loads(sh("dvc status --json prepare@synthetic", checkout).stdout) == {}        # and up to date


def test_repro_checks_params_before_any_stage(tmp_path, monkeypatch):
    "A typo in params.yaml stops `python -m pat.repro` at once, naming the key, before dvc runs a stage."
    text = (ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("\n  iterations: ", "\n  iteratons: ", 1))
    monkeypatch.chdir(tmp_path)
    import pat.repro
    monkeypatch.setattr(pat.repro, "repro", lambda **kw: pytest.fail("dvc repro ran"))
    with pytest.raises(SystemExit, match=r"^error: params.yaml: train.iteratons: unknown key; did you mean 'iterations'\?$"):
        pat.repro.main([])
