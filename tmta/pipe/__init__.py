"""
The pipe delivery agent: Postfix's pipe(8).

A master.cf entry names the command and how to run it::

    filter  unix  -  n  n  -  10  pipe
      flags=DRhu user=filter argv=/usr/local/bin/filter -f ${sender} -- ${recipient}

The command is run directly (no shell), as C{user=} (never root), with
the message on its standard input and the C{${name}} macros expanded in
its arguments.  An argument that names a recipient macro is repeated
for each recipient of the delivery.  Its exit status maps to the
recipients' fate as C{sysexits.h} says (L{tmta.mail.pipecommand}).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List

from zope.interface import implementer

from tmta.delivery import BOUNCED, DEFERRED, SENT, DeliveryRequest, RecipientStatus, logDelivery
from tmta.interfaces import IAddressVerifier
from tmta.mail.address import splitAddress, unquoteLocal
from tmta.mail.mailbox import envelopeLine
from tmta.mail.pipecommand import (
    CommandConfigError,
    commandAccount,
    commandEntryProblems,
    commandEnvironment,
    runCommand,
)
from tmta.queue.qfile import CorruptQueueFile, iterContent, openQueueFile, readEnvelope

#: Macros that differ per recipient: an argument holding one is repeated
#: for each recipient.
RECIPIENT_MACROS = {"recipient", "original_recipient", "user", "extension", "mailbox"}

MACROS = RECIPIENT_MACROS | {
    "client_address", "client_helo", "client_hostname", "client_port", "client_protocol",
    "domain", "nexthop", "queue_id", "sasl_method", "sasl_sender", "sasl_username",
    "sender", "size",
}

FLAGS = set("DORXFhqu.>B")

_MACRO = re.compile(r"\$(?:\{(\w+)\}|\((\w+)\)|(\w+))")


@dataclass
class PipeCommand:
    """
    A pipe entry's attributes, from master.cf.
    """

    argv: List[str]
    uid: int
    gid: int
    flags: str = ""
    sizeLimit: int = 0
    eol: bytes = b"\n"
    directory: str = "/"
    nullSender: str = "MAILER-DAEMON"
    home: str = "/"
    user: str = ""
    extra: Dict[str, str] = field(default_factory=dict)


def _unescape(value: str) -> bytes:
    return value.encode().decode("unicode_escape").encode("latin-1")


def configurationProblems(config, entry) -> List[str]:
    """
    L{commandEntryProblems} for a pipe entry
    (L{tmta.interfaces.IComponent.configurationProblems}).
    """
    return commandEntryProblems(parsePipeArguments, entry.args)


def parsePipeArguments(arguments: List[str]) -> PipeCommand:
    """
    Parse C{flags=}, C{user=}, C{size=}, C{eol=}, C{directory=},
    C{null_sender=} and C{argv=} (which takes the rest).

    @raise CommandConfigError: no C{argv=}, no C{user=}, a user that is
        root or has no account, an unknown flag or attribute, or a macro
        pipe does not know.
    """
    attributes: Dict[str, str] = {}
    argv: List[str] = []
    for index, word in enumerate(arguments):
        name, sep, value = word.partition("=")
        if not sep:
            raise CommandConfigError(f"pipe: {word!r} is not name=value")
        if name == "argv":
            argv = [value] + list(arguments[index + 1:])
            break
        if name not in ("flags", "user", "size", "eol", "directory", "null_sender"):
            raise CommandConfigError(f"pipe: unknown attribute {name!r}")
        attributes[name] = value
    if not argv or not argv[0]:
        raise CommandConfigError("pipe: no argv= command")
    if "user" not in attributes:
        raise CommandConfigError("pipe: no user= attribute (pipe never runs commands as root)")
    account, gid = commandAccount(attributes["user"], "pipe")
    flags = attributes.get("flags", "")
    unknown = set(flags) - FLAGS
    if unknown:
        raise CommandConfigError(f"pipe: unknown flags {''.join(sorted(unknown))!r}")
    for word in argv:
        for match in _MACRO.finditer(word):
            name = next(g for g in match.groups() if g)
            if name not in MACROS:
                raise CommandConfigError(f"pipe: unknown macro ${{{name}}} in argv")
    try:
        size = int(attributes.get("size", "0") or 0)
    except ValueError:
        raise CommandConfigError("pipe: size= must be a number")
    return PipeCommand(
        argv=argv, uid=account.pw_uid, gid=gid, flags=flags, sizeLimit=size,
        eol=_unescape(attributes.get("eol", "\\n")),
        directory=attributes.get("directory", "/"),
        nullSender=attributes.get("null_sender", "MAILER-DAEMON"),
        home=account.pw_dir, user=account.pw_name)


def _quoteLocal(local: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+", local) and ".." not in local \
            and not local.startswith(".") and not local.endswith("."):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PipeAgent:
    """
    Delivers each request to the command, blocking (L{deliverAll}); the
    L{IDeliveryAgent} is L{PipeDeliveryAgent}, which runs it in a thread.
    """

    def __init__(self, command: PipeCommand, serviceName: str, config) -> None:
        self.command = command
        self.serviceName = serviceName
        self.delimiter = config.get("recipient_delimiter")
        self.export = config.getList("export_environment")
        limit = config.get(f"{serviceName}_time_limit") or config.get("command_time_limit")
        from tmta.config.maincf import parseTime

        self.timeLimit = parseTime(limit)

    def _address(self, address: str) -> str:
        if "q" not in self.command.flags or not address:
            return address
        local, domain = splitAddress(address)
        local = _quoteLocal(unquoteLocal(local))
        return f"{local}@{domain}" if domain else local

    def _values(self, request: DeliveryRequest, attributes: Dict[str, str],
                size: int) -> Dict[str, str]:
        flags = self.command.flags
        nexthop = request.nexthop.lower() if "h" in flags else request.nexthop
        return {
            "sender": self._address(request.sender) or self.command.nullSender,
            "nexthop": nexthop, "queue_id": request.queueId, "size": str(size),
            "client_address": attributes.get("client_address", ""),
            "client_helo": attributes.get("helo", ""),
            "client_hostname": attributes.get("client_name", ""),
            "client_port": attributes.get("client_port", ""),
            "client_protocol": attributes.get("protocol", ""),
            "sasl_method": attributes.get("sasl_method", ""),
            "sasl_sender": attributes.get("sasl_sender", ""),
            "sasl_username": attributes.get("sasl_username", ""),
        }

    def _recipientValues(self, address: str, original: str) -> Dict[str, str]:
        flags = self.command.flags
        local, domain = splitAddress(address)
        local = unquoteLocal(local)
        user, extension = local, ""
        for d in self.delimiter:
            if d in local:
                user, _, extension = local.partition(d)
                break
        if "u" in flags:
            user = user.lower()
        if "h" in flags:
            domain = domain.lower()
        return {"recipient": self._address(address), "original_recipient": original,
                "user": user, "extension": extension, "mailbox": local, "domain": domain}

    def argv(self, request: DeliveryRequest, attributes: Dict[str, str],
             size: int) -> List[str]:
        """
        The command's arguments with the macros expanded.
        """
        common = self._values(request, attributes, size)
        perRecipient = [self._recipientValues(r.address, r.original)
                        for r in request.recipients]
        if perRecipient:
            common["domain"] = perRecipient[0]["domain"]

        def expand(word: str, values: Dict[str, str]) -> str:
            return _MACRO.sub(lambda m: values.get(next(g for g in m.groups() if g), ""), word)

        argv: List[str] = []
        for word in self.command.argv:
            names = {next(g for g in m.groups() if g) for m in _MACRO.finditer(word)}
            if names & RECIPIENT_MACROS:
                argv.extend(expand(word, {**common, **values}) for values in perRecipient)
            else:
                argv.append(expand(word, common))
        return argv

    def _message(self, request: DeliveryRequest, queueFile, envelope) -> Iterable[bytes]:
        flags = self.command.flags
        eol = self.command.eol
        first = request.recipients[0] if request.recipients else None
        if "F" in flags:
            yield envelopeLine(request.sender, request.arrival).rstrip(b"\n") + eol
        lines = []
        if "R" in flags:
            lines.append(f"Return-Path: <{request.sender}>")
        if "D" in flags and first is not None:
            lines.append(f"Delivered-To: {first.address}")
        if "O" in flags and first is not None:
            lines.append(f"X-Original-To: {first.original or first.address}")
        for line in lines:
            yield line.encode("utf-8", "surrogateescape") + eol
        yield from _transform(iterContent(queueFile, envelope), eol, "." in flags, ">" in flags)

    def deliverAll(self, request: DeliveryRequest) -> List[RecipientStatus]:
        started = time.time()
        try:
            queueFile = openQueueFile(request.queuePath)
        except OSError as e:
            return self._all(request, DEFERRED, "4.3.0", f"cannot read queue file: {e}", started)
        with queueFile:
            try:
                envelope = readEnvelope(queueFile)
            except CorruptQueueFile as e:
                return self._all(request, DEFERRED, "4.3.0", f"cannot read queue file: {e}",
                                 started)
            if self.command.sizeLimit and envelope.size > self.command.sizeLimit:
                return self._all(request, BOUNCED, "5.2.3",
                                 "message too large for the command", started)
            argv = self.argv(request, envelope.attributes, envelope.size)
            if request.verifyOnly:
                return self._all(request, SENT, "2.0.0", f"delivers to command: {argv[0]}",
                                 started)
            environment = commandEnvironment({}, "", self.export)
            outcome = runCommand(argv, self._message(request, queueFile, envelope),
                                 self.command.uid, self.command.gid, environment,
                                 self.command.directory, self.timeLimit)
        reason = outcome.reason
        if outcome.status != BOUNCED and outcome.status != DEFERRED:
            reason = f"delivered via {self.serviceName} service"
        return self._all(request, outcome.status, outcome.dsn, reason, started,
                         action="" if "X" in self.command.flags else "relayed")

    def _all(self, request, status, dsn, reason, started, action="") -> List[RecipientStatus]:
        statuses = []
        for r in request.recipients:
            result = RecipientStatus(r.offset, status, dsn, reason, action)
            logDelivery(request, r, self.serviceName, result, started)
            statuses.append(result)
        return statuses


def _transform(chunks: Iterable[bytes], eol: bytes, dotStuff: bool,
               fromQuote: bool) -> Iterable[bytes]:
    """
    The message with C{eol} line ends, lines starting with C{.} doubled
    (flag C{.}) and with C{From } quoted (flag C{>}).
    """
    if eol == b"\n" and not dotStuff and not fromQuote:
        yield from chunks
        return
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        lines = data[:cut].split(b"\n")[:-1]
        out = []
        for line in lines:
            if dotStuff and line.startswith(b"."):
                line = b"." + line
            if fromQuote and line.startswith(b"From "):
                line = b">" + line
            out.append(line + eol)
        if out:
            yield b"".join(out)
    if carry:
        if dotStuff and carry.startswith(b"."):
            carry = b"." + carry
        if fromQuote and carry.startswith(b"From "):
            carry = b">" + carry
        yield carry + eol


@implementer(IAddressVerifier)
class PipeDeliveryAgent:
    """
    The L{IDeliveryAgent} the pipe service serves: each request in a
    thread of the reactor's pool (commands run in parallel up to the
    service's process limit).
    """

    def __init__(self, reactor, agent: PipeAgent) -> None:
        self.reactor = reactor
        self.agent = agent

    def deliver(self, request: DeliveryRequest):
        from twisted.internet import threads

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         self.agent.deliverAll, request)


def makePipeService(context):
    """
    The pipe service for a master.cf entry (its arguments from
    C{context.arguments}).
    """
    from tmta.config import ConfigError
    from tmta.delivery import AgentService

    try:
        command = parsePipeArguments(list(context.arguments))
    except CommandConfigError as e:
        raise ConfigError(None, None, f"{context.serviceName}: {e}")
    agent = PipeAgent(command, context.serviceName, context.config)
    return AgentService(context, PipeDeliveryAgent(context.reactor, agent))


__all__ = ["PipeAgent", "PipeCommand", "CommandConfigError", "parsePipeArguments",
           "makePipeService"]
