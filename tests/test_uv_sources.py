"tools/uv_sources.py: pip's package sources (`pip config list`) as `uv pip` options for `make venv`."
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("uv_sources", ROOT / "tools" / "uv_sources.py")
uv_sources = importlib.util.module_from_spec(spec); spec.loader.exec_module(uv_sources)

CONFIG = """:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
"""


def test_every_source_once_in_pips_order():
    assert uv_sources.uv_options(CONFIG) == [
        "--find-links", "/opt/wheels", "--constraint", "/etc/xdg/pip/constraints.txt",
        "--extra-index-url", "file:///opt/pypi/simple", "--extra-index-url", "file:///opt/pypi-more/simple",
        "--index-strategy", "unsafe-best-match"]


def test_pip_index_url_variable_wins_over_a_config_file():
    config = "global.index-url='https://mirror.example/simple'\n:env:.index-url='https://proxy.example/simple'\n"
    assert uv_sources.uv_options(config)[:2] == ["--index-url", "https://proxy.example/simple"]
    assert uv_sources.uv_options(config.splitlines()[0])[:2] == ["--index-url", "https://mirror.example/simple"]


def test_no_configuration_leaves_uv_on_its_defaults():
    assert uv_sources.uv_options("") == ["--index-strategy", "unsafe-best-match"]
