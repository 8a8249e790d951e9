"""No import cycles anywhere in the project's packages: `python scripts/check_imports.py` (scripts/test.sh runs it).

Two checks on grimp's import graph (every import counts: those under TYPE_CHECKING and those inside functions too, as
a cycle there is still two modules that need each other):
- modules: the strongly connected components of the module graph (a package's `__init__` is a module of its own);
- packages: for every package, the graph of its children, each subpackage standing for everything under it
  (`model <-> parallel` is a cycle even when no two single modules import each other).
Each cycle is printed with one closed path through it and the import lines that make it. Exit status 1 on any.
The packages are `[tool.importlinter] root_packages` of pyproject.toml (the contracts `lint-imports` checks)."""

from __future__ import annotations

import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import grimp
import networkx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the packages as they are in this checkout, installed or not


def root_packages() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["root_packages"]


def strongly_connected(nodes, edges: dict[str, set[str]]) -> list[list[str]]:
    """The components of more than one node (networkx's, iterative: a deep import chain is no problem), each
    sorted."""
    graph = networkx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from((a, b) for a, targets in edges.items() for b in targets)
    return sorted(sorted(c) for c in networkx.strongly_connected_components(graph) if len(c) > 1)


def closed_path(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first node back to itself, inside the component."""
    start, members = component[0], set(component)
    inside = networkx.DiGraph((a, b) for a in component for b in edges.get(a, ()) & members)
    back = min((networkx.shortest_path(inside, successor, start) for successor in sorted(inside.successors(start))),
               key=len)
    return [start, *back]


def child_of(package: str, module: str) -> str:
    """The child of `package` ('' for the top) that `module` lies in."""
    depth = package.count(".") + 1 if package else 0
    return ".".join(module.split(".")[: depth + 1])


def package_edges(graph: grimp.ImportGraph) -> tuple[dict[str, dict[str, set[str]]], dict[tuple[str, str], tuple]]:
    """Package -> its children's import graph; and, per child edge, one module import that makes it."""
    by_package: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    witness: dict[tuple[str, str], tuple[str, str]] = {}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = importer.split("."), imported.split(".")
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            if common == len(a) or common == len(b):
                continue  # a package and its own descendant: the module check sees those
            package = ".".join(a[:common])
            source, target = child_of(package, importer), child_of(package, imported)
            by_package[package][source].add(target)
            witness.setdefault((source, target), (importer, imported))
    return by_package, witness


def describe(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    lines = ", ".join(f"l.{d['line_number']}" for d in details) or "?"
    return f"{importer} -> {imported} ({lines})"


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every cycle of `graph`, each as the lines that describe it: module cycles, then package cycles (those that
    are not the same modules again)."""
    found, reported = [], set()
    module_edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    for component in strongly_connected(graph.modules, module_edges):
        reported.add(frozenset(component))
        path = closed_path(component, module_edges)
        found.append([f"module cycle ({len(component)} modules): {', '.join(component)}",
                      *(f"    {describe(graph, a, b)}" for a, b in zip(path, path[1:]))])
    by_package, witness = package_edges(graph)
    for package in sorted(by_package):
        edges = by_package[package]
        for component in strongly_connected(set(edges) | {t for ts in edges.values() for t in ts}, edges):
            if frozenset(component) in reported:
                continue  # sibling modules: described above
            path = closed_path(component, edges)
            found.append([f"package cycle in {package or 'the top level'}: {' <-> '.join(component)}",
                          *(f"    {a} -> {b}, e.g. {describe(graph, *witness[a, b])}" for a, b in zip(path, path[1:]))])
    return found


def main() -> int:
    packages = root_packages()
    graph = grimp.build_graph(*packages, exclude_type_checking_imports=False, cache_dir=None)
    found = cycles(graph)
    for lines in found:
        print("\n".join(lines))
    where = f"{len(graph.modules)} modules of {', '.join(packages)}"
    print(f"{len(found)} import cycle(s) among {where}" if found else f"no import cycles among {where}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
