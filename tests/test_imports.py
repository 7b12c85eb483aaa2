"""
tmta's packages depend on each other without cycles: the shared
mechanisms (tmta.common, tmta.wire, tmta.queue, tmta.config, ...) import
no daemon, so any daemon can be read, tested and replaced on its own.
"""

import ast
import os
from typing import Dict, Iterator, List, Set, Tuple

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
    function (and each name it imports from one, as if a module).
    """
    found = set()
    for target in importTargets(path, module):
        found.add(target)
        found.add(target.rpartition(".")[0])
    return {name for name in found if name == "tmta" or name.startswith("tmta.")}


def sourceFiles() -> Iterator[Tuple[str, str]]:
    """
    C{(path, module name)} of every module under tmta.
    """
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                yield path, moduleName(path)


def dependencyGraph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for path, module in sourceFiles():
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

    def test_noCycleAmongFiles(self):
        """
        No module imports, however indirectly and even inside a
        function, a module that imports it back (its own package's
        C{__init__} aside): each file can be read from the bottom up.
        """
        modules = {module for _, module in sourceFiles()}
        graph: Dict[str, Set[str]] = {}
        for path, module in sourceFiles():
            for imported in importsOf(path, module):
                target = imported if imported in modules else imported.rpartition(".")[0]
                if target in modules and target != module \
                        and not module.startswith(target + "."):
                    graph.setdefault(module, set()).add(target)
        cycle = findCycle(graph)
        self.assertEqual(cycle, [], " -> ".join(cycle))

    def test_sharedUnitsImportNoDaemon(self):
        """
        The shared units, Postfix's src/global and src/util, import none
        of the daemons nor the programs built on them.
        """
        graph = dependencyGraph()
        for shared in SHARED:
            self.assertEqual(graph.get(shared, set()) & (DAEMONS | PROGRAMS), set(), shared)

    def test_layersBelowEachOther(self):
        """
        The mail-agnostic helpers import nothing mail-aware, and the wire
        between processes imports only them: each layer can be read
        without the ones above it.
        """
        graph = dependencyGraph()
        for unit in MAIL_AGNOSTIC:
            self.assertEqual(graph.get(unit, set()) - MAIL_AGNOSTIC, set(), unit)
        for unit in WIRE:
            self.assertEqual(graph.get(unit, set()) - MAIL_AGNOSTIC - WIRE, set(), unit)

    def test_everyUnitPlaced(self):
        """
        Every unit under tmta is a shared layer, a daemon or a program,
        so that the rules below cover it.
        """
        units = {unitOf(module) for _, module in sourceFiles()} - {"tmta"}
        self.assertEqual(units - SHARED - DAEMONS - PROGRAMS, set())

    def test_daemonsMeetOverAMPOnly(self):
        """
        A daemon imports the shared layers, and of another daemon only
        its client or its AMP commands: never its internals.
        """
        crossings = []
        for path, module in sourceFiles():
            unit = unitOf(module)
            if unit not in DAEMONS:
                continue
            for target in importTargets(path, module):
                other = unitOf(target)
                if other in DAEMONS and other != unit and not isClientSide(target):
                    crossings.append(f"{module} -> {target}")
        self.assertEqual(crossings, [])

    def test_isClientSide(self):
        self.assertTrue(isClientSide("tmta.verify.client.VerifyClient"))
        self.assertTrue(isClientSide("tmta.anvil.commands"))
        self.assertFalse(isClientSide("tmta.local.agent.identity"))
        self.assertFalse(isClientSide("tmta.pipe.PipeAgent"))


#: Mail-aware code several daemons share (Postfix's src/global): the
#: shared mail code itself, the queue, the configuration, tables, the
#: maillog, the delivery agents' contract, SASL's types, message
#: authentication and the seams.
MAIL_AWARE = frozenset(f"tmta.{name}" for name in (
    "mail", "milter", "queue", "config", "tables", "delivery", "sasl", "interfaces",
    "authentication"))

#: Mail-agnostic helpers (Postfix's src/util), and the log they write to.
MAIL_AGNOSTIC = frozenset({"tmta.common", "tmta.logging"})

#: The AMP conversation between processes.
WIRE = frozenset({"tmta.wire"})

#: The layers every daemon may use.
SHARED = MAIL_AWARE | MAIL_AGNOSTIC | WIRE

#: The master and the programs it runs.
DAEMONS = frozenset(f"tmta.{name}" for name in (
    "master", "smtpd", "cleanup", "qmgr", "local", "bounce", "rewrite", "pickup", "smtp",
    "pipe", "spawn", "showq", "virtual", "verify", "anvil", "postscreen", "proxymap"))

#: What users run or import on top of the daemons: the commands, tmta
#: embedded in an application, submission from a program.
PROGRAMS = frozenset(f"tmta.{name}" for name in ("cli", "embedded", "submission"))


def isClientSide(target: str) -> bool:
    """
    Whether an imported name is a daemon's client or AMP command module
    (or something in one): what other daemons may import of it.
    """
    parts = target.split(".")
    return len(parts) >= 3 and parts[2] in ("client", "commands")


def importTargets(path: str, module: str) -> Set[str]:
    """
    What C{path} imports, at module level or inside a function: each
    module of an C{import}, and each name of a C{from ... import} with
    its module (C{tmta.verify.commands} for C{from tmta.verify import
    commands}).
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
            found.update(f"{name}.{a.name}" for a in node.names)
    return {name for name in found if name.startswith("tmta.")}
