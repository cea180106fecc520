"pat.train beyond the notebook's inline tests: seeds in parallel processes, metrics of a real run, reuse and its key, guards."
import json, math, os, re, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml
from pat.data import write_stats
from pat.files import FolderBusy
from pat.losses import LOSSES
from pat.synthetic import prepare_synthetic
import pat.train as T
from pat.train import train_seeds, train_run, _train_seed, run_config
from tiny import TINY, ctrl_c, entry, params_file, prepare_tiny, run

CFG = dict(dataset="synthetic", model="segnet", model_options={"width": 0.0625}, loss="pat", loss_params={"T": 5},
           iterations=4, batch_size=4, checkpoint_every=2, eval_batch_size=8, n_predictions=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("data"))


def test_parallel_seeds_equal_one_process_per_seed(data, tmp_path):
    "A seed gives the same numbers alone in this process as beside another seed: the thread count is the run's setting."
    par = train_seeds(CFG, [0, 1], tmp_path / "par", data / "prepared", data / "stats", workers=2, progress=False)
    threads = torch.get_num_threads()
    seq = dict(_train_seed((run_config(CFG), s, tmp_path / "seq" / f"seed{s}", data / "prepared", data / "stats", None)) for s in (0, 1))
    assert torch.get_num_threads() == threads                         # train_run restores the caller's thread count
    for s in (0, 1):
        assert par[s]["confusion_matrix"] == seq[s]["confusion_matrix"], s
        assert par[s]["miou"] == seq[s]["miou"] and par[s]["threads"] == 1
    assert par[0]["confusion_matrix"] != par[1]["confusion_matrix"]     # the seeds really differ
    assert (tmp_path / "par" / "seed1" / "metrics.json").exists() and not (tmp_path / "par" / "seed1" / "checkpoint.pt").exists()


def test_metrics_agree_with_the_confusion_matrix(data, tmp_path):
    m = train_seeds(CFG, [0], tmp_path, data / "prepared", data / "stats", workers=1, progress=False)[0]
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (9, 9) and cm.sum() == 8 * 32 * 32              # every test pixel once (no ignore index)
    assert m["pixel_acc"] == pytest.approx(100 * np.trace(cm) / cm.sum())
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert m["iou"] == pytest.approx((100 * iou).tolist(), nan_ok=True)
    assert m["steps"] == 4


def test_workers_must_be_positive(data, tmp_path):
    with pytest.raises(ValueError, match="`workers` must be >= 1, got 0"):
        train_seeds(CFG, [0], tmp_path, data / "prepared", data / "stats", workers=0)


def test_one_progress_bar_for_all_seeds(data, tmp_path, capfd):
    "Workers draw no bars of their own (in a Jupyter kernel each update would become a log message); the parent's counts every step."
    train_seeds(CFG, [0, 1], tmp_path, data / "prepared", data / "stats", workers=2, progress=True)
    err = capfd.readouterr().err
    assert "pat/segnet seeds 0,1" in err and "8/8" in err
    assert "seed 0:" not in err and "seed 1:" not in err
    steps = []      # on_step sees the start and every step
    from pat.train import train_run
    train_run(CFG, 2, tmp_path / "seed2", data / "prepared", data / "stats", progress=False, on_step=steps.append)
    assert steps == [0, 1, 2, 3, 4]


def test_seed_workers_end_dvclive_one_at_a_time(monkeypatch):
    "dvclive's end() removes a file every seed shares (exists, then remove): with the workers' lock held, it waits."
    import threading, time
    import pat.train as T
    lock, ended = threading.Lock(), []
    monkeypatch.setattr(T, "_LIVE_END_LOCK", lock)
    class FakeLive:
        def end(self): ended.append(time.monotonic())
    with lock:
        t = threading.Thread(target=T._end_live, args=(FakeLive(),)); t.start()
        time.sleep(0.2)
        assert ended == []                       # blocked while another seed ends
    t.join(5)
    assert len(ended) == 1


def _mtime(out): return (out / "metrics.json").stat().st_mtime_ns


