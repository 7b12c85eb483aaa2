"""
A message through its milters (Postfix's C{milter8_message} and
C{cleanup_milter.c}): each milter in turn gets the headers, the body and
the end of the message, and its changes are made before the next one
sees the message.

The header indexes are Postfix's, which are Sendmail's: a milter does
not see the Received: header the MTA added itself; a change of header
C{name} number C{n} counts only the headers the milter saw, and an
insertion at position C{n} counts from the top, that Received: header
included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tmta.logging import Logger
from tmta.milter import protocol as p
from tmta.milter.client import (
    ACCEPTED_MESSAGE,
    CONTINUE,
    DISCARD,
    ENVELOPE,
    ERROR,
    HOLD,
    MilterClient,
    Verdict,
    replyVerdict,
)

log = Logger()

#: Macro values by name: what smtpd knew, and the queue id.
Macros = Dict[str, str]


@dataclass
class MessageEdits:
    """
    A message as the milters leave it: its header section, its body (LF
    line ends), its sender and recipients, and whether anything changed.

    @ivar headers: each header as in the queue file (C{name: value},
        continuation lines after LF).
    @ivar ownReceived: the position in C{headers} of the Received:
        header the MTA added, which milters do not see (-1: none).
    """

    headers: List[bytes]
    body: bytes
    sender: str
    recipients: List[str]
    ownReceived: int = -1
    changed: bool = False
    addedRecipients: List[str] = field(default_factory=list)
    deleted: List[str] = field(default_factory=list)
    quarantine: Optional[str] = None
    #: The headers milters added, inserted or changed, as they wrote
    #: them (for C{milter_header_checks}).
    produced: List[bytes] = field(default_factory=list)

    # -- headers

    def _visible(self) -> List[int]:
        return [i for i in range(len(self.headers)) if i != self.ownReceived]

    def _named(self, name: str, index: int) -> Optional[int]:
        """
        The position of the C{index}-th (from 1) header called C{name}
        among those milters see.
        """
        wanted = name.lower().encode("ascii", "replace")
        for position in self._visible():
            if self.headers[position].split(b":", 1)[0].strip().lower() == wanted:
                index -= 1
                if index == 0:
                    return position
        return None

    def addHeader(self, name: str, value: str, leadingSpace: bool) -> None:
        header = _header(name, value, leadingSpace)
        self.headers.append(header)
        self.produced.append(header)
        self.changed = True

    def insertHeader(self, index: int, name: str, value: str, leadingSpace: bool) -> None:
        position = min(max(index, 0), len(self.headers))
        header = _header(name, value, leadingSpace)
        self.headers.insert(position, header)
        self.produced.append(header)
        if 0 <= self.ownReceived and position <= self.ownReceived:
            self.ownReceived += 1
        self.changed = True

    def changeHeader(self, index: int, name: str, value: str, leadingSpace: bool) -> None:
        position = self._named(name, max(index, 1))
        if position is None:
            if value:
                # Changing a header that is not there adds it (libmilter's
                # smfi_chgheader, and Postfix).
                self.addHeader(name, value, leadingSpace)
            return
        if value:
            self.headers[position] = _header(name, value, leadingSpace)
            self.produced.append(self.headers[position])
        else:
            del self.headers[position]
            if position < self.ownReceived:
                self.ownReceived -= 1
        self.changed = True

    # -- envelope and body

    def changeSender(self, sender: str) -> None:
        self.sender = _unbracket(sender)
        self.changed = True

    def addRecipient(self, recipient: str) -> None:
        self.recipients.append(_unbracket(recipient))
        self.addedRecipients.append(_unbracket(recipient))
        self.changed = True

    def deleteRecipient(self, recipient: str) -> None:
        address = _unbracket(recipient).lower()
        kept = [r for r in self.recipients if r.lower() != address]
        self.addedRecipients = [r for r in self.addedRecipients if r.lower() != address]
        if len(kept) != len(self.recipients):
            self.deleted.append(address)
            self.recipients = kept
            self.changed = True

    def replaceBody(self, body: bytes) -> None:
        self.body = body.replace(b"\r\n", b"\n")
        self.changed = True


def _unbracket(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    return address


def _header(name: str, value: str, leadingSpace: bool) -> bytes:
    value = value.replace("\r\n", "\n")
    separator = "" if leadingSpace else " "
    return f"{name}:{separator}{value}".encode("utf-8", "surrogateescape")


def _split(header: bytes, leadingSpace: bool) -> Tuple[str, str]:
    name, _, value = header.partition(b":")
    text = value.decode("utf-8", "surrogateescape")
    if not leadingSpace and text.startswith(" "):
        text = text[1:]
    return name.decode("utf-8", "surrogateescape").strip(), text


def _bodyChunks(body: bytes) -> List[bytes]:
    """
    The body as milters get it: CRLF line ends, in chunks of at most
    the protocol's size.
    """
    text = body.replace(b"\n", b"\r\n")
    return [text[i:i + p.CHUNK_SIZE] for i in range(0, len(text), p.CHUNK_SIZE)]


def macroValues(names: Sequence[str], known: Callable[[str], Optional[str]],
                defaults: Optional[Dict[str, str]] = None) -> List[Tuple[str, str]]:
    """
    The macros among C{names} that have a value, with it.

    @param defaults: C{milter_macro_defaults}: the value of a macro the
        conversation gives none, by its name without braces.
    """
    values = []
    for name in names:
        value = known(name)
        if value is None and defaults:
            value = defaults.get(name.strip("{}"))
        if value is not None:
            values.append((name, value))
    return values


async def milterMessage(clients: Sequence[MilterClient], edits: MessageEdits,
                        macros: Callable[[str], Optional[str]]) -> Verdict:
    """
    Pass the message through each milter in turn, making each one's
    changes in C{edits} before the next sees it.

    @param macros: the value of a macro by name (C{None}: not defined).
    @return: the first verdict that is not to go on, or L{CONTINUE};
        a quarantine request is left in C{edits.quarantine}.
    """
    for client in clients:
        verdict = await _throughOne(client, edits, macros)
        if client.quarantine:
            edits.quarantine = edits.quarantine or client.quarantine
            client.quarantine = None
        if not verdict.goesOn:
            return verdict
    return CONTINUE


async def _throughOne(client: MilterClient, edits: MessageEdits,
                      macros: Callable[[str], Optional[str]]) -> Verdict:
    shared = client.shared
    if shared.state == ACCEPTED_MESSAGE:
        shared.state = ENVELOPE
        return CONTINUE
    if shared.state != ENVELOPE:
        if shared.state == ERROR and client.settings.defaultAction == "quarantine":
            return HOLD
        return replyVerdict(shared.defaultReply)

    defaults = client.settings.macroDefaults
    eohMacros = macroValues(client.macroNames(p.EOH), macros, defaults)
    eodMacros = macroValues(client.macroNames(p.BODYEOB), macros, defaults)
    client.edits = []
    leadingSpace = shared.leadingSpace
    try:
        for position, header in enumerate(edits.headers):
            if position == edits.ownReceived:
                continue
            name, value = _split(header, leadingSpace)
            verdict = await client.event(p.HEADER, p.strings(name, value), eohMacros,
                                         content=True)
            if not verdict.goesOn or shared.state != ENVELOPE:
                return _ended(shared, verdict)
        verdict = await client.event(p.EOH, b"", eohMacros, content=True)
        if not verdict.goesOn or shared.state != ENVELOPE:
            return _ended(shared, verdict)
        for chunk in _bodyChunks(edits.body):
            verdict = await client.event(p.BODY, chunk, eodMacros, content=True)
            if not verdict.goesOn or shared.state != ENVELOPE:
                return _ended(shared, verdict)
        verdict = await client.event(p.BODYEOB, b"", eodMacros, content=True)
    finally:
        requested, client.edits = client.edits, []
    if verdict.kind == "reply" or verdict.kind == "shutdown":
        # A refused message is not changed.
        return _ended(shared, verdict)
    _apply(client, edits, requested)
    return _ended(shared, verdict)


def _ended(shared, verdict: Verdict) -> Verdict:
    if shared.state == ACCEPTED_MESSAGE:
        shared.state = ENVELOPE
    return DISCARD if verdict.kind == "discard" else verdict


def _apply(client: MilterClient, edits: MessageEdits, requested) -> None:
    """
    Make the changes a milter asked for at the end of the message, in
    the order it asked for them.
    """
    leadingSpace = client.shared.leadingSpace
    replacement: List[bytes] = []
    name = client.settings.name
    try:
        for command, data in requested:
            if command == p.ADDHEADER:
                header, value = p.splitStrings(data, 2)
                edits.addHeader(header, value, leadingSpace)
            elif command == p.INSHEADER:
                index, header, value = p.indexed(data)
                edits.insertHeader(index, header, value, leadingSpace)
            elif command == p.CHGHEADER:
                index, header, value = p.indexed(data)
                if not header:
                    log.warn("milter {name}: null change header name", name=name)
                    continue
                edits.changeHeader(index, header, value, leadingSpace)
            elif command == p.CHGFROM:
                sender, _ = p.splitStrings(data, 2, optional=1)
                edits.changeSender(sender)
            elif command in (p.ADDRCPT, p.ADDRCPT_PAR):
                recipient = p.splitStrings(data, 2, optional=1)[0]
                edits.addRecipient(recipient)
            elif command == p.DELRCPT:
                [recipient] = p.splitStrings(data, 1)
                edits.deleteRecipient(recipient)
            elif command == p.REPLBODY:
                replacement.append(data)
    except p.ProtocolError as e:
        log.warn("milter {name}: malformed change request: {error}", name=name, error=e)
    if replacement:
        edits.replaceBody(b"".join(replacement))
