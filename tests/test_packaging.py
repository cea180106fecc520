"Every import the package makes is declared in settings.ini; the losses and models need the core requirements alone."
import re
from configparser import ConfigParser
from pathlib import Path
import pytest
from pat_imports import imports

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
    assert _names("requirements") == {"torch", "segmentation-models-pytorch"}
    assert {"dvc", "dvclive", "papermill", "scipy", "seaborn"} <= _names("pipeline_requirements")


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
