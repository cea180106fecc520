#!/usr/bin/env python3
"""The documentation site, built offline from the notebooks: `python tools/build_docs.py [--out _site] [--results results]`.

* one page per notebook of `nbs/` and `nbs/experiments/`, processed by nbdev's own processors: directives
  (`#| export`, `#| hide`, ...) removed, hidden cells removed, a `show_doc` after every exported function and
  class (here with a table of its parameters), the exported source folded under it;
* `index.html` from `nbs/index.ipynb`, and `results.html`: the pipeline's tables (`results/tables/*.md`,
  `results/bench/*.md`) and figures (`results/figures/**/*.png`), or a note to run `make repro` first;
* every formula (`$...$`, `$$...$$` in markdown and docstrings) rendered to HTML at build time by KaTeX
  (`tools/docs/katex_render.js`, the npm package `katex` installed into the ignored `tools/docs/node_modules`
  by `npm ci` when it is missing); its CSS and fonts are copied into the site, so pages need no JavaScript
  and no network.

Nothing is trained: the only code run is what nbdev runs for `show_doc` (a notebook's imports and exported
definitions). Quarto is not needed. Exits with status 1, after writing the site, when a formula fails to render.
"""
from __future__ import annotations

import argparse, html, inspect, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
NODE_DIR = ROOT / "tools" / "docs"
KATEX = NODE_DIR / "node_modules" / "katex"
SITE_TITLE = "pat"


# --------------------------------------------------------------------------- which pages

def notebooks() -> list[Path]:
    "The notebooks that get a page: nbs/*.ipynb (index first) and nbs/experiments/*.ipynb."
    top = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith(("_", ".")))
    top.sort(key=lambda p: p.name != "index.ipynb")
    return top + sorted(p for p in (NBS / "experiments").glob("*.ipynb") if not p.name.startswith(("_", ".")))


def page_name(nb: Path) -> str:
    "The page of a notebook, relative to the site, nbdev's way (nbdev.doclinks): `nbs/02a_prepared.ipynb` -> `prepared.html`."
    rel = nb.relative_to(NBS)
    name = re.sub(r"^\d+[a-zA-Z0-9]*_", "", rel.stem.lower()) + ".html"
    return name if rel.parent == Path(".") else f"{rel.parent.as_posix()}/{name}"


# --------------------------------------------------------------------------- show_doc with a parameter table

def _esc_cell(s: str) -> str:
    "HTML-escaped table text; `$` as an entity, so that a default value is never taken for a formula."
    return html.escape(s).replace("$", "&#36;")


def _inline_md(s: str) -> str:
    "A docment: HTML-escaped outside `$...$`, `code` spans as <code>."
    parts = re.split(r"(\$[^$]+\$)", s)
    out = [p if i % 2 else re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(p)) for i, p in enumerate(parts)]
    return "".join(out).replace("\n", " ")


def star_comment(sym, name: str) -> str:
    "The comment after `*name` or `**name` in `sym`'s source (fastcore's docments leaves those out), or ''."
    try: src = inspect.getsource(sym.__init__ if inspect.isclass(sym) else sym)
    except (TypeError, OSError): return ""
    m = re.search(r"\*\*?" + re.escape(name) + r"\s*,?\s*#\s*(.+)", src)
    return m.group(1).strip() if m else ""