def test_finished_run_is_reused_only_when_settings_data_and_code_are_unchanged(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)
    assert set(first) >= {"run_key", "config_hash", "data_hash", "code_hash", "environment_hash"}
    stamp = _mtime(out)
    assert train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False) == first and _mtime(out) == stamp
    # other code: trained again
    monkeypatch.setattr(T, "code_hash", lambda: "0" * 16)
    again = train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)
    assert _mtime(out) != stamp and again["code_hash"] == "0" * 16 and again["run_key"] != first["run_key"]
    monkeypatch.undo()
    # another device type or library version: trained again (a CUDA bf16 seed is no CPU result)
    real = T.package_version
    monkeypatch.setattr(T, "package_version", lambda package: "0.0" if package == "torch" else real(package))
    other_env = train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)
    assert other_env["environment_hash"] != first["environment_hash"] and other_env["run_key"] != first["run_key"]
    monkeypatch.undo()
    # other data (the generator's seed): trained again, to other numbers
    other = tmp_path / "other"
    prepare_synthetic({**TINY, "seed": 7}, other / "prepared" / "synthetic")
    write_stats(other / "prepared" / "synthetic", other / "stats", other / "figures")
    train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)
    moved = train_run(CFG, 0, out, other / "prepared", other / "stats", progress=False)
    assert moved["data_hash"] != first["data_hash"] and moved["confusion_matrix"] != first["confusion_matrix"]
    # other settings
    longer = train_run({**CFG, "iterations": 5}, 0, out, other / "prepared", other / "stats", progress=False)
    assert longer["steps"] == 5 and longer["config_hash"] != moved["config_hash"]


# A fixed run and dataset description, and their key parts (since the classes' colours joined data_hash):
# a change here would retrain every finished run.
META = {"name": "synthetic", "sha256": {"train_images.npy": "a" * 64, "train_masks.npy": "b" * 64}, "classes": ["x", "y", "z"],
        "ignore_index": 255, "image_size": [32, 32], "splits": {"train": 16, "val": 4, "test": 8}, "colors": [[0, 0, 0]] * 3}
STATS = {"counts": [100, 10, 1], "groups": {"head": [0], "mid": [1], "tail": [2]}, "shares": [0.9, 0.09, 0.01]}


def test_run_key_of_a_fixed_config_is_pinned(monkeypatch):
    monkeypatch.setattr(T, "code_hash", lambda: "0" * 16)      # the code part changes with any edit of CODE_FILES
    devices = []
    monkeypatch.setattr(T, "environment_hash", lambda device: devices.append(device) or "1" * 16)   # and this one with the machine
    cfg = run_config(CFG)
    assert T.config_hash(cfg) == "e29bb6956dbf295f" and T.data_hash(META, STATS) == "bb70b29e804cd283"
    assert T.run_key(cfg, META, STATS) == {"config_hash": "e29bb6956dbf295f", "data_hash": "bb70b29e804cd283",
                                           "code_hash": "0" * 16, "environment_hash": "1" * 16, "key": "6c513d89a007078f"}
    assert devices == ["auto"]                                   # the run's device setting, resolved by environment_hash
    # the checked settings are the dict they were (metrics.json records it, in this order), and checked once
    assert list(cfg.settings) == ["model_options", "loss_params", "lr", "batch_size", "iterations", "checkpoint_every",
                                  "eval_batch_size", "flip", "n_predictions", "log_every", "device", "threads",
                                  "diverge_factor", "dataset", "model", "loss"]
    assert run_config(cfg) is cfg and dict(cfg) == cfg.settings and T.config_hash(dict(cfg)) == T.config_hash(cfg)
    assert cfg.on("cpu")["device"] == "cpu" and T.config_hash(cfg.on("cpu")) == T.config_hash(cfg) and cfg["device"] == "auto"


def test_a_stage_opens_its_dataset_once(data, tmp_path, monkeypatch):
    "train_seeds reads the dataset's meta and stats once for the run key and every seed (in one process)."
    opened = []
    monkeypatch.setattr(T, "load_stats", lambda p, real=T.load_stats: opened.append(p) or real(p))
    got = train_seeds(CFG, [0, 1], tmp_path / "out", data / "prepared", data / "stats", workers=1, progress=False,
                      work_root=tmp_path / "work")
    assert opened == [data / "stats" / "synthetic" / "stats.json"] and sorted(got) == [0, 1]
    assert got[0]["config"] == run_config(CFG).settings and json.loads((tmp_path / "out" / "seed1" / "metrics.json").read_text())["seed"] == 1


