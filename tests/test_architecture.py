"""The package keeps the shape docs/architecture.md draws: layers that import only downwards, no import
circle (lazy imports inside functions count too), front-ends that reach the engine only through the
public API, and modules short enough to read in one sitting."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vecsearch"
MAX_LINES = 500

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundations": ("version", "errors", "results", "faults", "pathutil", "sizes", "schema"),
    "components": (
        "images",
        "sidecars",
        "embedded_captions",
        "crawl",
        "encoders",
        "store",
        "plan",
        "tuning",
        "rerank",
        "vectors",
        "shard_build",
        "manifest",
        "lock",
        "home",
        "query",
        "classify",
        "label_cache",
        "thumbnails",
        "terminal_preview",
    ),
    "jobs": (
        "vector_file",
        "vector_build",
        "model",
        "roots",
        "pipeline",
        "chunks",
        "captions",
        "indexer",
        "embedding",
        "lookup",
        "retrieval",
        "check",
        "duplicates",
        "tags",
        "browse",
        "scale",
    ),
    "facade": ("collection", "index"),
    "public API": ("",),  # vecsearch/__init__.py
    "front-ends": ("cli", "serve", "__main__"),
}
# What the command line and the server may use besides the public API: helpers that know nothing of how
# an index is stored or searched.
FRONT_END_HELPERS = {
    "errors",
    "results",
    "query",
    "images",
    "thumbnails",
    "terminal_preview",
    "sizes",
    "home",
    "classify",
    "encoders",
    "version",
    "sidecars",
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name without the leading 'vecsearch.' ('' for the package)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its code (top level, functions, type checks)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(["vecsearch", *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from .x import y`: the module x.y where y is one, else the module x that defines y
            targets = [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            if target != "vecsearch" and not target.startswith("vecsearch."):
                continue
            inner = target[len("vecsearch.") :] if target != "vecsearch" else ""
            while inner not in known and inner:
                inner = inner.rpartition(".")[0]
            if inner in known and inner != name:
                found.add(inner)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_of(name: str) -> int:
    top = name.split(".")[0]
    for number, members in enumerate(LAYERS.values()):
        if top in members:
            return number
    raise AssertionError(f"vecsearch.{name} belongs to no layer: add it to LAYERS and to docs/architecture.md")


def test_every_module_has_a_layer_and_imports_only_downwards() -> None:
    wrong = []
    for name, targets in graph().items():
        for target in targets:
            if layer_of(target) > layer_of(name):
                wrong.append(f"vecsearch.{name} imports vecsearch.{target} from a higher layer")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circle() -> None:
    edges = graph()
    circles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_front_ends_use_the_public_api_not_the_engine() -> None:
    wrong = []
    front = len(LAYERS) - 1
    for name, targets in graph().items():
        if layer_of(name) != front:
            continue
        for target in targets:
            if target == "" or target.split(".")[0] in FRONT_END_HELPERS or layer_of(target) == front:
                continue
            wrong.append(f"vecsearch.{name} reaches into vecsearch.{target}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("name", sorted(modules()), ids=lambda name: name or "__init__")
def test_modules_stay_short(name: str) -> None:
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"vecsearch/{name} has {lines} lines: split it by job"


def test_the_architecture_page_names_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z_]+(?:/[a-z_]+)?)(?:\.py|/)`", page))
    missing = []
    for name in modules():
        top = name.split(".")[0]
        if not name or top == "__main__":
            continue
        as_path = name.replace(".", "/")
        if top in ("cli", "serve", "encoders"):
            if top not in named and as_path not in named:
                missing.append(name)
        elif as_path not in named:
            missing.append(name)
    assert not missing, f"docs/architecture.md does not name: {sorted(missing)}"


def test_the_checker_sees_an_import_circle(tmp_path: Path) -> None:
    """The graph is built from the code, lazy imports included: a circle through a function body is found."""
    package = tmp_path / "vecsearch"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from .b import g\n")
    (package / "b.py").write_text("from . import a\n")
    known = {"": package / "__init__.py", "a": package / "a.py", "b": package / "b.py"}
    assert imports_of("a", known["a"], known) == {"b"}
    assert imports_of("b", known["b"], known) == {"a"}