def param_table(sym) -> str:
    "An HTML table of `sym`'s parameters (type, default, docment) and return annotation; '' without parameters."
    try: sig = inspect.signature(sym)
    except (TypeError, ValueError): return ""
    star_names = {n for n, p in sig.parameters.items() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    try:
        from fastcore.docments import docments
        docs = docments(sym, full=True)
    except Exception: docs = {}
    def doc(name):
        d = docs.get(name, {}).get("docment") if isinstance(docs.get(name), dict) else None
        if not d and name in star_names: d = star_comment(sym, name)
        return _inline_md(d) if isinstance(d, str) and d else ""
    def show(o):
        if o is inspect.Parameter.empty: return ""
        return o if isinstance(o, str) else getattr(o, "__name__", None) or repr(o)
    rows = []
    for name, p in sig.parameters.items():
        if name in ("self", "cls"): continue
        star = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        default = "" if p.default is p.empty else (getattr(p.default, "__name__", None) if callable(p.default) else None) or repr(p.default)
        rows.append(f"<tr><td><code>{_esc_cell(star + name)}</code></td><td>{_esc_cell(show(p.annotation))}</td>"
                    f"<td>{'<code>' + _esc_cell(default) + '</code>' if default else ''}</td><td>{doc(name)}</td></tr>")
    if not rows: return ""
    if not inspect.isclass(sym) and (sig.return_annotation is not sig.empty or doc("return")):
        rows.append(f'<tr class="returns"><td><em>returns</em></td><td>{_esc_cell(show(sig.return_annotation))}</td><td></td>'
                    f"<td>{doc('return')}</td></tr>")
    head = "<tr><th>parameter</th><th>type</th><th>default</th><th>details</th></tr>"
    return f'\n\n<table class="params"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>\n'


from fastcore.docments import MarkdownRenderer      # nbdev's show_doc renderer's base (fastcore comes with nbdev)


class DocRenderer(MarkdownRenderer):
    "nbdev's `show_doc` markdown (signature, docstring) under an anchored heading, with `param_table`, without a source link."
    def _repr_markdown_(self):
        head = f'<h3 class="symbol" id="{html.escape(self.nm.lower())}"><code class="name">{html.escape(self.nm)}</code></h3>\n\n'
        sig = f"```python\n{self.dm}\n```"
        if inspect.isclass(self.sym): sig = sig.replace("```python\ndef ", "```python\nclass ", 1)
        doc = inspect.cleandoc(self.sym.__doc__) if isinstance(getattr(self.sym, "__doc__", None), str) else ""
        # the docstring as plain markdown: fastcore italicises its first line, which breaks when a code span spans two lines
        return head + sig + (f"\n\n{doc}" if doc else "") + param_table(self.sym)


def show_doc(sym, renderer=None, name: str | None = None, title_level: int = 3):
    "What the processed notebooks' `show_doc(...)` cells call (imported into their shell by `exec_show_docs` in `_procs`)."
    return DocRenderer(sym, name=name, title_level=title_level)


# --------------------------------------------------------------------------- nbdev processing (worker processes)

def _procs():
    "nbdev's `FilterDefaults` processors, less the Quarto-only ones; show_doc in source order, run with `show_doc` above."
    from execnb.nbio import NbCell, mk_cell
    from fastcore.foundation import L
    from nbdev import processors as P

    class add_show_docs(P.add_show_docs):
        "nbdev's, with the show_doc cells of one exported cell in the order of its definitions."
        def begin(self):
            nb = self.nb
            exports = L(c for c in nb.cells if P._want_doc(c))
            shown = {P._get_nm(t) for t in P._show_docs(L(nb.cells).map(NbCell.parsed_).concat())}
            for cell in reversed(exports):
                for nm in reversed(P._def_names(cell, shown)):
                    new = mk_cell(f"show_doc({nm})"); new.has_sd = True
                    nb.cells.insert(cell.idx_ + 1, new)
            nb.has_docs_ = shown or exports

    class exec_show_docs(P.exec_show_docs):
        "nbdev's: runs a notebook's imports and exported cells, and its show_doc cells with `DocRenderer`."
        def begin(self):
            super().begin()
            if hasattr(self, "k"):
                self.k.run_cell("from build_docs import show_doc")
                if self.k.exc: raise RuntimeError("cannot import tools/build_docs.py in the notebook shell") from self.k.exc

    return [P.populate_language, add_show_docs, P.strip_ansi, P.hide_line, P.filter_stream_, P.rm_header_dash,
            exec_show_docs, P.hide_, P.clean_magics, P.strip_hidden_metadata]


def _text(v) -> str:
    return "".join(v) if isinstance(v, list) else str(v)


def _outputs(cell) -> list[dict]:
    out = []
    for o in cell.get("outputs", []):
        kind = o.get("output_type")
        if kind == "stream": out.append({"type": "text", "data": _text(o.get("text", ""))})
        elif kind == "error":
            tb = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", "\n".join(o.get("traceback", [])))
            out.append({"type": "text", "data": tb or f"{o.get('ename')}: {o.get('evalue')}"})
        elif kind in ("execute_result", "display_data"):
            data = o.get("data", {})
            for mime, typ in (("text/markdown", "md"), ("text/html", "html"), ("image/png", "png"), ("image/jpeg", "jpeg"),
                              ("image/svg+xml", "svg"), ("text/plain", "text")):
                if mime in data:
                    out.append({"type": typ, "data": _text(data[mime])}); break
    return out


def process_notebook(path: Path) -> dict:
    "A notebook as nbdev's processors leave it, reduced to blocks: md, code (exported or not), doc (show_doc), outputs."
    os.chdir(path.parent)
    os.environ["IN_TEST"] = "1"                        # as nbdev's docs processing sets it
    import warnings                                    # nbdev's FAQ note on cells that mix imports and code (it runs them)
    warnings.filterwarnings("ignore", message="Found cells containing imports and other code")
    from execnb.nbio import read_nb
    from nbdev.process import NBProcessor
    nb = read_nb(path)
    nb.path_ = str(path)
    NBProcessor(nb=nb, procs=_procs()).process()
    blocks, title, description = [], None, None
    for cell in nb.cells:
        if "source" not in cell or cell.source is None: continue           # hidden (nbdev's hide_)
        d = getattr(cell, "directives_", {}) or {}
        src = cell.source
        if cell.cell_type == "markdown":
            if title is None:                               # nbdev's frontmatter: '# Title' and '> description'
                m = re.search(r"^#\s+(\S.*?)\s*$", src, re.M)
                if m:
                    title = m.group(1); src = src[:m.start()] + src[m.end():]
                    m = re.search(r"^>\s+(\S.*?)\s*$", src, re.M)
                    if m: description = m.group(1); src = src[:m.start()] + src[m.end():]
            if src.strip(): blocks.append({"kind": "md", "text": src})
            continue
        if cell.cell_type != "code": continue
        if "default_exp" in d or d.get("include:") == ["false"]: continue
        if getattr(cell, "has_sd", False) or re.match(r"\s*show_doc\(", src):
            blocks.append({"kind": "doc", "outputs": _outputs(cell)}); continue
        src = re.sub(r"\A(?:[ \t]*#\|.*(?:\n|\Z))+", "", src)   # nbdev leaves Quarto's (`#| eval: false`) for Quarto
        exported = bool({"export", "exporti", "exports"} & set(d))
        echo = d.get("echo:") != ["false"]
        blocks.append({"kind": "code", "src": src.strip("\n") if echo else "", "exported": exported,
                       "outputs": [] if d.get("output:") == ["false"] else _outputs(cell)})
    return {"source": path.relative_to(ROOT).as_posix(), "page": page_name(path),
            "title": title or path.stem, "description": description, "blocks": blocks}


def _worker(path: str):
    try: return process_notebook(Path(path))
    except BaseException as e:                         # the message, not a pickled exception from the shell
        cause = f"{type(e).__name__}: {e}" + (f" <- {type(e.__cause__).__name__}: {e.__cause__}" if e.__cause__ else "")
        return {"source": Path(path).relative_to(ROOT).as_posix(), "error": cause}


# --------------------------------------------------------------------------- formulas

_PH = re.compile("\ue000(\\d+)\ue001")


def _inline_close(text: str, i: int) -> int:
    "The index of the `$` closing an inline formula opened at `i` (pandoc's rule), or -1."
    j, n = i + 1, len(text)
    while j < n:
        c = text[j]
        if c == "\\": j += 2; continue
        if c == "\n" and re.match(r"[ \t]*(\n|$)", text[j + 1:]): return -1       # a blank line ends the paragraph
        if c == "$" and not text[j - 1].isspace() and not text[j + 1:j + 2].isdigit(): return j
        j += 1
    return -1


def extract_math(text: str, formulas: list) -> str:
    """`text` with every `$$...$$` and `$...$` outside code replaced by a placeholder; the formulas are appended
    to `formulas` as (tex, display). Code spans, fenced code and `\\$` are left as they are."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if i == 0 or text[i - 1] == "\n":
            m = re.match(r"[ \t]*(`{3,}|~{3,})", text[i:])
            if m:                                       # fenced code block: copied up to its closing fence
                fence = m.group(1)
                end = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$", re.M)
                nl = text.find("\n", i)
                close = end.search(text, nl + 1) if nl >= 0 else None
                stop = n if close is None else close.end()
                out.append(text[i:stop]); i = stop; continue
        if c == "\\" and i + 1 < n:
            out.append(text[i:i + 2]); i += 2; continue
        if c == "`":                                    # a code span: copied up to the closing run of as many backticks
            run = re.match(r"`+", text[i:]).group(0)
            close = re.compile(r"(?<!`)" + run + r"(?!`)").search(text, i + len(run))
            stop = i + len(run) if close is None else close.end()
            out.append(text[i:stop]); i = stop; continue
        if text.startswith("$$", i):
            close = text.find("$$", i + 2)
            if close > i + 2:
                formulas.append((text[i + 2:close].strip(), True))
                out.append(f"\ue000{len(formulas) - 1}\ue001"); i = close + 2; continue
        if c == "$" and i + 1 < n and not text[i + 1].isspace() and text[i + 1] != "$":
            close = _inline_close(text, i)
            if close > 0:
                formulas.append((text[i + 1:close], False))
                out.append(f"\ue000{len(formulas) - 1}\ue001"); i = close + 1; continue
        out.append(c); i += 1
    return "".join(out)


def ensure_katex() -> None:
    "Install the pinned KaTeX (tools/docs/package-lock.json) into tools/docs/node_modules when it is missing."
    if shutil.which("node") is None: raise SystemExit("build_docs: node is needed to render the formulas (KaTeX); it is not on PATH")
    if (KATEX / "package.json").exists(): return
    npm = shutil.which("npm")
    if npm is None: raise SystemExit("build_docs: KaTeX is not installed in tools/docs/node_modules and npm is not on PATH")
    print("build_docs: installing KaTeX from the npm registry into tools/docs/node_modules", file=sys.stderr)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)


def render_formulas(formulas: list) -> tuple[list[str], list[str]]:
    "KaTeX's HTML for each (tex, display), in one node call; and one message per formula that failed."
    unique = sorted(set(formulas))
    if not unique: return [], []
    r = subprocess.run(["node", str(NODE_DIR / "katex_render.js")], input=json.dumps(unique), capture_output=True,
                       text=True, check=False)
    if r.returncode: raise SystemExit(f"build_docs: katex_render.js failed:\n{r.stderr}")
    rendered = dict(zip(unique, json.loads(r.stdout)))
    errors = [f"{'$$' if d else '$'}{t}{'$$' if d else '$'}: {rendered[(t, d)][1]}" for t, d in unique if rendered[(t, d)][1]]
    return [rendered[f][0] for f in formulas], errors


# --------------------------------------------------------------------------- markdown and code to HTML

def _highlight(code: str, lang: str = "python") -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import TextLexer, get_lexer_by_name
    try: lexer = get_lexer_by_name(lang or "text")
    except Exception: lexer = TextLexer()
    return highlight(code, lexer, HtmlFormatter(cssclass="highlight"))


def _slug(text: str) -> str:
    text = re.sub(r"<[^>]+>", "", _PH.sub("", text))
    return re.sub(r"[^\w.]+", "-", html.unescape(text).lower()).strip("-") or "section"


def markdown_html(text: str, slugs: set) -> str:
    "Markdown to HTML (mistune, as nbconvert uses), headings with unique ids, fenced code highlighted."
    import mistune

    class Renderer(mistune.HTMLRenderer):
        def heading(self, text, level, **attrs):
            slug, k = _slug(text), 1
            while slug in slugs: k += 1; slug = f"{_slug(text)}-{k}"
            slugs.add(slug)
            return f'<h{level} id="{slug}">{text}</h{level}>\n'

        def block_code(self, code, info=None):
            return _highlight(code, (info or "").split()[0] if info else "text")

    md = mistune.create_markdown(renderer=Renderer(escape=False), plugins=["table", "strikethrough", "url"])
    return md(text)


def load_symbols() -> dict:
    "Exported names to their page anchor ('get_loss' and 'pat.losses.get_loss' -> 'losses.html#get_loss'), from pat/_modidx.py."
    ns: dict = {}
    exec((ROOT / "pat" / "_modidx.py").read_text(), ns)
    short, seen = {}, {}
    for syms in ns["d"]["syms"].values():
        for full, (url, _) in syms.items():
            mod, _, name = full.rpartition(".")
            if name.startswith("_") or mod.count(".") != 1: continue        # top-level names of pat.<module> only
            short[full] = url
            seen.setdefault(name, set()).add(url)
    short.update({name: next(iter(urls)) for name, urls in seen.items() if len(urls) == 1})
    return short


def link_symbols(h: str, symbols: dict, rel: str) -> str:
    "`<code>name</code>` of an exported name becomes a link to its documentation."
    def sub(m):
        url = symbols.get(m.group(1))
        return f'<a class="sym" href="{rel}{url}">{m.group(0)}</a>' if url else m.group(0)
    return re.sub(r"<code>([A-Za-z_][\w.]*)(?:\(\))?</code>", sub, h)


def _output_html(o: dict, md) -> str:
    t, data = o["type"], o["data"]
    if t == "md": return f'<div class="output md">{md(data)}</div>'
    if t == "html": return f'<div class="output html">{data}</div>'
    if t in ("png", "jpeg"): return f'<div class="output"><img alt="output" src="data:image/{t};base64,{data.strip()}"></div>'
    if t == "svg": return f'<div class="output">{data}</div>'
    return f'<pre class="output">{html.escape(data)}</pre>'


def blocks_html(blocks: list, md) -> str:
    "A page's blocks: exported cells folded after their show_doc, as nbdev's `mv_exports` does for `exports`."
    parts, i = [], 0
    while i < len(blocks):
        b = blocks[i]; i += 1
        if b["kind"] == "md": parts.append(f'<div class="md">{md(b["text"])}</div>'); continue
        if b["kind"] == "doc":
            parts.append('<div class="doc">' + "".join(_output_html(o, md) for o in b["outputs"]) + "</div>"); continue
        docs = []
        while b.get("exported") and i < len(blocks) and blocks[i]["kind"] == "doc":
            docs.append('<div class="doc">' + "".join(_output_html(o, md) for o in blocks[i]["outputs"]) + "</div>"); i += 1
        parts.extend(docs)
        code = _highlight(b["src"]) if b["src"].strip() else ""
        if b.get("exported") and code:
            code = f'<details class="exported"><summary>Exported source</summary>{code}</details>'
        outs = "".join(_output_html(o, md) for o in b["outputs"])
        if code or outs: parts.append(f'<div class="cell">{code}{outs}</div>')
    return "\n".join(parts)


# --------------------------------------------------------------------------- the site

CSS = """
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; }
.layout { display: flex; min-height: 100vh; }
nav.sidebar { flex: 0 0 15rem; background: #f5f6f8; border-right: 1px solid #e1e4e8; padding: 1rem; font-size: 0.92rem; }
nav.sidebar .site { font-weight: 700; font-size: 1.2rem; display: block; margin-bottom: 0.8rem; }
nav.sidebar h4 { margin: 1rem 0 0.3rem; color: #57606a; font-size: 0.8rem; text-transform: uppercase; }
nav.sidebar ul { list-style: none; padding: 0; margin: 0; }
nav.sidebar li a { display: block; padding: 0.15rem 0.4rem; border-radius: 4px; text-decoration: none; color: #1d1d1f; }
nav.sidebar li a.current { background: #dde3ea; font-weight: 600; }
main { flex: 1; max-width: 60rem; padding: 1.5rem 2.5rem 4rem; overflow-x: auto; }
main h1 { margin-top: 0.3rem; }
p.description { font-size: 1.1rem; color: #57606a; border-left: 4px solid #d0d7de; padding-left: 0.8rem; }
a { color: #0b57d0; }
code { font: 0.88em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f2f3f5; padding: 0.05em 0.25em; border-radius: 3px; }
pre code, .highlight code { background: none; padding: 0; }
.highlight, pre.output { background: #f7f8fa; border: 1px solid #e6e8eb; border-radius: 6px; padding: 0.6rem 0.8rem; overflow-x: auto; font-size: 0.85rem; }
.highlight pre { margin: 0; }
pre.output { background: #fff; border-style: dashed; }
.cell { margin: 0.8rem 0; }
details.exported summary { cursor: pointer; color: #57606a; font-size: 0.85rem; }
.doc { border: 1px solid #d0d7de; border-radius: 6px; padding: 0.2rem 1rem 0.6rem; margin: 1rem 0; background: #fcfcfd; }
h3.symbol code { font-size: 1.05rem; background: none; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f5f6f8; }
.katex-display { overflow-x: auto; overflow-y: hidden; padding: 0.2rem 0; }
.output img, figure img { max-width: 100%; }
figure { margin: 1.2rem 0; } figcaption { color: #57606a; font-size: 0.85rem; }
ul.pages li { margin: 0.3rem 0; }
"""


def page_html(title: str, description: str | None, body: str, current: str, nav: list, rel: str) -> str:
    groups: dict = {}
    for href, label, group in nav: groups.setdefault(group, []).append((href, label))
    items = []
    for group, links in groups.items():
        cur = ' class="current"'
        lis = "".join(f'<li><a href="{rel}{href}"{cur if href == current else ""}>{html.escape(label)}</a></li>'
                      for href, label in links)
        items.append(f"<h4>{html.escape(group)}</h4><ul>{lis}</ul>")
    desc = f'<p class="description">{description}</p>' if description else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(html.unescape(_PH.sub("", re.sub(r"<[^>]+>", "", title))))} – {SITE_TITLE}</title>
<link rel="stylesheet" href="{rel}katex/katex.min.css">
<link rel="stylesheet" href="{rel}style.css">
</head>
<body>
<div class="layout">
<nav class="sidebar"><a class="site" href="{rel}index.html">{SITE_TITLE}</a>{"".join(items)}</nav>
<main>
<h1>{title}</h1>
{desc}
{body}
</main>
</div>
</body>
</html>
"""


def results_markdown(results: Path) -> tuple[str, list[Path], int]:
    """The results page's markdown: every table of `results/tables/*.md` and `results/bench/*.md`, every figure of
    `results/figures/**/*.png` (as `results/...` images), or a note to run `make repro` first; the figures; the tables' count."""
    tables = [p for sub in ("tables", "bench") for p in sorted((results / sub).glob("*.md"))] if results.is_dir() else []
    figures = sorted((results / "figures").rglob("*.png")) if (results / "figures").is_dir() else []
    if not tables and not figures:
        return ("No results yet: run `make repro` first. This page lists the pipeline's tables (`results/tables/*.md`, "
                "`results/bench/*.md`) and figures (`results/figures/**/*.png`) when they exist.", [], 0)
    demote = lambda md: re.sub(r"^(#{1,5}) ", r"#\1 ", md, flags=re.M)          # a table's own title under its file's heading
    parts = [f"## {t.relative_to(results).as_posix()}\n\n" + demote(t.read_text(encoding="utf-8")) for t in tables]
    if figures:
        parts.append("## Figures\n\n" + "\n\n".join(
            f'<figure><img src="results/{f.relative_to(results).as_posix()}" alt="{html.escape(f.stem)}">'
            f"<figcaption>results/{f.relative_to(results).as_posix()}</figcaption></figure>" for f in figures))
    return "\n\n".join(parts), figures, len(tables)


def build(out: Path, results: Path, jobs: int = 2) -> dict:
    "Write the site into `out` (replaced); returns the manifest, also written as `out/manifest.json`."
    t0 = time.time()
    ensure_katex()
    nbs = notebooks()
    sys.path[:0] = [str(ROOT), str(ROOT / "tools")]              # the notebooks' shells import this checkout's pat and build_docs
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tools"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    import build_docs                                            # by its module name: IPython's shell replaces a worker's __main__
    with ProcessPoolExecutor(max(1, min(jobs, len(nbs))), mp_context=get_context("fork")) as pool:
        pages = list(pool.map(build_docs._worker, [str(p) for p in nbs]))
    failed = [p for p in pages if "error" in p]
    if failed:
        raise SystemExit("build_docs: nbdev could not process " + "; ".join(f"{p['source']}: {p['error']}" for p in failed))
    t_proc = time.time() - t0

    if out.exists():
        if any(out.iterdir()) and not (out / "manifest.json").exists():
            raise SystemExit(f"build_docs: {out} exists and is not a site built here (no manifest.json): not replacing it")
        shutil.rmtree(out)
    (out / "katex").mkdir(parents=True)
    shutil.copy2(KATEX / "dist" / "katex.min.css", out / "katex" / "katex.min.css")
    shutil.copytree(KATEX / "dist" / "fonts", out / "katex" / "fonts")
    from pygments.formatters import HtmlFormatter
    (out / "style.css").write_text(CSS + HtmlFormatter(style="default").get_style_defs(".highlight"))

    # the results page, a markdown source like the notebooks'
    res_md, figures, n_tables = results_markdown(results)
    for f in figures:
        dst = out / "results" / f.relative_to(results)
        dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(f, dst)
    pages.append({"source": "results/", "page": "results.html", "title": "Results",
                  "description": f"The tables and figures of the last `make repro` ({n_tables} tables, {len(figures)} figures).",
                  "blocks": [{"kind": "md", "text": res_md}]})

    nav = [(p["page"], re.sub(r"`([^`]*)`", r"\1", p["title"]), "Experiments" if p["page"].startswith("experiments/") else "Results" if p["page"] == "results.html"
            else "Library") for p in pages if p["page"] != "index.html"]
    index = next(p for p in pages if p["page"] == "index.html")
    index["blocks"].append({"kind": "md", "text": "## Pages\n\n" + "\n".join(
        f"- [{p['title']}]({p['page']})" + (f": {p['description']}" if p.get("description") else "")
        for p in pages if p["page"] != "index.html")})

    # every page to HTML with placeholders, then all formulas in one KaTeX call
    symbols = load_symbols()
    formulas: list = []
    drafts = []
    for p in pages:
        rel = "../" * p["page"].count("/")
        slugs = {m for b in p["blocks"] if b["kind"] == "doc" for o in b["outputs"]   # show_doc anchors keep their ids
                 for m in re.findall(r'<h3 class="symbol" id="([^"]+)"', o["data"])}
        first = len(formulas)
        def md(text, rel=rel, slugs=slugs):
            return link_symbols(markdown_html(extract_math(text, formulas), slugs), symbols, rel)
        body = blocks_html(p["blocks"], md)
        title = md(p["title"]).strip().removeprefix("<p>").removesuffix("</p>")
        desc = md(p["description"]).strip().removeprefix("<p>").removesuffix("</p>") if p.get("description") else None
        drafts.append((p, page_html(title, desc, body, p["page"], nav, rel), first, len(formulas)))
    rendered, errors = render_formulas(formulas)
    manifest = {"pages": [], "formula_errors": errors}
    for p, draft, a, b in drafts:
        text = _PH.sub(lambda m: rendered[int(m.group(1))], draft)
        dst = out / p["page"]; dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")
        manifest["pages"].append({"source": p["source"], "page": p["page"], "title": p["title"],
                                  "formulas": b - a, "display_formulas": sum(d for _, d in formulas[a:b])})
    manifest["seconds"] = {"nbdev_processing": round(t_proc, 1), "total": round(time.time() - t0, 1)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "_site"), help="the site's folder (replaced); default _site/")
    ap.add_argument("--results", default=str(ROOT / "results"), help="the pipeline's results folder; default results/")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="notebooks processed at once")
    a = ap.parse_args(argv)
    m = build(Path(a.out).resolve(), Path(a.results).resolve(), a.jobs)
    n = sum(p["formulas"] for p in m["pages"])
    print(f"build_docs: {len(m['pages'])} pages, {n} formulas into {a.out} in {m['seconds']['total']} s "
          f"(nbdev processing {m['seconds']['nbdev_processing']} s)")
    if m["formula_errors"]:
        print(f"build_docs: {len(m['formula_errors'])} formulas failed to render:\n  " + "\n  ".join(m["formula_errors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