def test_unreadable_metrics_and_checkpoint_name_their_file(data, tmp_path):
    out = tmp_path / "run"; out.mkdir()
    (out / "metrics.json").write_text('{"miou": 3')
    with pytest.raises(ValueError, match=f"{out / 'metrics.json'} is not valid JSON"):
        train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)
    (out / "metrics.json").unlink(); (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RuntimeError, match=f"checkpoint {out / 'checkpoint.pt'} cannot be read"):
        train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)


def test_divergence_stops_the_run_naming_it(data, tmp_path):
    out = tmp_path / "t61" / "synthetic-segnet-ce" / "seed0"
    with pytest.raises(FloatingPointError, match=f"run {out} diverged at step .*diverge_factor=100"):
        train_run({**CFG, "loss": "ce", "loss_params": {}, "lr": 1e6, "iterations": 30}, 0, out, data / "prepared", data / "stats", progress=False)
    assert not (out / "metrics.json").exists()
    # the bound is a setting: null switches it off (the run then ends on a non-finite loss or finishes)
    with pytest.raises(Exception, match="diverge_factor"):
        run_config({**CFG, "diverge_factor": 0.5})


def test_resume_cuts_the_logs_back_to_the_checkpoint(data, tmp_path):
    out, cfg = tmp_path / "run", {**CFG, "log_every": 1, "checkpoint_every": 2, "iterations": 5}
    assert train_run(cfg, 0, out, data / "prepared", data / "stats", progress=False, stop_after=3) == {"stopped_at": 3}
    tsv = out / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv"
    steps = lambda: [int(r.split("\t")[0]) for r in tsv.read_text().splitlines()[1:]]
    assert tsv.read_text().startswith("step\t") and steps() == [1, 2, 3]
    train_run(cfg, 0, out, data / "prepared", data / "stats", progress=False)   # resumes from step 2
    assert steps() == [1, 2, 3, 4, 5]
    # step k logs the rate it trained with, the cosine schedule's value after k - 1 steps (resumed with the scheduler)
    lr = [float(r.split("\t")[1]) for r in (tsv.parent / "lr.tsv").read_text().splitlines()[1:]]
    assert lr == pytest.approx([run_config(cfg)["lr"] * (1 + math.cos(math.pi * k / 5)) / 2 for k in range(5)], rel=1e-6)


def test_blv_resumes_its_noise(data, tmp_path):
    cfg = {**CFG, "loss": "blv", "loss_params": {"sigma": 0.5}, "iterations": 6, "checkpoint_every": 2}
    straight = train_run(cfg, 0, tmp_path / "a", data / "prepared", data / "stats", progress=False)
    train_run(cfg, 0, tmp_path / "b", data / "prepared", data / "stats", progress=False, stop_after=3)
    resumed = train_run(cfg, 0, tmp_path / "b", data / "prepared", data / "stats", progress=False)
    assert resumed["confusion_matrix"] == straight["confusion_matrix"]


