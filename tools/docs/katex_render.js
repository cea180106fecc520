// Renders formulas with KaTeX for tools/build_docs.py, so that the pages need no JavaScript to show them.
// stdin: a JSON list of [tex, display]; stdout: a JSON list of [html, error], error null when KaTeX parsed the
// formula. A formula that fails is rendered as KaTeX's red `katex-error` span and its message returned.
const path = require("path");
const katex = require(path.join(__dirname, "node_modules", "katex"));

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const out = JSON.parse(input).map(([tex, display]) => {
    const options = { displayMode: display, throwOnError: true, strict: "ignore", output: "htmlAndMathml" };
    try {
      return [katex.renderToString(tex, options), null];
    } catch (e) {
      const message = String((e && e.message) || e);
      try {
        return [katex.renderToString(tex, { ...options, throwOnError: false }), message];
      } catch (e2) {
        const esc = tex.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
        return [`<span class="katex-error" title="${message.replace(/"/g, "&quot;")}">${esc}</span>`, message];
      }
    }
  });
  process.stdout.write(JSON.stringify(out));
});
