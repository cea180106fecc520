"""Tiny runs for the tests that start pat's commands: the ci profile's synthetic data, a params file of small runs on
it, and Ctrl-C pressed as in a terminal."""
import os, signal, subprocess, sys, time
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(seed=0, size=[32, 32], splits={"train": 16, "val": 4, "test": 8})   # the ci profile's synthetic data
SMALL = dict(batch_size=4, eval_batch_size=8, n_predictions=2)                   # tests/test_train.py's CFG
SEGNET, PAT = {"width": 0.0625}, {"T": 5}


def _env() -> dict:
    "This environment, with this repository's pat first on the path (a command may run in another folder)."
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def prepare_tiny(root):
    "The tiny synthetic dataset in `root/prepared/synthetic` and its statistics in `root/stats`."
    from pat.data import write_stats
    from pat.synthetic import prepare_synthetic
    prepare_synthetic(TINY, Path(root) / "prepared" / "synthetic")
    write_stats(Path(root) / "prepared" / "synthetic", Path(root) / "stats", Path(root) / "figures")
    return Path(root)


def entry(loss, seeds=(0, 1), **kw):
    "A SegNet run of `loss` on the synthetic data, as params.yaml lists it."
    return {"dataset": "synthetic", "model": "segnet", "loss": loss, "seeds": list(seeds), **kw}


def params_file(path, runs, iterations=2, checkpoint_every=2, **groups):
    "A params file of small runs, every table group holding `runs` unless `groups` gives it others."
    from pat.pipeline import GROUPS, TRAIN_DEFAULTS
    train = {**TRAIN_DEFAULTS, **SMALL, "iterations": iterations, "checkpoint_every": checkpoint_every}
    Path(path).write_text(yaml.safe_dump({"profile": "t", "datasets": ["synthetic"], "data": {"enabled": ["synthetic"]},
                                          "train": train, "models": {"segnet": SEGNET}, "losses": {"pat": PAT, "ce": {}},
                                          **{g: runs for g in GROUPS}, **groups}, sort_keys=False))
    return Path(path)


def ctrl_c(cmd, ready, cwd, timeout=120) -> tuple[int, str]:
    """Start `cmd` in `cwd` as a shell starts a foreground job (its own process group, Ctrl-C's default action,
    this repository's pat), press Ctrl-C once `ready()` (SIGINT to the whole group); its exit status and stderr."""
    with open(Path(cwd) / "ctrl_c.err", "w+") as err:
        p = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + timeout
        while not ready() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
        assert p.poll() is None, f"{cmd} ended before Ctrl-C"
        os.killpg(p.pid, signal.SIGINT)
        try: p.wait(timeout=60)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait(); raise AssertionError(f"{cmd} did not stop on Ctrl-C")
        err.seek(0)
        return p.returncode, err.read()


def run(cmd, cwd) -> subprocess.CompletedProcess:
    "`cmd` run to its end in `cwd` with this repository's pat."
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
