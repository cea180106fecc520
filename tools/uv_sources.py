"""Print pip's package sources as `uv pip` options, so that `make venv` installs with uv from where pip would.

uv does not read pip's configuration. This reads `python -m pip config list` (pip's config files and PIP_* variables;
on the project machines: local wheels in /opt/wheels, local indexes) and prints the matching uv options: every
find-links, extra-index-url and constraint, the index-url pip would use, and `--index-strategy unsafe-best-match`
(pip takes the best version from all its indexes; uv by default stops at the first index that has the package).
"""
from __future__ import annotations
import ast, shlex, subprocess, sys

KEYS = ("index-url", "extra-index-url", "find-links", "constraint")   # pip's settings that uv takes as --<key>


def uv_options(config: str) -> list[str]:
    """uv options from `pip config list` output: `<where>.<key>='<value>'` lines, a value holding one or more
    whitespace-separated entries. Each entry once; one index-url (a PIP_INDEX_URL, listed as `:env:`, wins)."""
    out, seen, index = [], set(), {}
    for line in config.splitlines():
        where_key, eq, value = line.partition("=")
        where, _, key = where_key.rpartition(".")
        if not eq or key not in KEYS: continue
        for entry in ast.literal_eval(value).split():
            if key == "index-url": index.setdefault(where == ":env:", entry)
            elif (key, entry) not in seen: seen.add((key, entry)); out += [f"--{key}", entry]
    if index: out = ["--index-url", index.get(True, index.get(False))] + out
    return out + ["--index-strategy", "unsafe-best-match"]


if __name__ == "__main__":
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
    print(shlex.join(uv_options(config)))