def test_seed_workers_die_with_their_parent(data, tmp_path):
    "A killed kernel (here: a killed parent process) leaves no seed worker training."
    script = textwrap.dedent(f"""
        from pat.train import train_seeds
        cfg = dict({CFG!r}, iterations=100000, checkpoint_every=100000)
        train_seeds(cfg, [0, 1], {str(tmp_path)!r}, {str(data / 'prepared')!r}, {str(data / 'stats')!r}, workers=2, progress=False)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    children, deadline = [], time.time() + 120
    while time.time() < deadline and len(children) < 2:
        time.sleep(0.5)
        children = [int(p) for p in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()]
        assert parent.poll() is None, "the parent ended early"
    assert len(children) >= 2, children
    # wait until the workers train (their initializer has run), then kill the parent the hard way
    while time.time() < deadline and not (tmp_path / "seed0" / "dvclive").exists(): time.sleep(0.2)
    parent.send_signal(signal.SIGKILL); parent.wait()
    deadline = time.time() + 30
    alive = children
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [c for c in children if Path(f"/proc/{c}").exists() and "Z" not in Path(f"/proc/{c}/stat").read_text().split()[2]]
    assert not alive, f"seed workers {alive} outlived their parent"


def test_a_second_trainer_of_a_seed_folder_fails_at_once_naming_the_first(data, tmp_path):
    "An orphan still training in a work folder and a restarted stage: the second trainer refuses, naming the first's pid."
    out = tmp_path / "seed0"
    script = textwrap.dedent(f"""
        from pat.train import train_run
        train_run(dict({CFG!r}, iterations=100000, checkpoint_every=100000), 0, {str(out)!r}, {str(data / 'prepared')!r}, {str(data / 'stats')!r}, progress=False)
    """)
    first = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "dvclive").exists(): time.sleep(0.2)   # it holds the folder and trains
    try:
        assert first.poll() is None, "the first trainer ended early"
        with pytest.raises(FolderBusy, match=f"process {first.pid} is training in {out} .*kill {first.pid}"):
            train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)
    finally:
        first.kill(); first.wait()
    m = train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)   # its lock died with it
    assert m["steps"] == CFG["iterations"] and not (out / ".lock").exists()


def test_pack_trains_each_distinct_seed_once_in_disjoint_shares(data, tmp_path):
    """`pack` trains what the params list and is not finished, once per distinct run and seed; shares split the runs;
    `train_seeds` with a work root then only copies the finished seeds out, without their checkpoints."""
    from pat.pipeline import load_params
    from pat.train import pack, run_share, seed_dir, share, share_seeds, unfinished
    pf = params_file(tmp_path / "params.yaml", {"synthetic-segnet-pat": entry("pat"), "synthetic-segnet-ce": entry("ce")},
                     t63={"synthetic-segnet-pat-T9": entry("pat", loss_params={"T": 9})})
    params = load_params(pf)
    kw = dict(work_root=tmp_path / "work", data_root=data / "prepared", stats_root=data / "stats")
    pending = lambda **k: [job for job, _ in unfinished(share_seeds(params, **kw, **k))]
    jobs = pending()        # t61's runs are also t62's and the ablation's: each seed listed once
    assert [(j[0]["loss"], j[0]["loss_params"].get("T"), j[1]) for j in jobs] == [
        ("pat", 5, 0), ("pat", 5, 1), ("ce", None, 0), ("ce", None, 1), ("pat", 9, 0), ("pat", 9, 1)]
    # distinct runs are dealt in turn; a run's stages in every group fall in the same share
    assert run_share(params, shard=(1, 2)) == [("t61", "synthetic-segnet-pat"), ("t62", "synthetic-segnet-pat"),
                                              ("t63", "synthetic-segnet-pat-T9"), ("ablation", "synthetic-segnet-pat")]
    assert run_share(params, shard=(2, 2)) == [(g, "synthetic-segnet-ce") for g in ("t61", "t62", "ablation")]
    with pytest.raises(ValueError, match="share 3/2"): share([], 3, 2)
    res = pack(pf, shard=(2, 2), progress=False, **kw)
    assert res["jobs"] == 2 and res["steps"] == 4 and res["steps_per_s"] > 0
    assert pending(shard=(2, 2)) == []
    assert [j[2] for j in pending()] == [j[2] for j in pending(shard=(1, 2))] == [j[2] for j in jobs if j[0]["loss"] == "pat"]
    # a packed seed is exactly what train_run gives
    ce = params["t62"]["synthetic-segnet-ce"]
    alone = train_run(ce, 0, tmp_path / "alone", data / "prepared", data / "stats", progress=False)
    work = seed_dir(kw["work_root"], alone["run_key"], 0)
    assert json.loads((work / "metrics.json").read_text())["confusion_matrix"] == alone["confusion_matrix"]
    # a stage's train_seeds copies it out, results only, and trains nothing (the work folder is untouched)
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*")}
    out = tmp_path / "runs" / "t62" / "synthetic-segnet-ce"
    got = train_seeds(ce, [0, 1], out, data / "prepared", data / "stats", workers=1, progress=False, work_root=kw["work_root"])
    assert got[0]["confusion_matrix"] == alone["confusion_matrix"] and {p: p.stat().st_mtime_ns for p in work.rglob("*")} == before
    assert sorted(str(p.relative_to(out / "seed0")) for p in (out / "seed0").rglob("*")) == sorted(str(p.relative_to(work)) for p in before)
    assert "metrics.json" in os.listdir(out / "seed1") and not list(out.rglob("checkpoint.pt"))
    assert pack(pf, progress=False, **kw)["jobs"] == 4                # the other share: PAT with T=5 and T=9
    assert pack(pf, progress=False, **kw) == {"jobs": 0}


def test_a_resumed_pack_shows_its_overall_progress(data, tmp_path, monkeypatch, capfd):
    """`pack` run again after an interruption: its one bar covers every seed of the params, a finished seed's steps
    and a checkpoint's counted done from the start as tqdm's `initial` (its rate counts only the steps trained now)."""
    from pat.pipeline import load_params
    from pat.train import pack, seed_dir
    pf = params_file(tmp_path / "params.yaml", {"synthetic-segnet-ce": entry("ce", seeds=(0, 1, 2))}, iterations=4)
    cfg, work = run_config(load_params(pf)["t61"]["synthetic-segnet-ce"]), tmp_path / "work"
    key = T.open_data("synthetic", data / "prepared", data / "stats").key(cfg)["key"]
    train_run(cfg, 0, seed_dir(work, key, 0), data / "prepared", data / "stats", progress=False)                # finished: 4 steps
    train_run(cfg, 1, seed_dir(work, key, 1), data / "prepared", data / "stats", progress=False, stop_after=3)  # resumes at step 2
    bars, real = [], T.progress_bar
    monkeypatch.setattr(T, "progress_bar", lambda **kw: bars.append(real(**kw)) or bars[-1])
    capfd.readouterr()
    res = pack(pf, work_root=work, data_root=data / "prepared", stats_root=data / "stats")
    (bar,) = bars
    assert (bar.total, bar.initial, bar.n) == (12, 6, 12)            # 3 seeds of 4 steps; 4 finished and 2 checkpointed
    counts = [int(n) for n in re.findall(r"(\d+)/12 \[", capfd.readouterr().err)]
    assert counts[0] == 6 and counts[-1] == 12 and counts == sorted(counts), counts
    assert "pack: 2 of 3 seeds" in bar.desc
    assert (res["jobs"], res["steps"]) == (2, 6)                     # seed 1's last 2 steps and seed 2's 4: trained now


def test_a_resumed_stage_bar_starts_at_its_checkpoints(data, tmp_path, monkeypatch):
    "`train_seeds`' one bar over its seeds (a DVC stage run again) starts at the steps their checkpoints hold."
    train_run(CFG, 0, tmp_path / "seed0", data / "prepared", data / "stats", progress=False, stop_after=3)   # resumes at step 2
    bars, real = [], T.progress_bar
    monkeypatch.setattr(T, "progress_bar", lambda **kw: bars.append(real(**kw)) or bars[-1])
    train_seeds(CFG, [0, 1], tmp_path, data / "prepared", data / "stats", workers=2)
    assert [(b.total, b.initial, b.n) for b in bars] == [(8, 2, 8)]


def test_ctrl_c_stops_pack_with_one_line_and_the_same_command_resumes(data, tmp_path):
    """Ctrl-C in a terminal reaches `pack` and its workers: it stops at once with one line and status 130, no
    traceback and no worker training on; the seeds keep their checkpoints, and `pack` run again resumes from them."""
    (tmp_path / "data").mkdir()
    for d in ("prepared", "stats"): (tmp_path / "data" / d).symlink_to(data / d)
    steps = 60
    pf = params_file(tmp_path / "params.yaml", {"synthetic-segnet-ce": entry("ce")}, iterations=steps)
    cmd = [sys.executable, "-m", "pat.train", "pack", "--params", str(pf), "--groups", "t61"]
    ckpts = lambda: list((tmp_path / "runs" / ".work").glob("*/seed*/checkpoint.pt"))     # <run key>/seed<k>/
    done = lambda: sum(T.steps_done(c.parent, c.parent.parent.name, int(c.parent.name[4:]), steps) for c in ckpts())
    code, err = ctrl_c(cmd, lambda: len(ckpts()) == 2, tmp_path)
    assert (code, err.splitlines()[-1]) == (130, "interrupted; the seeds' checkpoints are kept, and the same command resumes"), err
    assert "Traceback" not in err, err
    before = done(); time.sleep(1)                                   # a worker left training would checkpoint again
    assert 0 < before == done() < 2 * steps
    again = run(cmd, tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["steps"] == 2 * steps - before, again.stderr   # resumed
    assert re.search(rf"(\d+)/{2 * steps} \[", again.stderr)[1] == str(before)                # the bar starts there


def _batches_agree(data, device):
    "GPU-resident batches (cut, scaled and flipped on the device) equal those read per image from the memory map."
    cfg = {**run_config(CFG), "batch_size": 5, "flip": True}
    read = T.TrainBatches(data / "prepared" / "synthetic", cfg, 3, torch.device("cpu"), resident=False)
    resident = T.TrainBatches(data / "prepared" / "synthetic", cfg, 3, device, resident=True)
    for step in (0, 1, 2, 7):                                   # 16 images, batch 5: a new epoch at step 3
        (xa, ya), (xb, yb) = read(step), resident(step)
        assert xb.device.type == device.type and xb.dtype == torch.float32 and yb.dtype == torch.int64
        assert torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu()), step
    assert xb.is_contiguous(memory_format=torch.channels_last)
    flipped = [not torch.equal(read(s)[0], T.TrainBatches(data / "prepared" / "synthetic", {**cfg, "flip": False}, 3,
                                                          torch.device("cpu"))(s)[0]) for s in range(4)]
    assert any(flipped)                                         # the flip really happened in the compared batches


def test_resident_batches_equal_read_batches(data):
    _batches_agree(data, torch.device("cpu"))


def test_step_timer_counts_steps(monkeypatch):
    "The median of the steps' durations and the wall time since the first step, on a clock the test sets."
    clock = iter([10.0, 10.5, 11.0, 13.0, 13.0, 13.25, 14.0])          # starts and stops of three steps, then now
    monkeypatch.setattr(T.time, "perf_counter", lambda: next(clock))
    timer = T.StepTimer(torch.device("cpu"))
    assert np.isnan(timer.median()) and timer.wall() == 0.0
    for _ in range(3): timer.start(); timer.stop()                      # steps of 0.5, 2.0 and 0.25 s
    assert timer.median() == 0.5 and timer.wall() == 4.0


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_resident_batches_on_cuda(data):
    _batches_agree(data, torch.device("cuda"))


@cuda
@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_trains_on_cuda(data, tmp_path, loss):
    params = yaml.safe_load((Path(__file__).parents[1] / "profiles" / "base.yaml").read_text())["losses"]   # the thesis's
    m = train_run({**CFG, "loss": loss, "loss_params": params[loss], "device": "cuda"}, 0, tmp_path, data / "prepared", data / "stats", progress=False)
    assert m["device"].startswith("cuda") and m["steps"] == 4 and np.isfinite(m["miou"]) and m["peak_memory_mb"] > 0


@cuda
def test_blv_resumes_its_noise_on_cuda(data, tmp_path):
    cfg = {**CFG, "loss": "blv", "loss_params": {"sigma": 0.5}, "iterations": 6, "checkpoint_every": 2, "device": "cuda"}
    straight = train_run(cfg, 0, tmp_path / "a", data / "prepared", data / "stats", progress=False)
    train_run(cfg, 0, tmp_path / "b", data / "prepared", data / "stats", progress=False, stop_after=3)
    resumed = train_run(cfg, 0, tmp_path / "b", data / "prepared", data / "stats", progress=False)
    assert resumed["steps"] == 6 and resumed["miou"] == pytest.approx(straight["miou"], abs=2.0)   # cuDNN is not bitwise deterministic


@cuda
def test_seeds_share_the_gpu(data, tmp_path):
    "On CUDA all seeds of a run train at once (spawned workers), each on a visible GPU in turn."
    res = train_seeds({**CFG, "device": "cuda"}, [0, 1], tmp_path, data / "prepared", data / "stats", progress=False)
    assert sorted(res) == [0, 1] and all(m["device"].startswith("cuda") for m in res.values())


def test_eval_batch_size_is_in_the_key(data, tmp_path):
    "The per-batch mIoU depends on the evaluation batch size: a finished seed evaluated with another is not reused."
    out = tmp_path / "run"
    first = train_run(CFG, 0, out, data / "prepared", data / "stats", progress=False)
    other = {**CFG, "eval_batch_size": 3}
    again = train_run(other, 0, out, data / "prepared", data / "stats", progress=False)
    fresh = train_run(other, 0, tmp_path / "fresh", data / "prepared", data / "stats", progress=False)
    assert again["run_key"] != first["run_key"] and again["config"]["eval_batch_size"] == 3
    assert again["miou_batch_mean"] == fresh["miou_batch_mean"] != first["miou_batch_mean"]


def test_resume_starts_from_the_checkpoint(data, tmp_path):
    "A stopped run resumes at its last checkpoint (not from step 0, which gives the same numbers) and ends as an uninterrupted one."
    cfg = {**CFG, "iterations": 6, "checkpoint_every": 2}
    straight = train_run(cfg, 0, tmp_path / "a", data / "prepared", data / "stats", progress=False)
    train_run(cfg, 0, tmp_path / "b", data / "prepared", data / "stats", progress=False, stop_after=3)
    starts = []
    resumed = train_run(cfg, 0, tmp_path / "b", data / "prepared", data / "stats", progress=False,
                        on_step=lambda s: starts.append(s))
    assert starts[:2] == [2, 3]                                   # resumed from the checkpoint of step 2
    for k in ("miou", "miou_batch_mean", "confusion_matrix", "iou"): assert resumed[k] == straight[k], k


def test_code_hash_is_of_the_code_this_process_imported(monkeypatch):
    "The run key's code hash is taken when pat.train is imported: a file rewritten later (an nbdev_export while a run trains) does not change it."
    before = T.code_hash()
    monkeypatch.setattr(T, "source_hash", lambda *a, **k: "f" * 64)     # the files on disk now hash otherwise
    assert T.code_hash() == before != "f" * 16


def test_pack_and_train_seeds_refuse_arrays_changed_by_hand(data, tmp_path):
    "The run key takes the arrays' checksums from meta.json: pack and train_seeds check them first, naming the file."
    import shutil
    from pat.prepared import DataError
    shutil.copytree(data, tmp_path / "data")
    images = tmp_path / "data" / "prepared" / "synthetic" / "train_images.npy"
    np.save(images, 255 - np.load(images))
    kw = dict(data_root=tmp_path / "data" / "prepared", stats_root=tmp_path / "data" / "stats")
    says = f"{images}: checksum differs from meta.json"
    with pytest.raises(DataError, match=re.escape(says)):
        T.pack(params_file(tmp_path / "params.yaml", {"synthetic-segnet-ce": entry("ce")}), work_root=tmp_path / "work", progress=False, **kw)
    with pytest.raises(DataError, match=re.escape(says)):
        train_seeds(CFG, [0], tmp_path / "out", workers=1, progress=False, **kw)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_finished_seeds_are_copied_without_reading_the_arrays_and_pending_ones_verify_once(data, tmp_path, monkeypatch):
    """`train_seeds` verifies the arrays only when a seed of it will train: a stage whose seeds are all finished (pack
    trained them) copies them out without hashing the dataset again; one with a pending seed verifies it once."""
    import shutil
    from pat.prepared import DataError
    shutil.copytree(data, tmp_path / "data")
    kw = dict(data_root=tmp_path / "data" / "prepared", stats_root=tmp_path / "data" / "stats", workers=1, progress=False)
    calls, real = [], T.verify_prepared
    monkeypatch.setattr(T, "verify_prepared", lambda root: calls.append(Path(root)) or real(root))
    first = train_seeds(CFG, [0], tmp_path / "out1", work_root=tmp_path / "work", **kw)
    assert calls == [tmp_path / "data" / "prepared" / "synthetic"]
    images = tmp_path / "data" / "prepared" / "synthetic" / "train_images.npy"
    np.save(images, 255 - np.load(images))                  # changed by hand after seed 0 finished
    again = train_seeds(CFG, [0], tmp_path / "out2", work_root=tmp_path / "work", **kw)
    assert calls == [tmp_path / "data" / "prepared" / "synthetic"]                 # not verified again: nothing trains
    assert again[0]["confusion_matrix"] == first[0]["confusion_matrix"]
    assert json.loads((tmp_path / "out2" / "seed0" / "metrics.json").read_text())["run_key"] == first[0]["run_key"]
    with pytest.raises(DataError, match="train_images.npy: checksum differs"):      # seed 1 would train on them
        train_seeds(CFG, [0, 1], tmp_path / "out3", work_root=tmp_path / "work", **kw)
    assert len(calls) == 2


def test_pack_verifies_only_the_datasets_of_its_pending_seeds(tmp_path, monkeypatch):
    "A dataset whose seeds are all finished is not hashed again by `pack`; each pending seed's dataset is, once, before training."
    work = {name: tmp_path / "work" / name for name in ("a0", "a1", "b0", "c0")}
    for name in ("a0", "a1", "c0"):                                          # dataset a's seeds and c's are finished
        work[name].mkdir(parents=True); (work[name] / "metrics.json").write_text(json.dumps({"run_key": "k"}))
    seeds = [(({"dataset": name[0], "iterations": 4}, int(name[1]), w, "prep", "stats"), "k") for name, w in work.items()]
    seeds.append((({"dataset": "b", "iterations": 4}, 1, tmp_path / "work" / "b1", "prep", "stats"), "k"))  # two pending of b

    class Stop(Exception): pass

    def stop(*a, **k): raise Stop
    calls = []
    monkeypatch.setattr(T, "share_seeds", lambda *a, **k: seeds)
    monkeypatch.setattr(T, "load_params", lambda *a, **k: {})
    monkeypatch.setattr(T, "verify_prepared", lambda root: calls.append(Path(root)))
    monkeypatch.setattr(T, "steps_done", stop)                               # after the checks: nothing trains here
    with pytest.raises(Stop):
        T.pack("params.yaml", data_root=tmp_path / "prep", progress=False)
    assert calls == [tmp_path / "prep" / "b"]


def test_unfinished_keeps_the_seeds_without_this_runs_metrics_and_opens_no_checkpoint(tmp_path, monkeypatch):
    "A seed is finished when its work folder holds metrics of its run key: another key's or a checkpoint leave it pending."
    folders = {name: tmp_path / name for name in ("done", "other_key", "checkpoint", "empty")}
    for f in folders.values(): f.mkdir()
    for name, key in (("done", "k"), ("other_key", "old")): (folders[name] / "metrics.json").write_text(json.dumps({"run_key": key}))
    (folders["checkpoint"] / T.CHECKPOINT).write_bytes(b"not read")
    monkeypatch.setattr(T, "load_checkpoint", lambda *a, **k: pytest.fail("a checkpoint was opened"))
    seeds = [(({}, 0, f), "k") for f in folders.values()]
    assert [job[2].name for job, key in T.unfinished(seeds)] == ["other_key", "checkpoint", "empty"]


def test_pack_list_prints_the_pending_work_folders_or_says_there_are_none(monkeypatch, capsys):
    "`pack --list` prints one work folder per pending seed; with none it says so on stderr instead of printing nothing."
    params = str(Path(__file__).resolve().parents[1] / "params.yaml")
    monkeypatch.setattr(T, "share_seeds", lambda *a, **k: [(({}, 0, Path("runs/.work/k1/seed0")), "k1"), (({}, 3, Path("runs/.work/k2/seed3")), "k2")])
    T.main(["pack", "--list", "--params", params])
    assert capsys.readouterr() == ("runs/.work/k1/seed0\nruns/.work/k2/seed3\n", "")
    monkeypatch.setattr(T, "share_seeds", lambda *a, **k: [])
    T.main(["pack", "--list", "--params", params])
    assert capsys.readouterr() == ("", "no pending seeds\n")


def test_pack_options_are_checked(capsys):
    "A concurrency of 0 or less, or no GPU memory per run, is refused by name before anything is read."
    for args, says in ((["--per-device", "0"], "argument --per-device: expected an integer >= 1, got '0'"),
                       (["--gpu-gb", "-2"], "argument --gpu-gb: expected a number > 0, got '-2'")):
        with pytest.raises(SystemExit) as e: T.main(["pack", "--params", "no-such-params.yaml", *args])
        assert e.value.code == 2 and says in capsys.readouterr().err
