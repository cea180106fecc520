"""The documentation site (`make docs`: tools/build_docs.py), built into a temporary folder: a page per notebook,
no nbdev directive or hidden cell shown, every formula rendered by KaTeX, the exported API with parameter
tables, links that resolve, the results page, and README's opening kept equal to nbs/index.ipynb's.

The build needs node (KaTeX comes from npm into tools/docs/node_modules on first use): without node the
build tests are skipped. The Chromium check (tools/check_docs_chromium.py) runs where `chromium` is on PATH."""
import ast, functools, json, re, shutil, struct, subprocess, sys, zlib
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
NOTEBOOKS = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_")) + sorted(NBS.glob("experiments/*.ipynb"))
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not on PATH: the docs build renders formulas with KaTeX under node")

# what is left of a formula that was not rendered, in text outside code
RAW_TEX = re.compile(r"\$\$.+?\$\$|\$[^$\s][^$\n]*?[^$\s\\]\$(?!\d)|\\(?:frac|mathrm|log|sum|beta|epsilon|partial|left|right|begin|qquad)(?![A-Za-z])", re.S)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def expected_page(nb: Path) -> Path:
    "nbdev's page name (nbdev.doclinks): 00_losses.ipynb -> losses.html, 02a_prepared.ipynb -> prepared.html, experiments/table6_1.ipynb -> experiments/table6_1.html."
    rel = nb.relative_to(NBS)
    return rel.parent / (re.sub(r"^\d+[a-zA-Z0-9]*_", "", rel.stem.lower()) + ".html")


def cells(nb: Path) -> list:
    return [(c["cell_type"], "".join(c["source"])) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]]


def is_hidden(src: str) -> bool:
    return bool(re.match(r"(?:\s*#\|.*\n)*\s*#\|\s*hide\s*$", src, re.M))


@functools.lru_cache(maxsize=None)
def _parsed(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def soup(path: Path) -> BeautifulSoup:
    "The parsed page (parsed once; the tests only read it)."
    return _parsed(Path(path).resolve())


def page_problems(doc: BeautifulSoup) -> list:
    "Formulas not rendered (KaTeX error spans, TeX left in the text), control characters, visible nbdev directives."
    bad = [f"KaTeX error: {e.get_text()[:60]!r}" for e in doc.select(".katex-error")]
    if CONTROL.search(str(doc)): bad.append(f"control character {CONTROL.search(str(doc)).group()!r}")
    if re.search(r"#\|\s*\w", doc.get_text()): bad.append("an nbdev directive '#|' is visible")
    text = BeautifulSoup(str(doc), "html.parser")                                # a copy: the page stays as parsed
    for e in text.select(".katex, pre, code, script, style, .highlight"): e.decompose()
    bad += [f"TeX left in the text: {m.group()[:60]!r}" for m in RAW_TEX.finditer(text.get_text())]
    return bad


def _png(path: Path):
    "A valid 1x1 PNG."
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    "The site built from this checkout, with a small results folder: (site folder, the build's CompletedProcess)."
    if shutil.which("node") is None: pytest.skip("node is not on PATH: the docs build renders formulas with KaTeX under node")
    tmp = tmp_path_factory.mktemp("docs")
    res = tmp / "results"
    (res / "tables").mkdir(parents=True)
    (res / "tables" / "table6_1.md").write_text("## Table 6.1 (test)\n\n| loss | mIoU ($T=20$) |\n|---|---|\n| PAT | **41.2 \\| 3.1** |\n")
    (res / "bench").mkdir()
    (res / "bench" / "table5_2.md").write_text("| loss | ms |\n|---|---|\n| CE | 1.0 |\n")
    _png(res / "figures" / "fig4_5.png"); _png(res / "figures" / "predictions" / "t61_0.png")
    out = tmp / "site"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py"), "--out", str(out), "--results", str(res), "--jobs", "2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    return out, r


def test_build_succeeds(built):
    out, r = built
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "katex" / "katex.min.css").exists() and list((out / "katex" / "fonts").glob("KaTeX_Main-Regular.woff2"))


@needs_node
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.relative_to(NBS).as_posix())
def test_every_notebook_has_a_page(built, nb):
    page = built[0] / expected_page(nb)
    assert page.exists(), f"no page {expected_page(nb)} for {nb.relative_to(ROOT)}"
    title = next((m.group(1) for t, s in cells(nb) if t == "markdown" for m in [re.search(r"^#\s+(.+?)\s*$", s, re.M)] if m), None)
    assert title and soup(page).h1.get_text().strip() == title.replace("`", ""), "the page's title is not the notebook's"


@needs_node
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.relative_to(NBS).as_posix())
def test_page_shows_no_directive_no_hidden_cell_and_renders_every_formula(built, nb):
    doc = soup(built[0] / expected_page(nb))
    assert page_problems(doc) == []
    text = doc.get_text()
    shown = "\n".join(s for t, s in cells(nb) if not is_hidden(s))
    hidden_lines = {l.strip() for t, s in cells(nb) if t == "code" and is_hidden(s) for l in s.splitlines()[1:]}
    leaked = [l for l in hidden_lines if len(l) > 20 and not l.startswith("#") and l not in shown and l in text]
    assert not leaked, f"lines of hidden cells on the page: {leaked[:3]}"
    md = "\n".join(s for t, s in cells(nb) if t == "markdown")
    assert len(doc.select(".katex-display")) == len(re.findall(r"\$\$.+?\$\$", md, re.S)), "display formulas of the markdown cells"
    if re.search(r"\$[^$\s]", md): assert doc.select(".katex"), "the notebook has formulas, the page none"


def test_page_checks_can_fail():
    "`page_problems` flags each kind of failure (so that the tests above can fail)."
    bad = BeautifulSoup('<p>a $x^2$ and \\frac12 and \x0c</p><span class="katex-error">\\bad</span>'
                        '<pre>#| export\nx = 1</pre>', "html.parser")
    found = " ".join(page_problems(bad))
    for what in ("KaTeX error", "control character", "'#|'", "'$x^2$'", "'\\\\frac'"): assert what in found, (what, found)
    ok = BeautifulSoup('<p><span class="katex">x</span> costs $5 <code>$x$ \\frac</code></p>', "html.parser")
    assert page_problems(ok) == []


def _exported(module: str) -> dict:
    "Top-level functions and classes of pat/<module>.py in its __all__, with their parameter names (None: not known from the source)."
    tree = ast.parse((ROOT / "pat" / f"{module}.py").read_text())
    names = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__")
    def params(f):
        a = f.args
        return [x.arg for x in a.posonlyargs + a.args + [a.vararg] + a.kwonlyargs + [a.kwarg] if x and x.arg not in ("self", "cls")]
    out = {}
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names:
            init = next((b for b in n.body if isinstance(b, ast.FunctionDef) and b.name == "__init__"), None) if isinstance(n, ast.ClassDef) else n
            out[n.name] = params(init) if init else None
    return out


MODULE_NOTEBOOKS = [(m.group(1), nb) for nb in NOTEBOOKS for t, s in cells(nb) for m in [re.match(r"#\|\s*default_exp\s+(\S+)", s)] if m]


@needs_node
@pytest.mark.parametrize("module,nb", MODULE_NOTEBOOKS, ids=[m for m, _ in MODULE_NOTEBOOKS])
def test_exported_api_is_documented_with_parameter_tables(built, module, nb):
    doc = soup(built[0] / expected_page(nb))
    api = _exported(module)
    assert api, f"pat/{module}.py exports no function or class"
    for name, params in api.items():
        head = doc.find(id=name.lower())
        assert head is not None and head.name == "h3", f"{name} of pat.{module} is not documented on {expected_page(nb)}"
        box = head.find_parent("div", class_="doc")
        assert box.find("pre") and name in box.find("pre").get_text(), f"{name}: no signature"
        if params:
            table = box.find("table", class_="params")
            assert table is not None, f"{name}: no parameter table"
            listed = [r.find("td").get_text().lstrip("*") for r in table.find("tbody").find_all("tr") if "returns" not in (r.get("class") or [])]
            assert listed == params, f"{name}: the table lists {listed}, the signature has {params}"


@needs_node
def test_links_resolve(built):
    out = built[0]
    for page in sorted(out.rglob("*.html")):
        for a in soup(page).find_all("a", href=True):
            href = a["href"]
            if re.match(r"[a-z]+:", href): continue
            path, _, frag = href.partition("#")
            target = (page.parent / path).resolve() if path else page
            assert target.exists(), f"{page.relative_to(out)}: broken link {href}"
            if frag: assert soup(target).find(id=frag) is not None, f"{page.relative_to(out)}: no #{frag} in {path or 'itself'}"
        for img in soup(page).find_all("img", src=True):
            if not img["src"].startswith("data:"): assert (page.parent / img["src"]).exists(), f"{page.relative_to(out)}: missing {img['src']}"


@needs_node
def test_results_page_lists_tables_and_figures(built):
    doc = soup(built[0] / "results.html")
    heads = [h.get_text() for h in doc.find_all("h2")]
    assert "tables/table6_1.md" in heads and "bench/table5_2.md" in heads
    cells_ = [td.get_text() for td in doc.find_all("td")]
    assert "41.2 | 3.1" in cells_ and "CE" in cells_                              # the tables as tables, an escaped | kept
    assert doc.select("th .katex"), "the formula of a table header is not rendered"
    assert {i["src"] for i in doc.find_all("img")} == {"results/figures/fig4_5.png", "results/figures/predictions/t61_0.png"}
    assert page_problems(doc) == []


@pytest.fixture(scope="module")
def build_docs():
    "tools/build_docs.py as a module."
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_docs
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return build_docs


def test_formulas_are_found_outside_code_only(build_docs):
    formulas = []
    text = build_docs.extract_math("`$x$` costs \\$5, $a_1$ and $ b $ or 3$ and\n\n$$\\frac12$$\n```\n$c$\n```\n$d\n\ne$", formulas)
    assert formulas == [("a_1", False), ("\\frac12", True)]
    assert "`$x$`" in text and "\\$5" in text and "$ b $" in text and "$c$" in text and "$d" in text


def test_parameter_table_shows_the_comment_of_kwargs(build_docs):
    "fastcore's docments leaves `**kwargs, # comment` out; the table takes it from the source (PATLoss passes them to SegLoss)."
    from pat.losses import PATLoss, get_loss
    table = build_docs.param_table(PATLoss)
    assert "<td><code>**kwargs</code></td><td></td><td></td><td>passed to <code>SegLoss</code></td>" in table
    assert "<td>the temperature, &gt; 0</td>" in table
    assert build_docs.star_comment(get_loss, "nothing") == ""


def test_a_bad_formula_is_reported(built, build_docs):
    html_, errors = build_docs.render_formulas([("\\frac{1", False), ("x^2", True)])
    assert "katex-error" in html_[0] and "katex-display" in html_[1] and "katex-error" not in html_[1]
    assert len(errors) == 1 and errors[0].startswith("$\\frac{1$")


def test_results_page_without_results_says_to_run_make_repro(tmp_path, build_docs):
    md, figures, n_tables = build_docs.results_markdown(tmp_path / "results")
    assert "run `make repro` first" in md and figures == [] and n_tables == 0
    _png(tmp_path / "results" / "figures" / "a.png")
    md, figures, n_tables = build_docs.results_markdown(tmp_path / "results")
    assert "make repro" not in md and "results/figures/a.png" in md and len(figures) == 1


@needs_node
def test_index_page_links_every_page(built):
    out = built[0]
    links = {a["href"] for a in soup(out / "index.html").select("main a[href]")}
    assert {expected_page(nb).as_posix() for nb in NOTEBOOKS if nb.name != "index.ipynb"} | {"results.html"} <= links


def test_readme_opening_is_the_index_notebook():
    """README.md up to '## Commands' is the start of nbs/index.ipynb (the docs' index page), its markdown cells
    before the first '## ' section: edit both together. (Two cells: nbdev reads '- key: value' lines of the title
    cell as metadata.)"""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Commands" in readme
    index = cells(NBS / "index.ipynb")
    n = next(i for i, (t, s) in enumerate(index) if s.startswith("## "))
    assert n > 0 and all(t == "markdown" for t, _ in index[:n])
    assert readme.split("\n## Commands")[0].strip() == "\n\n".join(s.strip() for _, s in index[:n])


@needs_node
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (apt-get install chromium): the in-browser check is skipped")
def test_pages_render_in_chromium(built):
    out = built[0]
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "check_docs_chromium.py"), str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    n_pages = len(json.loads((out / "manifest.json").read_text())["pages"])
    assert n_pages == len(NOTEBOOKS) + 1 and f"{n_pages} pages" in r.stdout and "all rendered" in r.stdout
