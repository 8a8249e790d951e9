"""scripts/check_imports.py: module cycles and package cycles (a subpackage standing for everything under it) are
found and described with their import lines; imports under TYPE_CHECKING and inside functions count; a graph that
imports one way has none."""

from __future__ import annotations

import importlib.util
import textwrap
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_imports", ROOT / "scripts" / "check_imports.py")
check_imports = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_imports)


def graph_of(*imports: tuple[str, str]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for line, (importer, imported) in enumerate(imports, start=1):
        for module in (importer, imported):
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):
                graph.add_module(".".join(parts[:depth]))
        graph.add_import(importer=importer, imported=imported, line_number=line, line_contents=f"import {imported}")
    return graph


def test_a_module_cycle_is_found_with_its_lines():
    found = check_imports.cycles(graph_of(("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.a", "p.d")))
    assert found == [["module cycle (3 modules): p.a, p.b, p.c", "    p.a -> p.b (l.1)", "    p.b -> p.c (l.2)",
                      "    p.c -> p.a (l.3)"]]


def test_subpackages_that_import_each_other_are_a_cycle_without_any_module_cycle():
    found = check_imports.cycles(graph_of(("p.model.layers", "p.parallel.group"),
                                          ("p.parallel.launch", "p.model.deepseek")))
    assert found == [["package cycle in p: p.model <-> p.parallel",
                      "    p.model -> p.parallel, e.g. p.model.layers -> p.parallel.group (l.1)",
                      "    p.parallel -> p.model, e.g. p.parallel.launch -> p.model.deepseek (l.2)"]]
    top = check_imports.cycles(graph_of(("a.x", "b.y"), ("b.z", "a")))
    assert [lines[0] for lines in top] == ["package cycle in the top level: a <-> b"]


def test_imports_one_way_have_no_cycle():
    assert check_imports.cycles(graph_of(("p", "p.a"), ("p.a", "p.b"), ("p.b", "q"), ("p.a", "q.x"),
                                         ("p.c.d", "p.b"), ("p.c", "p.c.d"))) == []


def test_type_checking_and_function_level_imports_count(tmp_path, monkeypatch):
    package = tmp_path / "hidden"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "commits.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from hidden.store import Store
    """))
    (package / "store.py").write_text("def load():\n    from hidden import commits\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("hidden", exclude_type_checking_imports=False, cache_dir=None)
    assert [lines[0] for lines in check_imports.cycles(graph)] == ["module cycle (2 modules): hidden.commits, "
                                                                   "hidden.store"]


def test_the_packages_checked_are_every_package_the_project_installs():
    with open(check_imports.ROOT / "pyproject.toml", "rb") as f:
        installed = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    assert set(check_imports.root_packages()) == {pattern.rstrip("*") for pattern in installed}
    assert {"foundation", "model_worker", "training"} <= set(check_imports.root_packages())


def test_a_long_chain_does_not_hit_the_recursion_limit():
    size = 3000  # past Python's default recursion limit (1000)
    chain = [(f"p.m{i}", f"p.m{i + 1}") for i in range(size)] + [(f"p.m{size}", "p.m0")]
    edges = {a: {b} for a, b in chain}
    assert [len(c) for c in check_imports.strongly_connected(set(edges), edges)] == [size + 1]
