"""
How tmta's AMP values and boxes are written: record lists as compact
JSON, and a box in one pass.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Sequence, Tuple

from twisted.protocols import amp

#: One encoder for every record list: C{json.dumps} with options builds a
#: new one each call.
_compactJSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class RecordList(amp.Argument):
    """
    A list of flat records (each a dict of C{str} and C{int} fields) in
    one AMP value, as a JSON array of arrays.

    C{amp.AmpList} serialises every field of every record as a key and a
    value of a nested box; decoding that costs more than the rest of a
    small command.  One JSON value, parsed in C and then checked field
    by field against the declared shape, says the same for a fraction of
    the work.  Like every AMP value it holds at most 65,535 bytes.
    """

    def __init__(self, fields: Sequence[Tuple[Any, ...]], optional: bool = False) -> None:
        super().__init__(optional)
        self.fields = [(field[0], field[1]) for field in fields]
        #: Defaults of the trailing fields that have one: a record may
        #: leave them out, and they are left off the wire when they
        #: have their default (older peers send and expect none).
        self.defaults = {field[0]: field[2] for field in fields if len(field) > 2}
        names = [field[0] for field in fields]
        if any(name not in self.defaults for name in names[len(names) - len(self.defaults):]):
            raise TypeError("only trailing fields may have defaults")
        self.required = len(names) - len(self.defaults)
        for name, kind in self.fields:
            if kind not in (str, int):
                raise TypeError(f"field {name}: only str and int fields are supported")

    def toString(self, records: List[Dict[str, Any]]) -> bytes:
        if not self.defaults:
            rows = [[record[name] for name, _ in self.fields] for record in records]
        else:
            rows = []
            for record in records:
                row = [record.get(name, self.defaults.get(name)) for name, _ in self.fields]
                while len(row) > self.required and row[-1] == self.defaults[
                        self.fields[len(row) - 1][0]]:
                    row.pop()
                rows.append(row)
        return _compactJSON.encode(rows).encode("utf-8")

    def fromString(self, data: bytes) -> List[Dict[str, Any]]:
        rows = json.loads(data.decode("utf-8"))
        if not isinstance(rows, list):
            raise ValueError("a record list must be a JSON array")
        width = len(self.fields)
        required = self.required
        records = []
        for row in rows:
            if not isinstance(row, list) or not required <= len(row) <= width:
                raise ValueError(f"a record must be an array of {width} fields")
            record = {}
            for (name, kind), value in zip(self.fields, row):
                if type(value) is not kind:
                    raise ValueError(f"field {name} must be {kind.__name__}")
                record[name] = value
            for name, _ in self.fields[len(row):]:
                record[name] = self.defaults[name]
            records.append(record)
        return records


def serializeBox(box: Dict[bytes, bytes]) -> bytes:
    """
    A box in AMP's wire format, as C{AmpBox.serialize} writes it but in
    one pass and in the box's own key order (AMP does not order keys).

    @raise TypeError: a key or value is not C{bytes}.
    @raise amp.TooLong: a key or value is over AMP's limits.
    """
    parts: List[bytes] = []
    append = parts.append
    for key, value in box.items():
        if type(key) is not bytes or type(value) is not bytes:
            raise TypeError(f"AMP keys and values must be bytes: {key!r}: {value!r}")
        if len(key) > amp.MAX_KEY_LENGTH:
            raise amp.TooLong(True, True, key, None)
        if len(value) > amp.MAX_VALUE_LENGTH:
            raise amp.TooLong(False, True, value, key)
        append(len(key).to_bytes(2, "big"))
        append(key)
        append(len(value).to_bytes(2, "big"))
        append(value)
    append(b"\0\0")
    return b"".join(parts)
