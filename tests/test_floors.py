"""The three floors (docs: README "Layout", ../shared/design.md), read off the import graph.

1. `attest` is pure: it imports the standard library, `cryptography`, PyNaCl (`nacl`, libsodium's
   Ed25519 as a fast path), `pydantic`, `rfc8785` and itself, nothing else (no I/O libraries, no
   other package of ours).
2. `ledger` and `verifier` are services: they import no `clients` and no torch / transformers.
3. `clients` are applications; only `clients.probe` imports torch or transformers.

Also: no import circle between modules (function-level imports included), and the `bledger`
command line starts without importing torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("attest", "ledger", "verifier", "clients")
ATTEST_ALLOWED = {"cryptography", "nacl", "pydantic", "rfc8785", "attest"}
HEAVY = {"torch", "transformers"}


def _modules() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


def _imports(path: Path, *, top_level_only: bool) -> Iterator[str]:
    """Absolute names `path` imports; with `top_level_only`, only those run at import time
    (module body, not inside functions; `if TYPE_CHECKING:` blocks are skipped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    nodes: list[ast.AST] = list(tree.body) if top_level_only else list(ast.walk(tree))
    while nodes:
        node = nodes.pop()
        if top_level_only and isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" not in test:
                nodes.extend(node.body + node.orelse)
            continue
        if top_level_only and isinstance(node, ast.Try):
            nodes.extend(node.body + node.orelse + node.finalbody)
            for h in node.handlers:
                nodes.extend(h.body)
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


MODULES = dict(_modules())


def _root(name: str) -> str:
    return name.split(".")[0]


def _violations(prefix: str, bad: object) -> list[str]:
    out = []
    for mod, path in MODULES.items():
        if mod != prefix and not mod.startswith(prefix + "."):
            continue
        for name in set(_imports(path, top_level_only=False)):
            if callable(bad) and bad(mod, name):
                out.append(f"{mod} imports {name}")
    return sorted(out)


def test_attest_imports_only_the_standard_library_and_its_allowed_packages() -> None:
    def bad(mod: str, name: str) -> bool:
        root = _root(name)
        return root not in sys.stdlib_module_names and root not in ATTEST_ALLOWED

    assert _violations("attest", bad) == []


@pytest.mark.parametrize("service", ["ledger", "verifier"])
def test_services_import_no_application_and_no_torch(service: str) -> None:
    assert _violations(service, lambda m, n: _root(n) in {"clients", *HEAVY}) == []


def test_only_the_probing_worker_imports_torch() -> None:
    def bad(mod: str, name: str) -> bool:
        in_probe = mod == "clients.probe" or mod.startswith("clients.probe.")
        return _root(name) in HEAVY and not in_probe

    assert _violations("clients", bad) == []


def test_no_import_circle() -> None:
    graph: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        deps = set()
        # Every import counts, also those inside functions: an import moved into a function
        # to dodge a circle still makes the two modules depend on each other.
        for name in _imports(path, top_level_only=False):
            # `from a.b import c` names a.b.c when c is a module, else a.b.
            target = name if name in MODULES else name.rpartition(".")[0]
            if target in MODULES and target != mod:
                deps.add(target)
        graph[mod] = deps
    cycles = _cycles(graph)
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted.

    Package `__init__` edges are left out: importing `a.b` runs `a/__init__` first, which is no
    circle unless `a/__init__` imports `a.b` back (checked because the edge is kept then).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_command_line_starts_without_torch() -> None:
    code = (
        "import sys, clients.cli\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert res.stdout.strip() == ""
