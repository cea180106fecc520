"What a user of the installed package sees when the pipeline's commands run outside the repository or without its packages."
import os, subprocess, sys
from pathlib import Path
import pytest
from pat.repro import repro

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}   # this checkout's pat, from a folder outside it


def _run(code, cwd):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def test_pipeline_list_outside_the_repository(tmp_path):
    "`python -m pat.pipeline list` where there is no profiles/ says so (it printed nothing and exited 0)."
    r = subprocess.run([sys.executable, "-m", "pat.pipeline", "list"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no profiles in" in r.stderr and "repository's root" in r.stderr, r


def test_repro_without_dvc_names_what_to_install():
    "`python -m pat.repro` without dvc on PATH: one error naming the extra (was a FileNotFoundError traceback)."
    with pytest.raises(RuntimeError, match=r"not found on PATH: install the pipeline's packages \(pip install 'pat-seg\[pipeline\]'\)"):
        repro(dvc="pat-no-such-dvc")


def test_runner_without_papermill_names_what_to_install(tmp_path):
    "`python -m pat.runner` without papermill: one line naming the extra (was a ModuleNotFoundError traceback)."
    (tmp_path / "nb.ipynb").write_text("{}")
    r = _run("import sys; sys.modules['papermill'] = None; from pat.runner import main; main(['nb.ipynb', 'out.ipynb'])", tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "papermill is missing): pip install 'pat-seg[pipeline]'" in r.stderr, r.stderr


def test_data_stats_without_the_figures_packages(tmp_path):
    "`python -m pat.data stats` without matplotlib: one error line naming the extra, and no stats.json written (was a traceback after it)."
    code = ("import sys; sys.modules['matplotlib'] = None; from pat.data import main; "
            "main(['stats', 'synthetic', '--prepared', 'prep', '--stats', 'stats', '--figures', 'fig'])")
    r = _run(code, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "stats needs the pipeline's packages (matplotlib is missing): pip install 'pat-seg[pipeline]'" in r.stderr, r.stderr
    assert not (tmp_path / "stats").exists()


def test_data_stats_reports_another_import_error_as_itself(monkeypatch, tmp_path):
    "An ImportError that is not a missing pipeline package (here a broken import of pat's own) propagates as it is: it was reported as a missing package."
    import pat.data
    def broken(root): raise ImportError("cannot import name 'x' from 'pat.prepared'", name="pat.prepared")
    monkeypatch.setattr(pat.data, "compute_stats", broken)
    with pytest.raises(ImportError, match="cannot import name 'x' from 'pat.prepared'"):
        pat.data.main(["stats", "synthetic", "--prepared", str(tmp_path), "--stats", str(tmp_path / "s"), "--figures", str(tmp_path / "f")])


PIPELINE_ONLY = ("pandas", "scipy", "matplotlib", "seaborn", "dvc", "dvclive", "papermill")


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "pat").glob("*.py") if not p.stem.startswith("_")))
def test_import_without_the_pipeline_packages(module, tmp_path):
    "With the core requirements alone a module imports, or its ImportError names the extra to install (pat.report: was a bare one)."
    code = (f"import sys; sys.modules.update(dict.fromkeys({PIPELINE_ONLY!r}))\n"
            f"try: import pat.{module}\nexcept ImportError as e: print('ImportError:', e)")
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ImportError" not in r.stdout or "pip install 'pat-seg[pipeline]'" in r.stdout, r.stdout
