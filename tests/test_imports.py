"""
tmta's packages depend on each other without cycles: the shared
mechanisms (tmta.common, tmta.wire, tmta.queue, tmta.config, ...) import
no daemon, so any daemon can be read, tested and replaced on its own.
"""

import ast
import os
from typing import Dict, List, Set

from twisted.trial.unittest import SynchronousTestCase

import tmta

ROOT = os.path.dirname(tmta.__file__)


def unitOf(module: str) -> str:
    """
    The unit a module belongs to: its package under tmta (tmta.smtpd),
    or the module itself for tmta's top-level modules (tmta.wire).
    """
    parts = module.split(".")
    return ".".join(parts[:2])


def moduleName(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
    return relative[: -len(".__init__")] if relative.endswith(".__init__") else relative


def importsOf(path: str, module: str) -> Set[str]:
    """
    Every tmta module C{path} imports, at module level or inside a
    function.
    """
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)
    return {name for name in found if name == "tmta" or name.startswith("tmta.")}


def dependencyGraph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            module = moduleName(path)
            unit = unitOf(module)
            for imported in importsOf(path, module):
                other = unitOf(imported)
                if other != unit and other != "tmta":
                    graph.setdefault(unit, set()).add(other)
    return graph


def findCycle(graph: Dict[str, Set[str]]) -> List[str]:
    """
    One cycle in C{graph}, as the list of its nodes, or C{[]}.
    """
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if state.get(other) == 1:
                return stack[stack.index(other):] + [other]
            if other not in state:
                cycle = visit(other)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


class ImportCycleTests(SynchronousTestCase):
    def test_findCycle(self):
        self.assertEqual(findCycle({"a": {"b"}, "b": {"c"}}), [])
        self.assertEqual(findCycle({"a": {"b"}, "b": {"a"}}), ["a", "b", "a"])

    def test_noCycleAmongPackages(self):
        cycle = findCycle(dependencyGraph())
        self.assertEqual(cycle, [], " -> ".join(cycle))

    def test_sharedUnitsImportNoDaemon(self):
        """
        The shared units, Postfix's src/global, import none of the
        daemons.
        """
        daemons = {f"tmta.{name}" for name in
                   ("master", "smtpd", "cleanup", "qmgr", "local", "bounce", "rewrite",
                    "delivery")}
        graph = dependencyGraph()
        for shared in ("tmta.common", "tmta.wire", "tmta.queue", "tmta.config",
                       "tmta.tables", "tmta.address", "tmta.logging",
                       "tmta.batching", "tmta.replies", "tmta.interfaces"):
            self.assertEqual(graph.get(shared, set()) & daemons, set(), shared)
