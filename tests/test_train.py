"pat.train beyond the notebook's inline tests: seeds in parallel processes, metrics of a real run."
import os
import numpy as np
import pytest
import torch
from pat.data import prepare_synthetic, write_stats
from pat.train import train_seeds, _train_seed, run_config

TINY = dict(seed=0, size=[32, 32], splits={"train": 16, "val": 4, "test": 8})
CFG = dict(dataset="synthetic", model="segnet", model_options={"width": 0.0625}, loss="pat", loss_params={"T": 5},
           iterations=4, batch_size=4, checkpoint_every=2, eval_batch_size=8, n_predictions=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare_synthetic(TINY, root / "prepared" / "synthetic")
    write_stats(root / "prepared" / "synthetic", root / "stats", root / "figures")
    return root


def test_parallel_seeds_equal_one_process_per_seed(data, tmp_path):
    par = train_seeds(CFG, [0, 1], tmp_path / "par", data / "prepared", data / "stats", workers=2, progress=False)
    cpus = len(os.sched_getaffinity(0))
    threads = torch.get_num_threads()
    try:  # the same jobs in this process, with the thread count each worker used
        seq = dict(_train_seed((run_config(CFG), s, tmp_path / "seq" / f"seed{s}", data / "prepared", data / "stats",
                                max(1, cpus // 2), None)) for s in (0, 1))
    finally:
        torch.set_num_threads(threads)
    for s in (0, 1):
        assert par[s]["confusion_matrix"] == seq[s]["confusion_matrix"], s
        assert par[s]["miou"] == seq[s]["miou"]
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
