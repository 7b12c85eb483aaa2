"""
SMTP sessions, held against Postfix: the same main.cf and the same
session scripts run against a private Postfix and against tmta, and the
reply code and enhanced status code of every step must agree.  Skipped
where Postfix is not installed or the tests do not run as root (a
private Postfix needs root to start).

Each configuration is a class of scripts: command syntax, every
restriction of Postfix 3.7's smtpd that needs neither the DNS nor the
verify service (each named as a restriction class and reached through a
recipient that selects it), every access(5) action, and list parameters
with files and tables.  The differences that remain on purpose are in
L{DELIBERATE}, each with its reason.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Tuple

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.differential import Agreement, PostfixSMTP, postfixMissing, runSession, tmtaSMTP
from tests.support import shortTemporaryDirectory

#: A session script: a name, the client address it connects from, and
#: the lines it sends, one step each.
Script = Tuple[str, str, List[bytes]]

#: Differences kept on purpose: script name to the reason.  Each is
#: stricter than Postfix 3.7, by an RFC or as Postfix 3.9 is by default.
DELIBERATE: Dict[str, str] = {
    "syntax/help": "HELP is answered (RFC 5321 4.1.1.8); Postfix 3.7 does not know it",
    "syntax/mail-utf8-no-smtputf8": "a UTF-8 address needs SMTPUTF8 (RFC 6531 3.4, 553 "
                                    "5.6.7); Postfix 3.7 takes it",
    "syntax/data-bare-lf-dot": "only CRLF.CRLF ends DATA (SMTP smuggling; Postfix 3.9's "
                               "smtpd_forbid_bare_newline); Postfix 3.7 ends at LF.LF",
    "syntax/long-line": "a path is at most 256 octets (RFC 5321 4.5.3.1.3)",
    "syntax/long-local-part": "a local part is at most 64 octets (RFC 5321 4.5.3.1.1)",
    "syntax/nul-byte": "a command with a NUL is refused; Postfix 3.7 takes it",
    "syntax/xclient": "XCLIENT is not implemented: refused as unknown (500), where "
                      "Postfix refuses it as unauthorized (550)",
}
for _space in ("nbsp", "em-space", "ideographic-space"):
    for _where in ("before", "inside"):
        DELIBERATE[f"syntax/unicode-{_space}-{_where}"] = (
            "a Unicode space in or before an address is refused (501 5.1.3): RFC 5321 "
            "has no place for it; Postfix 3.7 drops one before the bracket and keeps one "
            "inside as part of the address")
for _name in ("reject_sender_login_mismatch", "reject_known_sender_login_mismatch",
              "reject_unauthenticated_sender_login_mismatch"):
    DELIBERATE[f"restriction/{_name}/owned-sender"] = (
        "enforced when AUTH is off too (nobody is logged in, so an owned sender is "
        "refused), where Postfix ignores it with a warning: an operator who lists it "
        "means it")

#: EHLO keywords one server announces and the other does not, on purpose.
EHLO_DELIBERATE = {
    "ETRN": "not announced: tmta keeps no per-destination queue to flush, and answers "
            "ETRN 459 as Postfix does for a domain it does not flush",
}

USERS = "alice x\nbob x\n"


def _lines(*commands: str) -> List[bytes]:
    return [c.encode("utf-8", "surrogateescape") + b"\r\n" for c in commands]


# -- command syntax ------------------------------------------------------------

def syntaxScripts() -> List[Script]:
    """
    Commands, their arguments and parameters, in and out of order.
    """
    scripts: List[Script] = []

    def add(name: str, *commands: str, source: str = "127.0.0.1") -> None:
        scripts.append((f"syntax/{name}", source, _lines(*commands)))

    add("helo", "HELO client.example", "QUIT")
    add("ehlo", "EHLO client.example", "QUIT")
    add("helo-empty", "HELO", "QUIT")
    add("ehlo-empty", "EHLO", "QUIT")
    add("helo-twice", "HELO a.example", "HELO b.example", "QUIT")
    add("ehlo-literal", "EHLO [127.0.0.1]", "QUIT")
    add("ehlo-bad-literal", "EHLO [300.1.1.1]", "QUIT")
    add("noop", "NOOP", "NOOP with args", "QUIT")
    add("rset", "RSET", "EHLO c.example", "RSET", "QUIT")
    add("help", "HELP", "QUIT")
    add("unknown-command", "FOO bar", "QUIT")
    add("lowercase", "ehlo c.example", "mail from:<a@example.com>", "rcpt to:<alice@localhost>",
        "quit")
    add("vrfy", "VRFY alice", "VRFY <alice@localhost>", "VRFY nobody@localhost", "QUIT")
    add("expn", "EXPN alice", "QUIT")
    add("etrn", "EHLO c.example", "ETRN example.com", "QUIT")
    add("mail-before-helo", "MAIL FROM:<a@example.com>", "QUIT")
    add("rcpt-before-mail", "EHLO c.example", "RCPT TO:<alice@localhost>", "QUIT")
    add("data-before-rcpt", "EHLO c.example", "MAIL FROM:<a@example.com>", "DATA", "QUIT")
    add("data-before-mail", "EHLO c.example", "DATA", "QUIT")
    add("mail-twice", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "MAIL FROM:<b@example.com>", "QUIT")
    add("mail-null", "EHLO c.example", "MAIL FROM:<>", "RCPT TO:<alice@localhost>", "QUIT")
    add("mail-nothing", "EHLO c.example", "MAIL FROM:", "QUIT")
    add("mail-no-colon", "EHLO c.example", "MAIL FROM <a@example.com>", "QUIT")
    add("mail-no-brackets", "EHLO c.example", "MAIL FROM:a@example.com",
        "RCPT TO:alice@localhost", "QUIT")
    add("mail-space-after-colon", "EHLO c.example", "MAIL FROM: <a@example.com>", "QUIT")
    add("mail-unclosed", "EHLO c.example", "MAIL FROM:<a@example.com", "QUIT")
    add("mail-two-addresses", "EHLO c.example", "MAIL FROM:<a@example.com> <b@example.com>",
        "QUIT")
    add("mail-source-route", "EHLO c.example", "MAIL FROM:<@relay.example:a@example.com>",
        "QUIT")
    add("mail-quoted", "EHLO c.example", 'MAIL FROM:<"a b"@example.com>', "QUIT")
    for name, literal in (("ipv4-literal", "[127.0.0.1]"), ("ipv6-loopback", "[IPv6:::1]"),
                          ("ipv6-untagged", "[::1]"), ("other-literal", "[192.0.2.1]")):
        for source in ("127.0.0.1", "127.0.0.2"):
            add(f"rcpt-{name}-from-{source}", "EHLO c.example", "MAIL FROM:<a@example.com>",
                f"RCPT TO:<alice@{literal}>", "QUIT", source=source)
    for name, space in (("nbsp", "\u00a0"), ("em-space", "\u2003"),
                        ("ideographic-space", "\u3000"), ("tab", "\t")):
        for where, rcpt in (("before", f"RCPT TO:{space}<alice@localhost>"),
                            ("inside", f"RCPT TO:<{space}alice@localhost>"),
                            ("after", f"RCPT TO:<alice@localhost>{space}")):
            add(f"unicode-{name}-{where}", "EHLO c.example",
                "MAIL FROM:<a@example.com> SMTPUTF8", rcpt, "QUIT")
    add("mail-size", "EHLO c.example", "MAIL FROM:<a@example.com> SIZE=1000",
        "RCPT TO:<alice@localhost>", "QUIT")
    add("mail-size-huge", "EHLO c.example", "MAIL FROM:<a@example.com> SIZE=999999999999",
        "QUIT")
    add("mail-size-bad", "EHLO c.example", "MAIL FROM:<a@example.com> SIZE=abc", "QUIT")
    add("mail-body", "EHLO c.example", "MAIL FROM:<a@example.com> BODY=8BITMIME", "QUIT")
    add("mail-body-7bit", "EHLO c.example", "MAIL FROM:<a@example.com> BODY=7BIT", "QUIT")
    add("mail-body-binary", "EHLO c.example", "MAIL FROM:<a@example.com> BODY=BINARYMIME",
        "QUIT")
    add("mail-body-bad", "EHLO c.example", "MAIL FROM:<a@example.com> BODY=9BIT", "QUIT")
    add("mail-smtputf8", "EHLO c.example", "MAIL FROM:<a@example.com> SMTPUTF8", "QUIT")
    add("mail-smtputf8-twice", "EHLO c.example", "MAIL FROM:<a@example.com> SMTPUTF8 SMTPUTF8",
        "QUIT")
    add("mail-utf8-address", "EHLO c.example", "MAIL FROM:<jörg@example.com> SMTPUTF8",
        "RCPT TO:<alice@localhost>", "QUIT")
    add("mail-utf8-no-smtputf8", "EHLO c.example", "MAIL FROM:<jörg@example.com>", "QUIT")
    add("mail-unknown-param", "EHLO c.example", "MAIL FROM:<a@example.com> FOO=BAR", "QUIT")
    add("mail-ret", "EHLO c.example", "MAIL FROM:<a@example.com> RET=HDRS ENVID=abc",
        "QUIT")
    add("mail-ret-bad", "EHLO c.example", "MAIL FROM:<a@example.com> RET=ALL", "QUIT")
    add("mail-ret-twice", "EHLO c.example", "MAIL FROM:<a@example.com> RET=HDRS RET=FULL",
        "QUIT")
    add("mail-auth-param", "EHLO c.example", "MAIL FROM:<a@example.com> AUTH=<>", "QUIT")
    add("mail-helo-mode-params", "HELO c.example", "MAIL FROM:<a@example.com> SIZE=100",
        "QUIT")
    add("rcpt-notify", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@localhost",
        "QUIT")
    add("rcpt-notify-never", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice@localhost> NOTIFY=NEVER", "QUIT")
    add("rcpt-notify-bad", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice@localhost> NOTIFY=NEVER,SUCCESS", "QUIT")
    add("rcpt-unknown-param", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice@localhost> FOO=1", "QUIT")
    add("rcpt-empty", "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:<>", "QUIT")
    add("rcpt-nothing", "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:", "QUIT")
    add("rcpt-postmaster", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<postmaster>", "RCPT TO:<Postmaster>", "QUIT")
    add("rcpt-unknown-local", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<nobody@localhost>", "QUIT")
    add("rcpt-known-local", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice@localhost>", "RCPT TO:<bob@mx.test.example>", "QUIT")
    add("rcpt-extension", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice+tag@localhost>", "QUIT")
    add("rcpt-relay-denied", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<someone@elsewhere.example>", "QUIT", source="127.0.0.2")
    add("rcpt-relay-mynetworks", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<someone@elsewhere.example>", "QUIT")
    add("rcpt-percent-hack", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<someone%elsewhere.example@localhost>", "QUIT", source="127.0.0.2")
    add("rcpt-bang-path", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<elsewhere.example!someone@localhost>", "QUIT", source="127.0.0.2")
    add("rcpt-address-literal", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice@[127.0.0.1]>", "RCPT TO:<alice@[300.1.1.1]>", "QUIT")
    add("rcpt-source-route", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<@localhost:alice@localhost>", "QUIT")
    add("rcpt-bare-name", "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:<alice>",
        "QUIT")
    add("data-empty", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice@localhost>", "DATA", ".", "QUIT")
    scripts.append(("syntax/data-message", "127.0.0.1", _lines(
        "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:<alice@localhost>", "DATA")
        + [b"Subject: hi\r\n\r\nbody\r\n.\r\n"] + _lines("QUIT")))
    scripts.append(("syntax/data-bare-lf-dot", "127.0.0.1", _lines(
        "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:<alice@localhost>", "DATA")
        + [b"Subject: hi\r\n\r\nbody\n.\nmore\r\n.\r\n"] + _lines("QUIT")))
    scripts.append(("syntax/data-dot-stuffed", "127.0.0.1", _lines(
        "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:<alice@localhost>", "DATA")
        + [b"Subject: hi\r\n\r\n..leading dot\r\n.\r\n"] + _lines("QUIT")))
    add("bdat", "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:<alice@localhost>",
        "BDAT 0 LAST", "QUIT")
    scripts.append(("syntax/bdat-chunks", "127.0.0.1", _lines(
        "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:<alice@localhost>")
        + [b"BDAT 12\r\nSubject: x\r\n", b"BDAT 6 LAST\r\n\r\nbody"] + _lines("QUIT")))
    add("bdat-before-rcpt", "EHLO c.example", "MAIL FROM:<a@example.com>", "BDAT 0 LAST",
        "QUIT")
    add("bdat-bad-size", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<alice@localhost>", "BDAT x", "QUIT")
    add("starttls-not-offered", "EHLO c.example", "STARTTLS", "QUIT")
    add("auth-not-offered", "EHLO c.example", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "QUIT")
    add("rset-clears", "EHLO c.example", "MAIL FROM:<a@example.com>", "RSET",
        "RCPT TO:<alice@localhost>", "QUIT")
    add("quit-args", "QUIT now")
    add("long-line", "EHLO c.example", "MAIL FROM:<" + "a" * 1100 + "@example.com>", "QUIT")
    add("long-local-part", "EHLO c.example", "MAIL FROM:<a@example.com>",
        "RCPT TO:<" + "b" * 300 + "@localhost>", "QUIT")
    add("nul-byte", "EHLO c.exa\0mple", "QUIT")
    add("forbidden-get", "GET / HTTP/1.0", "QUIT")
    add("forbidden-post", "POST /x HTTP/1.0", "QUIT")
    add("connect-proxy", "CONNECT host:25 HTTP/1.0", "QUIT")
    add("xclient", "EHLO c.example", "XCLIENT NAME=spoof", "QUIT")
    return scripts


# -- restrictions ----------------------------------------------------------------

#: Restrictions each tried as a class of its own, by name.  Those that
#: take an argument carry it.
RESTRICTIONS = [
    "permit", "reject", "defer", "defer_if_permit", "defer_if_reject",
    "permit_mynetworks", "permit_sasl_authenticated", "permit_auth_destination",
    "reject_unauth_destination", "defer_unauth_destination", "reject_unauth_pipelining",
    "reject_non_fqdn_sender", "reject_non_fqdn_recipient", "reject_non_fqdn_helo_hostname",
    "reject_non_fqdn_hostname", "reject_invalid_helo_hostname", "reject_invalid_hostname",
    "reject_unknown_client_hostname", "reject_unknown_client",
    "reject_unknown_reverse_client_hostname", "reject_unlisted_recipient",
    "check_recipient_maps", "reject_unlisted_sender", "reject_multi_recipient_bounce",
    "reject_plaintext_session", "permit_inet_interfaces", "permit_naked_ip_address",
    "permit_tls_clientcerts", "permit_tls_all_clientcerts", "reject_sender_login_mismatch",
    "reject_known_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch", "warn_if_reject reject",
    "warn_if_reject reject_non_fqdn_sender", "sleep 0",
    "check_client_access TABLE", "check_reverse_client_hostname_access TABLE",
    "check_helo_access TABLE", "check_sender_access TABLE", "check_recipient_access TABLE",
    "check_sasl_access TABLE", "check_ccert_access TABLE",
    "defer_if_permit reject", "defer_if_reject reject", "defer_if_permit permit",
    "defer_if_reject permit", "check_relay_domains",
]

#: What the access table of the restriction classes says, by key.
RESTRICTION_ACCESS = {
    "127.0.0.3": "REJECT client three",
    "127.0.0.4": "OK",
    "helo.reject.example": "REJECT bad helo",
    "sender@reject.example": "REJECT bad sender",
    "reject.example": "450 try later",
    "rcpt-access@r.test.example": "REJECT bad recipient",
}

#: The variations each restriction meets: a name, the client address,
#: the HELO name, the sender and the recipients' local-part suffix.
VARIANTS = [
    ("plain", "127.0.0.2", "client.example", "someone@example.com", 1),
    ("mynetworks", "127.0.0.1", "client.example", "someone@example.com", 1),
    ("listed-client", "127.0.0.3", "client.example", "someone@example.com", 1),
    ("ok-client", "127.0.0.4", "client.example", "someone@example.com", 1),
    ("short-helo", "127.0.0.2", "shorty", "someone@example.com", 1),
    ("bad-helo", "127.0.0.2", "bad_name..x", "someone@example.com", 1),
    ("literal-helo", "127.0.0.2", "[127.0.0.2]", "someone@example.com", 1),
    ("naked-ip-helo", "127.0.0.2", "127.0.0.2", "someone@example.com", 1),
    ("listed-helo", "127.0.0.2", "helo.reject.example", "someone@example.com", 1),
    ("null-sender", "127.0.0.2", "client.example", "", 2),
    ("short-sender", "127.0.0.2", "client.example", "someone@nodots", 1),
    ("bare-sender", "127.0.0.2", "client.example", "someone", 1),
    ("local-unknown-sender", "127.0.0.2", "client.example", "nobody@localhost", 1),
    ("local-known-sender", "127.0.0.2", "client.example", "alice@localhost", 1),
    ("listed-sender", "127.0.0.2", "client.example", "sender@reject.example", 1),
    ("listed-domain-sender", "127.0.0.2", "client.example", "x@reject.example", 1),
    ("owned-sender", "127.0.0.2", "client.example", "owned@test.example", 1),
]


def restrictionScripts() -> List[Script]:
    """
    Every restriction against every variation: the recipient's local
    part names the restriction class to apply.
    """
    scripts: List[Script] = []
    for index, restriction in enumerate(RESTRICTIONS):
        for variant, source, helo, sender, count in VARIANTS:
            recipients = [f"RCPT TO:<r{index}@r.test.example>"]
            if count > 1:
                recipients.append(f"RCPT TO:<r{index}-second@r.test.example>")
            scripts.append((f"restriction/{restriction}/{variant}", source, _lines(
                f"EHLO {helo}", f"MAIL FROM:<{sender}>", *recipients, "DATA", ".", "QUIT")))
    return scripts


def restrictionSettings(directory: str) -> Dict[str, str]:
    table = _write(directory, "access", "".join(
        f"{key} {value}\n" for key, value in RESTRICTION_ACCESS.items()))
    logins = _write(directory, "logins", "owned@test.example owner\n")
    classes = []
    selector = []
    settings: Dict[str, str] = {}
    for index, restriction in enumerate(RESTRICTIONS):
        name = f"r{index}"
        classes.append(name)
        settings[name] = restriction.replace("TABLE", f"texthash:{table}")
        selector.append(f"r{index}@r.test.example {name}\n")
        selector.append(f"r{index}-second@r.test.example {name}\n")
    select = _write(directory, "select", "".join(selector))
    settings.update({
        "smtpd_restriction_classes": ", ".join(classes),
        "smtpd_recipient_restrictions": f"check_recipient_access texthash:{select}, "
                                        "permit_mynetworks, reject_unauth_destination",
        "smtpd_relay_restrictions": "",
        "smtpd_sender_login_maps": f"texthash:{logins}",
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
        "relay_domains": "r.test.example",
        "smtpd_data_restrictions": "",
    })
    return settings


# -- access(5) actions -------------------------------------------------------------

ACCESS_ACTIONS = {
    "ok": "OK", "ok-text": "OK with text", "number": "42", "reject": "REJECT",
    "reject-text": "REJECT go away", "reject-dsn": "REJECT 5.7.9 with status",
    "defer": "DEFER", "defer-text": "DEFER later", "defer-dsn": "DEFER 4.3.2 status",
    "code-550": "550 not here", "code-550-dsn": "550 5.1.9 not here", "code-450": "450 busy",
    "code-421": "421 closing", "code-521": "521 closing hard", "code-4xx-5dsn": "450 5.1.1 odd",
    "code-599": "599 top", "code-399": "399 not a refusal",
    "dunno": "DUNNO", "hold": "HOLD", "hold-text": "HOLD for review", "discard": "DISCARD",
    "filter": "FILTER smtp:[127.0.0.1]:10025", "filter-bad": "FILTER nocolon",
    "redirect": "REDIRECT other@example.com", "redirect-bad": "REDIRECT nobody",
    "prepend": "PREPEND X-Tag: yes", "prepend-bad": "PREPEND not a header",
    "warn": "WARN look", "info": "INFO look", "bcc": "BCC copy@example.com",
    "defer-if-permit": "DEFER_IF_PERMIT maybe", "defer-if-reject": "DEFER_IF_REJECT maybe",
    "restriction": "reject_non_fqdn_sender", "restrictions": "permit_mynetworks, reject",
    "class": "strict", "unknown": "NO_SUCH_ACTION", "lowercase-reject": "reject",
    "empty-text-reject": "REJECT ",
}


def accessScripts() -> List[Script]:
    scripts: List[Script] = []
    for key in ACCESS_ACTIONS:
        for source in ("127.0.0.1", "127.0.0.2"):
            for sender in ("someone@example.com", "someone@nodots"):
                where = "mynetworks" if source == "127.0.0.1" else "outside"
                shape = "fqdn" if "." in sender.split("@")[1] else "short"
                scripts.append((f"access/{key}/{where}/{shape}", source, _lines(
                    "EHLO client.example", f"MAIL FROM:<{sender}>",
                    f"RCPT TO:<{key}@a.test.example>", "RCPT TO:<alice@localhost>",
                    "DATA", ".", "QUIT")))
    return scripts


def accessSettings(directory: str) -> Dict[str, str]:
    table = _write(directory, "actions", "".join(
        f"{key}@a.test.example {value}\n" for key, value in ACCESS_ACTIONS.items()))
    return {
        "smtpd_restriction_classes": "strict",
        "strict": "reject_non_fqdn_sender, permit",
        "smtpd_recipient_restrictions": f"check_recipient_access texthash:{table}, "
                                        "permit_mynetworks, reject_unauth_destination",
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
        "relay_domains": "a.test.example",
    }


# -- list parameters ---------------------------------------------------------------

def listScripts() -> List[Script]:
    scripts: List[Script] = []
    for source in ("127.0.0.1", "127.0.0.2", "127.0.0.5", "127.0.0.9", "127.0.0.77"):
        for recipient in ("alice@localhost", "alice@file-local.example",
                          "alice@table-local.example", "x@hosted-file.example",
                          "x@hosted-table.example", "x@relay-file.example",
                          "x@sub.relay-file.example", "x@relay-table.example",
                          "x@sub.dotted.example", "x@dotted.example",
                          "x@negated.relay-file.example", "x@elsewhere.example",
                          "x@alias-file.example", "alice@sub.file-local.example"):
            scripts.append((f"lists/{source}/{recipient}", source, _lines(
                "EHLO client.example", "MAIL FROM:<someone@example.com>",
                f"RCPT TO:<{recipient}>", "QUIT")))
    return scripts


def listSettings(directory: str) -> Dict[str, str]:
    localFile = _write(directory, "local-domains", "file-local.example\n")
    localTable = _write(directory, "local-table", "table-local.example OK\n")
    hostedFile = _write(directory, "vhost", "hosted-file.example\n# comment\n")
    hostedTable = _write(directory, "vhost-table", "hosted-table.example OK\n")
    relayFile = _write(directory, "relay-domains",
                       "!negated.relay-file.example\nrelay-file.example .dotted.example\n")
    relayTable = _write(directory, "relay-table", "relay-table.example OK\n")
    networks = _write(directory, "networks", "127.0.0.5\n127.0.0.8/29\n")
    cidr = _write(directory, "networks.cidr", "127.0.0.64/26 OK\n")
    aliasDomains = _write(directory, "alias-domains", "alias-file.example\n")
    mailboxes = _write(directory, "mailboxes", "x@hosted-file.example ok\n"
                                               "x@hosted-table.example ok\n")
    return {
        "mydestination": f"localhost, {localFile}, texthash:{localTable}",
        "virtual_mailbox_domains": f"{hostedFile}, texthash:{hostedTable}",
        "virtual_mailbox_maps": f"texthash:{mailboxes}",
        "virtual_alias_domains": aliasDomains,
        "relay_domains": f"{relayFile}, texthash:{relayTable}",
        "mynetworks": f"127.0.0.1, {networks}, cidr:{cidr}",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
    }


# -- limits, exemptions and extensions ------------------------------------------

def strictScripts() -> List[Script]:
    """
    Every list refuses: only the bare postmaster gets through (RFC 5321
    4.5.1), and the error and junk limits end the session on time.
    """
    scripts: List[Script] = []
    for recipient in ("postmaster", "Postmaster", "postmaster@localhost",
                      "postmaster@mx.test.example", "alice@localhost", "alice"):
        scripts.append((f"strict/{recipient}", "127.0.0.2", _lines(
            "EHLO client.example", "MAIL FROM:<someone@example.com>",
            f"RCPT TO:<{recipient}>", "QUIT")))
    scripts.append(("strict/errors", "127.0.0.2",
                    _lines("EHLO client.example", *["MAIL FROM:bad<" for _ in range(6)],
                           "QUIT")))
    scripts.append(("strict/junk", "127.0.0.2",
                    _lines("EHLO client.example", *["NOOP" for _ in range(8)], "QUIT")))
    scripts.append(("strict/junk-rset", "127.0.0.2",
                    _lines(*["RSET" for _ in range(8)], "QUIT")))
    scripts.append(("strict/dsn-discarded", "127.0.0.2", _lines(
        "EHLO client.example", "MAIL FROM:<someone@example.com> RET=HDRS",
        "MAIL FROM:<someone@example.com> ENVID=x", "MAIL FROM:<someone@example.com>",
        "RCPT TO:<postmaster> NOTIFY=NEVER", "RCPT TO:<postmaster> ORCPT=rfc822;a@b.example",
        "QUIT")))
    return scripts


def nameScripts() -> List[Script]:
    """
    Clients by name: every client is "unknown" here (no DNS), a name
    that tables may list, and an OK for the unverified name is refused.
    """
    return [(f"names/{source}", source, _lines(
        "EHLO client.example", "MAIL FROM:<someone@example.com>", "RCPT TO:<alice@localhost>",
        "QUIT")) for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")]


def nameSettings(directory: str) -> Dict[str, str]:
    reverse = _write(directory, "reverse", "127.0.0.4 OK\n127.0.0.3 REJECT listed\n")
    names = _write(directory, "names", "unknown REJECT unknown name\n127.0.0.5 OK\n")
    return {
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
        "smtpd_client_restrictions": f"check_reverse_client_hostname_access texthash:{reverse}, "
                                     f"check_client_access texthash:{names}",
    }


def earlyScripts() -> List[Script]:
    """
    smtpd_delay_reject = no: each list at its own command.
    """
    scripts: List[Script] = []
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        for helo in ("client.example", "bad..name"):
            for sender in ("someone@example.com", "someone@nodots"):
                scripts.append((f"early/{source}/{helo}/{sender}", source, _lines(
                    "NOOP", f"HELO {helo}", f"MAIL FROM:<{sender}>",
                    "RCPT TO:<alice@localhost>", "DATA", ".", "QUIT")))
    return scripts


def earlySettings(directory: str) -> Dict[str, str]:
    clients = _write(directory, "early-clients",
                     "127.0.0.3 REJECT go away\n127.0.0.4 DEFER_IF_PERMIT later\n")
    return {
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
        "smtpd_delay_reject": "no",
        "smtpd_client_restrictions": f"check_client_access texthash:{clients}",
        "smtpd_helo_restrictions": "reject_invalid_helo_hostname",
        "smtpd_sender_restrictions": "reject_non_fqdn_sender",
    }


def optionScripts() -> List[Script]:
    """
    Settings that narrow what a session may do.
    """
    scripts: List[Script] = []

    def add(name: str, *commands: str) -> None:
        scripts.append((f"options/{name}", "127.0.0.2", _lines(*commands)))

    add("mail-before-helo", "MAIL FROM:<a@example.com>", "HELO c.example",
        "MAIL FROM:<a@example.com>", "QUIT")
    add("vrfy", "HELO c.example", "VRFY alice", "VRFY <alice@localhost>", "QUIT")
    add("no-brackets", "HELO c.example", "MAIL FROM:a@example.com",
        "MAIL FROM:<a@example.com>", "RCPT TO:alice@localhost", "QUIT")
    add("recipient-limit", "HELO c.example", "MAIL FROM:<a@example.com>",
        *[f"RCPT TO:<{u}@localhost>" for u in ("alice", "bob", "alice", "bob", "alice")],
        "QUIT")
    add("size", "EHLO c.example", "MAIL FROM:<a@example.com> SIZE=1001",
        "MAIL FROM:<a@example.com> SIZE=1000", "QUIT")
    scripts.append(("options/too-big", "127.0.0.2", _lines(
        "EHLO c.example", "MAIL FROM:<a@example.com>", "RCPT TO:<alice@localhost>", "DATA")
        + [b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" + (b"y" * 78 + b"\r\n") * 20
           + b".\r\n"] + _lines("QUIT")))
    add("etrn", "EHLO c.example", "ETRN example.com", "ETRN", "QUIT")
    add("discarded", "EHLO c.example", "MAIL FROM:<a@example.com> BODY=8BITMIME",
        "RCPT TO:<alice@localhost>", "RSET", "QUIT")
    return scripts


def optionSettings(directory: str) -> Dict[str, str]:
    return {
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
        "mynetworks": "127.0.0.0/8",
        "smtpd_helo_required": "yes",
        "disable_vrfy_command": "yes",
        "strict_rfc821_envelopes": "yes",
        "smtpd_recipient_limit": "2",
        "smtpd_recipient_overshoot_limit": "2",
        "message_size_limit": "1000",
        "smtpd_discard_ehlo_keywords": "8bitmime, chunking",
    }


def recipientScripts() -> List[Script]:
    """
    Who is known: local, virtual alias, virtual mailbox and relay
    recipients, and senders in this machine's domains; users who moved
    (relocated_maps), addresses the transport table sends to the error
    transport, and a moved address a canonical table still knows.
    """
    scripts: List[Script] = []
    for sender in ("someone@example.com", "nobody@localhost", "alice@localhost",
                   "x@hosted.example", "known@hosted.example", "moved@localhost"):
        for recipient in ("alice@localhost", "nobody@localhost", "alias@aliases.example",
                          "other@aliases.example", "known@hosted.example",
                          "unknown@hosted.example", "known@relay.example",
                          "unknown@relay.example", "alice+ext@localhost",
                          "MAILER-DAEMON@localhost", "moved@localhost", "moved+x@localhost",
                          "moved@hosted.example", "x@relocated.example",
                          "blocked@localhost", "closed@localhost", "renamed@localhost"):
            scripts.append((f"recipients/{sender}/{recipient}", "127.0.0.1", _lines(
                "EHLO client.example", f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>",
                "QUIT")))
    return scripts


def recipientSettings(directory: str) -> Dict[str, str]:
    aliases = _write(directory, "aliases", "alias@aliases.example alice@localhost\n")
    boxes = _write(directory, "boxes", "known@hosted.example box/\n")
    relayed = _write(directory, "relayed", "known@relay.example x\n")
    return {
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
        "unknown_local_recipient_reject_code": "450",
        "virtual_alias_domains": "aliases.example",
        "virtual_alias_maps": f"texthash:{aliases}",
        "virtual_mailbox_domains": "hosted.example",
        "virtual_mailbox_maps": f"texthash:{boxes}",
        "relay_domains": "relay.example",
        "relay_recipient_maps": f"texthash:{relayed}",
        "smtpd_reject_unlisted_sender": "yes",
        "recipient_delimiter": "+",
        "relocated_maps": "texthash:" + _write(
            directory, "relocated", "moved@localhost new@example.net\n"
            "moved@hosted.example gone away\n@relocated.example other.example\n"
            "renamed@localhost alice@example.net\n"),
        "transport_maps": "texthash:" + _write(
            directory, "transport", "blocked@localhost error:5.7.1 mailbox closed\n"
            "closed@localhost error:no such mailbox here\n"),
        "recipient_canonical_maps": "texthash:" + _write(
            directory, "canonical", "renamed@localhost alice@localhost\n"),
    }


def verifyScripts() -> List[Script]:
    """
    reject_unverified_sender and reject_unverified_recipient while the
    probes are under way (one poll: the first answer is "in progress"),
    alone and beside a later permit or reject.
    """
    scripts: List[Script] = []
    for source in ("127.0.0.1", "127.0.0.2"):
        for sender in ("", "someone@example.com", "alice@localhost"):
            for recipient in ("alice@localhost", "x@relay.example", "x@rejected.example",
                              "x@permitted.example", "postmaster"):
                scripts.append((f"verify/{source}/{sender}/{recipient}", source, _lines(
                    "EHLO client.example", f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>",
                    "QUIT")))
    return scripts


def verifySettings(directory: str) -> Dict[str, str]:
    access = _write(directory, "verify-access",
                    "rejected.example verify_then_reject\npermitted.example OK\n")
    return {
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
        "relay_domains": "relay.example, rejected.example, permitted.example",
        "address_verify_poll_count": "1",
        "smtpd_restriction_classes": "verify_then_reject",
        "verify_then_reject": "reject_unverified_recipient, reject",
        "smtpd_sender_restrictions": "reject_unverified_sender",
        "smtpd_recipient_restrictions": f"check_recipient_access texthash:{access}, "
                                        "reject_unverified_recipient, permit_mynetworks, "
                                        "reject_unauth_destination",
    }


def strictSettings(directory: str) -> Dict[str, str]:
    return {
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}",
        "smtpd_client_restrictions": "reject",
        "smtpd_recipient_restrictions": "reject_non_fqdn_recipient, reject",
        "smtpd_hard_error_limit": "3",
        "smtpd_junk_command_limit": "3",
        "smtpd_soft_error_limit": "2",
        "smtpd_discard_ehlo_keywords": "dsn",
    }


def syntaxSettings(directory: str) -> Dict[str, str]:
    return {"mydestination": "localhost, $myhostname",
            "local_recipient_maps": f"texthash:{_write(directory, 'users', USERS)}"}


def _keywords(reply: str) -> List[str]:
    """
    The extensions an EHLO reply announces, but those differing on
    purpose.
    """
    return sorted(line[4:].split(" ")[0].upper() for line in reply.splitlines()[1:]
                  if line[4:].split(" ")[0].upper() not in EHLO_DELIBERATE)


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# -- the tests ------------------------------------------------------------------------


class SessionAgreementTests(SynchronousTestCase):
    """
    Each configuration run on both servers, script by script.
    """

    def setUp(self) -> None:
        missing = postfixMissing()
        if missing:
            raise SkipTest(missing)
        if os.geteuid() != 0:
            raise SkipTest("a private Postfix needs root")
        self.base = shortTemporaryDirectory(self)
        self.tables = os.path.join(self.base, "tables")
        os.makedirs(self.tables)
        os.chmod(self.base, 0o755)

    def agree(self, name: str, settings: Dict[str, str], scripts: List[Script]) -> Agreement:
        postfix = PostfixSMTP(os.path.join(self.base, "postfix"), settings).start()
        self.addCleanup(postfix.stop)
        master, port = tmtaSMTP(self.base, settings)
        master.start()
        self.addCleanup(master.stop)
        agreement = Agreement(name)
        for script, source, steps in scripts:
            theirs = runSession(postfix.port, steps, source)
            ours = runSession(port, steps, source)
            for number, (a, b) in enumerate(zip(theirs, ours)):
                sent = a.sent.decode("utf-8", "replace").strip()[:60]
                case = f"{script} step {number} ({sent or 'greeting'})"
                if script in DELIBERATE:
                    continue
                agreement.compare(case, a.outcome, b.outcome,
                                  f"{a.reply.splitlines()[-1:]} / {b.reply.splitlines()[-1:]}")
                if a.sent[:4].upper() == b"EHLO" and a.outcome[0] == "250":
                    agreement.compare(f"{case} keywords", _keywords(a.reply),
                                      _keywords(b.reply))
        return agreement

    def configuration(self, name: str, settings: Callable[[str], Dict[str, str]],
                      scripts: Callable[[], List[Script]]) -> None:
        """
        Run one configuration's scripts on both servers; every step must
        agree.
        """
        self.check(self.agree(name, settings(self.tables), scripts()))

    def check(self, agreement: Agreement) -> None:
        print(agreement.report())
        for difference in agreement.differences:
            print("  " + difference)
        self.assertEqual([d for d in agreement.differences], [], agreement.report())

    def test_syntax(self) -> None:
        self.configuration("syntax", syntaxSettings, syntaxScripts)

    def test_restrictions(self) -> None:
        self.configuration("restrictions", restrictionSettings, restrictionScripts)

    def test_accessActions(self) -> None:
        self.configuration("access", accessSettings, accessScripts)

    def test_strict(self) -> None:
        self.configuration("strict", strictSettings, strictScripts)

    def test_early(self) -> None:
        self.configuration("early", earlySettings, earlyScripts)

    def test_options(self) -> None:
        self.configuration("options", optionSettings, optionScripts)

    def test_recipients(self) -> None:
        self.configuration("recipients", recipientSettings, recipientScripts)

    def test_names(self) -> None:
        self.configuration("names", nameSettings, nameScripts)

    def test_verify(self) -> None:
        self.configuration("verify", verifySettings, verifyScripts)

    def test_lists(self) -> None:
        self.configuration("lists", listSettings, listScripts)
