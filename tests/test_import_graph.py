"""The layers point one way: walk every import in runtime/, build_engines/, scripts/ and
triton_repo/ (lazy ones inside functions included) and fail on a cycle or on an import from a
lower layer into a higher one.

Layers, lowest first (docs/architecture.md):
  core < config, task, wire, tiny models < engines < pipeline < assembly, eval < in_server
  < deploy < clients, frontends < cli < build_engines < scripts, triton_repo
scripts/ and triton_repo/ may import runtime and build_engines; nothing imports them, and they do
not import each other (a script imports its sibling scripts by their bare names, as
`from tinylm import ...` with scripts/ on sys.path).
"""
from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "build_engines", "scripts", "triton_repo")
SCRIPT_DIRS = ("scripts",)  # folders whose modules import their siblings by bare name

LAYERS: dict[str, int] = {
    "runtime": 0, "runtime.core": 0,  # runtime/__init__.py imports nothing
    "runtime.config": 1, "runtime.task": 1, "runtime.wire": 1,
    "runtime.tiny_models": 1, "runtime.smoke_models": 1,
    "runtime.engines": 2,
    "runtime.pipeline": 3,
    "runtime.assembly": 4, "runtime.eval": 4,
    "runtime.in_server": 5,
    "runtime.deploy": 6,
    "runtime.clients": 7, "runtime.frontends": 7,
    "runtime.cli": 8,
    "build_engines": 9,
    "scripts": 10, "triton_repo": 10,
}


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(tree: ast.AST, name: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """Project modules `name` imports (a package's `from p import sub` counts as `p.sub` only)."""
    known = set(known)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            targets.update(subs if len(subs) == len(node.names) else [base, *subs])
    result = set()
    folder = name.rpartition(".")[0]
    for target in targets:
        if folder in SCRIPT_DIRS and f"{folder}.{target}" in known:
            target = f"{folder}.{target}"  # a sibling script, imported by its bare name
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            result.add(target)
    return result


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    return {m: imported(ast.parse(p.read_text()), m, p.name == "__init__.py", mods) for m, p in mods.items()}


def layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and docs/architecture.md)")


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
                  for a, targets in edges.items() for b in targets if layer(b) > layer(a))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    for module in graph():
        layer(module)


def test_no_import_points_up() -> None:
    assert upward(graph()) == []


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_scripts_and_triton_models_are_imported_by_nothing_but_siblings() -> None:
    """Top-layer code (scripts/, triton_repo/) is imported by no other package, and the two never
    import each other; the walk sees every script and every model.py."""
    edges = graph()
    assert {"scripts.soak", "scripts.train_models", "triton_repo.rsd.1.model", "triton_repo.torch_lm.1.model"} <= set(edges)
    assert "scripts.tinylm" in edges["scripts.train_models"]  # a bare-name sibling import is seen
    top = ("scripts", "triton_repo")
    wrong = sorted(f"{a} imports {b}" for a, targets in edges.items() for b in targets
                   if b.split(".")[0] in top and a.split(".")[0] != b.split(".")[0])
    assert wrong == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The same walk on a tree with one upward import and one cycle reports both."""
    files = {
        "runtime/__init__.py": "",
        "runtime/core/__init__.py": "",
        "runtime/core/a.py": "from runtime.core import b\n",
        "runtime/core/b.py": "def f():\n    from runtime.core.a import x\n",  # lazy: still a cycle
        "runtime/engines/__init__.py": "",
        "runtime/engines/e.py": "from ..core import a\n",  # relative and downward: fine
        "runtime/core/up.py": "import runtime.engines.e\n",
        "build_engines/__init__.py": "",
        "scripts/tinylm.py": "",
        "scripts/train.py": "from tinylm import x\nfrom runtime.core import a\n",  # sibling by bare name
        "runtime/engines/uses_script.py": "import scripts.train\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    edges = graph(tmp_path)
    assert edges["runtime.engines.e"] == {"runtime.core.a"}
    assert cycles(edges) == [["runtime.core.a", "runtime.core.b"]]
    assert edges["scripts.train"] == {"scripts.tinylm", "runtime.core.a"}
    assert upward(edges) == ["runtime.core.up (layer 0) imports runtime.engines.e (layer 2)",
                             "runtime.engines.uses_script (layer 2) imports scripts.train (layer 10)"]


@pytest.mark.parametrize("package", ["runtime", "build_engines", "scripts", "triton_repo"])
def test_shipped_code_never_imports_test_support(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        text = path.read_text()
        assert "import pytest" not in text and "from support" not in text and "tests.support" not in text, path
