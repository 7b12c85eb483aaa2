"""
tmta's public API is declared once: L{tmta.PUBLIC_MODULES}, each with
its C{__all__}.  These tests hold the package's docstring, the modules'
C{__all__} and the API documentation's privacy rules (C{setup.cfg}) to
that declaration, so that none of them can drift from the others.
"""

import configparser
import importlib
import json
import os
import re
from typing import List, Set

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.interface import InterfaceClass

import tmta
from tests.support import REPO


def exported() -> Set[str]:
    """
    Every public name, as C{module.name}.
    """
    names = set()
    for moduleName in tmta.PUBLIC_MODULES:
        module = importlib.import_module(moduleName)
        names.update(f"{moduleName}.{name}" for name in module.__all__)
    return names


def privacyRules() -> List[str]:
    """
    The pydoctor privacy rules that make every module private but the
    public names, and those names' own private members.
    """
    rules = ["PRIVATE:tmta.*", "PUBLIC:tmta.PUBLIC_MODULES"]
    for moduleName in tmta.PUBLIC_MODULES:
        rules.append(f"PUBLIC:{moduleName}")
    for name in sorted(exported()):
        rules += [f"PUBLIC:{name}", f"PUBLIC:{name}.*", f"PRIVATE:{name}._*"]
    return rules


class PublicAPITests(SynchronousTestCase):
    def test_everyExportExists(self):
        """
        Each name in a public module's C{__all__} is defined there, once.
        """
        for moduleName in tmta.PUBLIC_MODULES:
            module = importlib.import_module(moduleName)
            self.assertEqual(len(module.__all__), len(set(module.__all__)), moduleName)
            for name in module.__all__:
                self.assertTrue(hasattr(module, name), f"{moduleName}.{name}")

    def test_docstringPromisesWhatIsExported(self):
        """
        The package docstring names every exported name and nothing
        else; a module it names whole (L{tmta.interfaces}) exports every
        interface it defines.
        """
        linked = set(re.findall(r"L\{(tmta\.[\w.]+)\}", tmta.__doc__))
        wholeModules = linked & set(tmta.PUBLIC_MODULES)
        promised = linked - wholeModules
        for moduleName in wholeModules:
            module = importlib.import_module(moduleName)
            promised.update(f"{moduleName}.{name}" for name in module.__all__)
        self.assertEqual(promised, exported())

    def test_everyInterfaceExported(self):
        """
        Every interface L{tmta.interfaces} defines is public.
        """
        import tmta.interfaces as interfaces

        defined = {name for name, value in vars(interfaces).items()
                   if isinstance(value, InterfaceClass)
                   and value.__module__ == "tmta.interfaces"}
        self.assertEqual(defined, set(interfaces.__all__))

    def test_exportsDocumented(self):
        """
        Each exported class and function says what it is.
        """
        for name in exported():
            moduleName, _, attribute = name.rpartition(".")
            value = getattr(importlib.import_module(moduleName), attribute)
            if callable(value):
                self.assertTrue((value.__doc__ or "").strip(), name)

    def test_apiDocumentationPrivacy(self):
        """
        C{setup.cfg}'s pydoctor privacy rules are the ones the
        declaration gives: C{python -c 'from tests.test_publicapi import
        privacyRules as r; import json; print(json.dumps(r()))'} prints
        them anew.
        """
        parser = configparser.ConfigParser()
        parser.read(os.path.join(REPO, "setup.cfg"))
        self.assertEqual(json.loads(parser["tool:pydoctor"]["privacy"]), privacyRules())
