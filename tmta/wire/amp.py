"""
The base of tmta's AMP commands.

Every message crosses several AMP connections (smtpd to cleanup, qmgr to
a delivery agent and back), and for a small command Twisted's generic
argument layer costs about as much as everything else: for each argument
on each side it copies dictionaries, turns the wire name into a Python
name again and goes through three method calls.  L{Command} keeps the
same schema (C{arguments} and C{response} as Twisted declares them) and
the same wire format, and works out each argument's names once per
class.  An argument type that overrides how it reads or writes the box
(C{fromBox}, C{toBox} or C{retrieve}, as C{amp.AmpList} does not but
custom ones may) is still given the box to do so.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from twisted.internet.defer import fail
from twisted.protocols import amp

from tmta.common.twistedcompat import wireNameToIdentifier

# (wire name, Python name, argument, whether only its string conversion
# is its own)
_Field = Tuple[bytes, str, amp.Argument, bool]


def _plain(argument: amp.Argument) -> bool:
    kind = type(argument)
    return (
        kind.fromBox is amp.Argument.fromBox
        and kind.toBox is amp.Argument.toBox
        and kind.retrieve is amp.Argument.retrieve
    )


def _fields(schema) -> List[_Field]:
    return [
        (wireName, wireNameToIdentifier(wireName), argument, _plain(argument))
        for wireName, argument in schema
    ]


def _encode(fields: List[_Field], objects: Dict[str, Any], box, proto):
    remaining = None
    for wireName, name, argument, plain in fields:
        if not plain:
            if remaining is None:
                remaining = dict(objects)
            argument.toBox(wireName, box, remaining, proto)
        elif argument.optional:
            value = objects.get(name)
            if value is not None:
                box[wireName] = argument.toStringProto(value, proto)
        else:
            box[wireName] = argument.toStringProto(objects[name], proto)
    return box


def _decode(fields: List[_Field], box, proto) -> Dict[str, Any]:
    objects: Dict[str, Any] = {}
    remaining = None
    for wireName, name, argument, plain in fields:
        if not plain:
            if remaining is None:
                remaining = box.copy()
            argument.fromBox(wireName, remaining, objects, proto)
        elif argument.optional:
            value = box.get(wireName)
            objects[name] = None if value is None else argument.fromStringProto(value, proto)
        else:
            objects[name] = argument.fromStringProto(box[wireName], proto)
    return objects


class Command(amp.Command):
    """
    An C{amp.Command} whose arguments and responses are converted with
    names worked out once per class.  Declared, sent and answered
    exactly as any AMP command.
    """

    def __init__(self, **kw: Any) -> None:
        # What callRemote builds: the arguments, checked for forgotten
        # required ones.
        self.structured = kw
        forgotten = [
            name for _, name, argument, _ in self._schema()[0]
            if not argument.optional and name not in kw
        ]
        if forgotten:
            raise amp.InvalidSignature(
                "forgot {} for {}".format(", ".join(forgotten),
                                          self.commandName.decode("ascii", "replace"))
            )

    @classmethod
    def _schema(cls) -> Tuple[List[_Field], frozenset, List[_Field]]:
        schema = cls.__dict__.get("_tmtaSchema")
        if schema is None:
            arguments = _fields(cls.arguments)
            schema = (arguments, frozenset(name for _, name, _, _ in arguments),
                      _fields(cls.response))
            setattr(cls, "_tmtaSchema", schema)
        return schema

    @classmethod
    def makeArguments(cls, objects, proto):
        fields, names, _ = cls._schema()
        for name in objects:
            if name not in names:
                raise amp.InvalidSignature(f"{name} is not a valid argument")
        return _encode(fields, objects, cls.commandType(), proto)

    @classmethod
    def parseArguments(cls, box, protocol):
        return _decode(cls._schema()[0], box, protocol)

    @classmethod
    def makeResponse(cls, objects, proto):
        try:
            responseType = cls.responseType()
        except BaseException:
            return fail()
        return _encode(cls._schema()[2], objects, responseType, proto)

    @classmethod
    def parseResponse(cls, box, protocol):
        return _decode(cls._schema()[2], box, protocol)
