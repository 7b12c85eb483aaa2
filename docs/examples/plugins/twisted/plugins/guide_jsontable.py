"""
Plugin guide, example 1: a lookup table type.  C{json:/path/file.json}
names a JSON object whose keys and values are strings; it can stand
wherever main.cf takes a table (aliases, access tables, transport_maps).
"""

import json

from twisted.plugin import IPlugin
from zope.interface import implementer

from tmta.interfaces import ILookupTable, ILookupTableType


@implementer(ILookupTable)
class JSONTable:
    def __init__(self, path):
        # Read when opened: a worker may give up the rights to read it.
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a JSON object")
        self.entries = {str(k).lower(): str(v) for k, v in data.items()}

    def get(self, key):
        return self.entries.get(key.lower())


@implementer(IPlugin, ILookupTableType)
class JSONTableType:
    name = "json"

    def open(self, name):
        return JSONTable(name)


jsonTable = JSONTableType()
