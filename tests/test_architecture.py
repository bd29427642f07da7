"""The layer diagram in docs/architecture.md is the one the imports follow.

The table there lists each layer's modules, bottom first; a module may import its own layer and
the layers below it, never one above. Every ``import`` counts, including the ones inside
functions and under ``TYPE_CHECKING``: a lazy import still makes the lower layer depend on the
upper one. The test reads the table itself, so the document cannot drift from what is enforced.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"


def _layers() -> list[list[str]]:
    """Module prefixes per layer, bottom first, from the table rows ``| n | `a`, `b` | ...``."""
    layers: dict[int, list[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            layers[int(m.group(1))] = re.findall(r"`(unsee[\w.]*)`", m.group(2))
    assert layers, "docs/architecture.md has no layer table"
    return [layers[k] for k in sorted(layers)]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "unsee").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Every unsee module ``module`` imports (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from unsee.erase import methods` imports the submodule, not only the package
            found.update(f"{base}.{a.name}" for a in node.names)
    return {name for name in found if name == "unsee" or name.startswith("unsee.")}


def _layer_of(module: str, layers: list[list[str]]) -> int | None:
    """Index of the layer whose longest prefix matches ``module``; None when none does."""
    best: tuple[int, int] | None = None
    for i, prefixes in enumerate(layers):
        for prefix in prefixes:
            # `unsee` names the package's __init__ only, not everything below it
            covers = module == prefix or (prefix != "unsee" and module.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def test_every_module_has_a_layer():
    layers = _layers()
    missing = sorted(m for m in _modules() if _layer_of(m, layers) is None)
    assert not missing, f"modules not in docs/architecture.md's layer table: {missing}"


def test_no_module_imports_a_layer_above_its_own():
    layers, modules = _layers(), _modules()
    upward = []
    for module, path in modules.items():
        own = _layer_of(module, layers)
        for target in _imports(module, path):
            if target not in modules:
                continue  # a name imported from a package (`from unsee.x import y`)
            there = _layer_of(target, layers)
            if own is not None and there is not None and there > own:
                upward.append(f"{module} (layer {own + 1}) imports {target} (layer {there + 1})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_circle_between_modules():
    """Strongly connected groups of modules (Tarjan); a package's ``__init__`` re-exporting its
    own submodules is not a circle with them."""
    modules = _modules()
    graph = {
        m: {
            t
            for t in _imports(m, p)
            if t in modules and t != m and not (t.startswith(m + ".") and p.name == "__init__.py")
        }
        for m, p in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule bites: a lower-layer module importing an upper one is reported."""
    layers = _layers()
    low_mod, high_mod = layers[0][0], layers[-1][0]
    fake = tmp_path / "m.py"
    fake.write_text(f"def f():\n    from {high_mod} import x\n", encoding="utf-8")
    imported = _imports(low_mod, fake)
    assert high_mod in imported
    assert _layer_of(high_mod, layers) > _layer_of(low_mod, layers)
