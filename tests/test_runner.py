"""pat.runner as a DVC stage runs it: killed with its parent, `dvc repro`, it leaves no runner and no kernel behind;
stopped with Ctrl-C, it prints one line and the same command resumes."""
import json, re, subprocess, sys, time
from pathlib import Path
import nbformat
import pytest
from tiny import ROOT, ctrl_c, entry, params_file, prepare_tiny, run


def running(pid) -> bool:
    "Whether process `pid` exists and is not a zombie (Linux's /proc)."
    try: return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError: return False


def gone_within(pid, seconds: float) -> bool:
    deadline = time.time() + seconds
    while running(pid) and time.time() < deadline: time.sleep(0.05)
    return not running(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_runner_and_its_kernel_die_with_their_parent(tmp_path):
    "A stand-in for `dvc repro` starts the runner, whose notebook's kernel records its pid and sleeps; then it is SIGKILLed."
    kernel_pid = tmp_path / "kernel.pid"
    cell = f"import os, pathlib, time\npathlib.Path({str(kernel_pid)!r}).write_text(str(os.getpid()))\ntime.sleep(300)"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), tmp_path / "sleep.ipynb")
    runner = [sys.executable, "-m", "pat.runner", str(tmp_path / "sleep.ipynb"), str(tmp_path / "out.ipynb")]
    dvc = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                            "print(subprocess.Popen(sys.argv[1:]).pid, flush=True); time.sleep(300)", *runner],
                           stdout=subprocess.PIPE, text=True)
    runner_pid = int(dvc.stdout.readline())
    deadline = time.time() + 120
    while not kernel_pid.exists() and time.time() < deadline: time.sleep(0.1)
    kernel = int(kernel_pid.read_text())
    try:
        assert running(runner_pid) and running(kernel)
        dvc.kill(); dvc.wait()
        assert gone_within(runner_pid, 5), f"the runner {runner_pid} outlived its parent"
        assert gone_within(kernel, 5), f"the kernel {kernel} outlived its runner"
    finally:
        for pid in (runner_pid, kernel):
            if running(pid): subprocess.run(["kill", "-9", str(pid)])


def test_ctrl_c_stops_a_training_stage_with_one_line_and_the_same_command_resumes(tmp_path):
    """Ctrl-C in a terminal reaches the runner (its kernel runs in a session of its own, its pool's workers in the
    kernel's): one line and status 130, no traceback from the runner, papermill or the kernel, no executed copy
    written; the seeds keep their checkpoints, and the same command resumes from them."""
    from pat.train import steps_done
    data, work, steps = prepare_tiny(tmp_path / "data"), tmp_path / "work", 60
    pf = params_file(tmp_path / "params.yaml", {"synthetic-segnet-ce": entry("ce")}, iterations=steps)
    out = tmp_path / "runs" / "t61" / "synthetic-segnet-ce"
    stage = {"params_file": pf, "group": "t61", "key": "synthetic-segnet-ce", "out_dir": out, "data_root": data / "prepared",
             "stats_root": data / "stats", "work_root": work}
    cmd = [sys.executable, "-m", "pat.runner", str(ROOT / "nbs" / "experiments" / "train_run.ipynb"), str(out / "train_run.ipynb"),
           *[a for k, v in stage.items() for a in ("-p", k, str(v))]]
    ckpts = lambda: list(work.glob("*/seed*/checkpoint.pt"))                                  # <run key>/seed<k>/
    code, err = ctrl_c(cmd, lambda: len(ckpts()) == 2, tmp_path)
    assert (code, err.splitlines()[-1]) == (130, "interrupted (run t61.synthetic-segnet-ce); its seeds' checkpoints are kept, "
                                                 "and the same command resumes"), err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert not list(out.glob("*.ipynb")) and not list(out.glob(".*.ipynb"))                   # no executed copy, whole or part
    done = sum(steps_done(c.parent, c.parent.parent.name, int(c.parent.name[4:]), steps) for c in ckpts())
    again = run(cmd, tmp_path)
    assert again.returncode == 0 and (out / "train_run.ipynb").exists(), again.stderr
    assert 0 < done and re.search(rf"(\d+)/{2 * steps} \[", again.stderr)[1] == str(done)    # resumed at the checkpoints
    assert json.loads((out / "seed1" / "metrics.json").read_text())["steps"] == steps
