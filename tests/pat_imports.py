"What a module of the package or a notebook imports, read from its source: the helper of the tests that check declared dependencies."
import ast, json, sys
from pathlib import Path

PAT = Path(__file__).resolve().parents[1] / "pat"


def imports(module: str) -> tuple[set, set, set]:
    """(third-party packages imported when `module` loads, third-party packages imported later (inside a function,
    class or `try`), pat modules it imports anywhere) for `pat/<module>.py`."""
    return source_imports((PAT / f"{module}.py").read_text())


def notebook_code(path: Path) -> str:
    "The code cells of a notebook as one source (a cell with an IPython magic would be a SyntaxError: none has one)."
    return "\n".join("".join(c["source"]) for c in json.loads(Path(path).read_text())["cells"] if c["cell_type"] == "code")


def source_imports(source: str) -> tuple[set, set, set]:
    "`imports` of a Python source."
    top, inner, own = set(), set(), set()
    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inside = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Try))
            if isinstance(child, ast.ImportFrom) and child.level:                       # from .x import y, from . import x
                own.update([child.module.split(".")[0]] if child.module else [a.name for a in child.names])
            elif isinstance(child, ast.ImportFrom) and child.module == "pat":                 # from pat import x
                own.update(a.name for a in child.names)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in ([a.name for a in child.names] if isinstance(child, ast.Import) else [child.module]):
                    if name.startswith("pat."): own.add(name.split(".")[1])
                    elif name != "pat" and name.split(".")[0] not in sys.stdlib_module_names:
                        (inner if inside else top).add(name.split(".")[0])
            visit(child, inside)
    visit(ast.parse(source), False)
    return top, inner, {m for m in own if (PAT / f"{m}.py").exists()}


def pat_closure(module: str, seen=None) -> set:
    "The pat modules `module` uses, directly or through others."
    seen = set() if seen is None else seen
    for m in imports(module)[2] - seen: seen.add(m); pat_closure(m, seen)
    return seen
