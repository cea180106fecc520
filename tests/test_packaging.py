"Every import the package makes is declared in settings.ini; the losses and models need the core requirements alone."
import re
from configparser import ConfigParser
from pathlib import Path
import pytest
from pat_imports import imports, source_imports

ROOT = Path(__file__).resolve().parents[1]
CORE = ("losses", "fused", "models", "triton_losses")       # what `pip install pat-seg` is for
OPTIONAL = {"triton"}                                        # used when present (PAT's CUDA kernels), never required
DIST = {"yaml": "pyyaml", "PIL": "pillow", "segmentation_models_pytorch": "segmentation-models-pytorch"}


def _settings():
    cfg = ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]


def _names(key):
    return {re.split(r"[<>=!~\[ ]", r)[0].lower() for r in _settings()[key].split()}


def test_distribution_name_and_extras():
    s = _settings()
    assert s["lib_name"] == "pat" and s["dist_name"] == "pat-seg"         # `pat` on PyPI is another project
    assert re.search(r'^name\s*=\s*"pat-seg"', (ROOT / "pyproject.toml").read_text(), re.M)   # pip reads it there first
    assert _names("requirements") == {"torch", "segmentation-models-pytorch", "timm"}   # timm: smp requires it too; pat names its encoders
    assert {"dvc", "dvclive", "papermill", "scipy", "seaborn"} <= _names("pipeline_requirements")


def test_the_import_reader_sees_every_form():
    """The reader behind these tests and the stage-dependency test: pat modules however imported (relative, `pat.x`,
    `from pat import x`, inside a function), third-party packages at load and later (in a function or `try`)."""
    src = ("import numpy\nfrom .losses import a\nfrom . import models\nfrom pat.fused import b\nimport pat.train\n"
           "from pat import report, data as D\ntry:\n    import triton\nexcept ImportError: pass\n"
           "def f():\n    import torch.nn\n    from pat import files\n")
    assert source_imports(src) == ({"numpy"}, {"triton", "torch"}, {"losses", "models", "fused", "train", "report", "data", "files"})


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "pat").glob("*.py") if not p.stem.startswith("_")))
def test_every_import_is_declared(module):
    top, inner, _ = imports(module)
    declared = _names("requirements") | _names("pipeline_requirements") | OPTIONAL
    missing = {DIST.get(p, p).lower() for p in top | inner} - declared
    assert not missing, f"pat/{module}.py imports {sorted(missing)}, which settings.ini does not declare"


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_only_torch(module):
    "The losses and models load with torch alone; smp (a core requirement) and triton (optional) load when used."
    top, inner, _ = imports(module)
    assert top <= {"torch"}, f"pat/{module}.py imports {sorted(top - {'torch'})} when imported"


def test_sdist_builds_a_wheel(tmp_path):
    "The sdist holds what setup.py reads (settings.ini) and no tests; pip builds a wheel with the package from it alone."
    import shutil, subprocess, sys, tarfile, zipfile
    src = tmp_path / "src"                                       # the committed files, so the build leaves the checkout alone
    for f in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split():
        if (ROOT / f).is_file(): (src / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT / f, src / f)
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    built = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=src, capture_output=True, text=True, check=True)
    name = built.stdout.split()[-1]
    assert "deprecated" not in built.stdout + built.stderr, "setuptools warns about the metadata"
    with tarfile.open(tmp_path / name) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
        info = t.extractfile(f"{name.removesuffix('.tar.gz')}/PKG-INFO").read().decode()
    assert "License: Apache-2.0" in info and "Classifier: Development Status :: 3 - Alpha" in info and "Requires-Python: >=3.10" in info
    assert "settings.ini" in members and "LICENSE" in members and "pat/losses.py" in members
    assert not any(m.startswith("tests/") for m in members), "the sdist holds tests/ without conftest.py and the repository they need"
    whl = tmp_path / "whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(whl),
                    str(tmp_path / name)], cwd=tmp_path, check=True, capture_output=True, text=True)
    (wheel,) = whl.glob("pat_seg-*.whl")
    assert "pat/losses.py" in zipfile.ZipFile(wheel).namelist()
