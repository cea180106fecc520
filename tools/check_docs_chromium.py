#!/usr/bin/env python3
"""Loads every page of the built site (`make docs`) in headless Chromium and checks, in the rendered page, that
its formulas show: `python tools/check_docs_chromium.py [_site]`.

Per page (a copy with a small checking script appended; the site itself is not changed):
* as many KaTeX formulas as the build rendered (`manifest.json`), none of them a `katex-error`;
* KaTeX's CSS applied (each formula in the KaTeX_Main font, the MathML copy visually hidden) and every
  formula laid out with a non-zero size;
* the KaTeX fonts the page uses loaded from the site's `katex/fonts/` (none failed);
* no TeX left in the visible text outside code (`$...$`, `\\frac`, ...) and no nbdev directive (`#|`).
Exits with status 1 and one line per problem; needs `chromium` (or `--chromium PATH`).
"""
from __future__ import annotations

import argparse, html, json, re, shutil, subprocess, sys, tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHECK = r"""<script>
(async () => {
  const r = {};
  try {
    await document.fonts.ready;
    const ks = [...document.querySelectorAll('.katex')];
    r.formulas = ks.length;
    r.display = document.querySelectorAll('.katex-display').length;
    r.errors = [...document.querySelectorAll('.katex-error')].map(e => e.textContent.slice(0, 80));
    r.unstyled = ks.filter(k => !getComputedStyle(k).fontFamily.includes('KaTeX_Main')).length;
    r.mathml_shown = [...document.querySelectorAll('.katex-mathml')].filter(e => {
      const s = getComputedStyle(e); return s.position !== 'absolute' || e.getBoundingClientRect().width > 1.5; }).length;
    r.empty = ks.filter(k => { const h = k.querySelector('.katex-html'); const b = h && h.getBoundingClientRect();
      return !b || b.width < 1 || b.height < 1; }).length;
    const fonts = []; document.fonts.forEach(f => fonts.push([f.family.replace(/['"]/g, ''), f.status]));
    r.fonts_loaded = [...new Set(fonts.filter(f => f[0].startsWith('KaTeX') && f[1] === 'loaded').map(f => f[0]))].sort();
    r.fonts_failed = [...new Set(fonts.filter(f => f[0].startsWith('KaTeX') && f[1] === 'error').map(f => f[0]))].sort();
    const text = document.body.cloneNode(true);
    text.querySelectorAll('.katex, pre, code, script, .highlight').forEach(e => e.remove());
    r.raw_tex = (text.textContent.match(/\$\$[\s\S]+?\$\$|\$[^$\s][^$\n]*?[^$\s\\]\$(?!\d)|\\(frac|mathrm|log|sum|beta|epsilon|partial|left|right|begin)(?![A-Za-z])/g) || []).slice(0, 5);
    r.directives = (document.body.innerText.match(/^\s*#\|.*$/mg) || []).slice(0, 5);
  } catch (e) { r.exception = String(e); }
  const out = document.createElement('pre'); out.id = 'docs-check'; out.textContent = JSON.stringify(r);
  document.body.appendChild(out);
})();
</script>
"""


def find_chromium(name: str | None = None) -> str | None:
    for c in ([name] if name else ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]):
        if c and shutil.which(c): return shutil.which(c)
    return None


def load(chromium: str, page: Path, profile: Path) -> dict:
    "The checking script's result for one page, as Chromium rendered it."
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={profile}", "--window-size=1300,1000", "--virtual-time-budget=15000",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="docs-check">(.*?)</pre>', r.stdout, re.S)
    if not m: return {"exception": f"no result from chromium (exit {r.returncode}): {r.stderr.strip()[-300:]}"}
    return json.loads(html.unescape(m.group(1)))


def problems(page: dict, r: dict) -> list[str]:
    "What is wrong with one page, given the build's manifest entry and Chromium's result."
    if "exception" in r: return [r["exception"]]
    bad = []
    if r["formulas"] != page["formulas"]: bad.append(f"{r['formulas']} formulas shown, the build rendered {page['formulas']}")
    if r["display"] != page["display_formulas"]: bad.append(f"{r['display']} display formulas shown, the build rendered {page['display_formulas']}")
    if r["errors"]: bad.append(f"KaTeX errors: {r['errors']}")
    if r["unstyled"]: bad.append(f"{r['unstyled']} formulas without KaTeX's CSS (font)")
    if r["mathml_shown"]: bad.append(f"{r['mathml_shown']} MathML copies visible: KaTeX's CSS not applied")
    if r["empty"]: bad.append(f"{r['empty']} formulas laid out with zero size")
    if r["fonts_failed"]: bad.append(f"KaTeX fonts failed to load: {r['fonts_failed']}")
    if r["formulas"] and "KaTeX_Main" not in r["fonts_loaded"] and "KaTeX_Math" not in r["fonts_loaded"]:
        bad.append(f"no KaTeX font loaded (loaded: {r['fonts_loaded']})")
    if r["raw_tex"]: bad.append(f"TeX left in the text: {r['raw_tex']}")
    if r["directives"]: bad.append(f"nbdev directives visible: {r['directives']}")
    return bad


def check(site: Path, chromium: str, jobs: int = 2) -> tuple[list[str], int, int]:
    "Problems (one line each), pages checked, formulas checked."
    manifest = json.loads((site / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "site"
        shutil.copytree(site, copy)
        for p in manifest["pages"]:
            f = copy / p["page"]
            text = f.read_text(encoding="utf-8")
            if "</body>" not in text: raise SystemExit(f"{p['page']}: no </body>")
            f.write_text(text.replace("</body>", CHECK + "</body>", 1), encoding="utf-8")
        pages = manifest["pages"]
        with ThreadPoolExecutor(jobs) as ex:
            results = list(ex.map(lambda ip: load(chromium, copy / ip[1]["page"], Path(tmp) / f"profile{ip[0]}"), enumerate(pages)))
    out = [f"{p['page']}: {b}" for p, r in zip(pages, results) for b in problems(p, r)]
    return out, len(pages), sum(r.get("formulas", 0) for r in results)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("site", nargs="?", default=str(Path(__file__).resolve().parents[1] / "_site"))
    ap.add_argument("--chromium", help="the browser binary (default: chromium on PATH)")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    chromium = find_chromium(a.chromium)
    if chromium is None: raise SystemExit("check_docs_chromium: no chromium on PATH (apt-get install chromium)")
    site = Path(a.site)
    if not (site / "manifest.json").exists(): raise SystemExit(f"check_docs_chromium: {site} has no manifest.json: run make docs first")
    bad, n_pages, n_formulas = check(site, chromium, a.jobs)
    for b in bad: print(b, file=sys.stderr)
    print(f"check_docs_chromium: {n_pages} pages, {n_formulas} formulas checked in Chromium: "
          + ("all rendered" if not bad else f"{len(bad)} problems"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
