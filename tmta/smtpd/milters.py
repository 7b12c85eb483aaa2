"""
The milter macros of an SMTP session (C{smtpd_milters}; Postfix's
C{smtpd_milter.c}): what each of them is worth in the session's present
state.  The session's milters themselves are a
L{tmta.milter.session.SessionMilters}.
"""

from __future__ import annotations

from typing import Optional


def milterMacro(session, name: str) -> Optional[str]:
    """
    The value of macro C{name} in an SMTP session's present state
    (L{tmta.smtpd.protocol.SMTPServer}), as Postfix's
    C{smtpd_milter_eval} gives it; C{None} when it has none now.  C{i},
    the queue id, is given by cleanup, which makes it.
    """
    key = name[1:-1] if name.startswith("{") and name.endswith("}") else name
    settings = session.settings
    transport = session.transport
    if key == "j":
        return settings.myhostname
    if key == "daemon_name":
        return settings.milterDaemonName or settings.myhostname
    if key == "v":
        return settings.milterVersionMacro
    if key == "_":
        text = f"{session.reverseClientName} [{session.clientAddress}]"
        if session.clientName != session.reverseClientName:
            text += " (may be forged)"
        return text
    if key == "client_addr":
        return session.clientAddress
    if key == "client_name":
        return session.clientName
    if key == "client_ptr":
        return session.reverseClientName
    if key == "client_port":
        peer = transport.getPeer() if transport is not None else None
        return str(getattr(peer, "port", 0) or 0)
    if key == "client_resolve":
        return "OK" if session.clientName != "unknown" else "FAIL"
    if key in ("daemon_addr", "daemon_port"):
        host = transport.getHost() if transport is not None else None
        value = getattr(host, "host" if key == "daemon_addr" else "port", None)
        return None if value is None else str(value)
    if key in ("tls_version", "cipher", "cipher_bits"):
        return _tlsMacro(session, key)
    if key == "auth_authen":
        return session.saslUsername
    if key == "auth_type":
        return session.saslMethod if session.saslUsername is not None else None
    if key == "auth_author":
        return None
    if key == "mail_addr":
        return session.sender
    if key in ("rcpt_addr", "rcpt_host", "rcpt_mailer", "mail_host", "mail_mailer"):
        return session.milterAddressMacros.get(key)
    return None


def _tlsMacro(session, key: str) -> Optional[str]:
    if session.tlsSummary is None or session.transport is None:
        return None
    try:
        connection = session.transport.getHandle()
        if key == "tls_version":
            return connection.get_protocol_version_name()
        if key == "cipher":
            return connection.get_cipher_name()
        return str(connection.get_cipher_bits())
    except Exception:
        return None


__all__ = ["milterMacro"]
