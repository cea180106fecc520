"pat.runner as a DVC stage runs it: killed with its parent, `dvc repro`, it leaves no runner and no kernel behind."
import subprocess, sys, time
from pathlib import Path
import nbformat
import pytest


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
