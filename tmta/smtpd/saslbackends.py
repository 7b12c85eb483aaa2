"""
The SASL backend smtpd checks AUTH with, by C{smtpd_sasl_type}: one of
the types built in (C{dovecot} and C{tmta}) or a plugin's, each an
L{tmta.interfaces.ISASLBackendType}.
"""

from __future__ import annotations

from typing import Dict

from zope.interface import implementer

from tmta.common.plugins import PluginError, findPlugin
from tmta.interfaces import ISASLBackendType
from tmta.sasl import BACKEND_TYPES, dovecotSocket, passwordFile


@implementer(ISASLBackendType)
class DovecotBackendType:
    """
    C{smtpd_sasl_type = dovecot}: Dovecot's authentication service, on
    the socket C{smtpd_sasl_path} names.
    """

    name = "dovecot"

    def open(self, config, reactor):
        from tmta.sasl.dovecot import DovecotBackend

        return DovecotBackend(dovecotSocket(config, config.get("smtpd_sasl_path").strip()),
                              reactor)


@implementer(ISASLBackendType)
class PasswordTableBackendType:
    """
    C{smtpd_sasl_type = tmta}: tmta's own password table.
    """

    name = "tmta"

    def open(self, config, reactor):
        from tmta.sasl.passwords import PasswordTableBackend

        return PasswordTableBackend(passwordFile(config), reactor)


#: The types built in, found before any plugin's (the names
#: L{tmta.sasl.BACKEND_TYPES} gives the configuration checks).
BUILTIN_TYPES: Dict[str, ISASLBackendType] = {
    backend.name: backend for backend in (DovecotBackendType(), PasswordTableBackendType())}


def brokenBackend(kind: str) -> str:
    """
    Why the plugin that claims C{smtpd_sasl_type = kind} cannot be used
    (it does not provide L{ISASLBackendType}), or C{""}.  A type nothing
    claims is L{tmta.config.safety}'s to refuse.
    """
    if kind in BACKEND_TYPES:
        return ""
    try:
        findPlugin(ISASLBackendType, kind)
    except PluginError as e:
        return f"smtpd_sasl_type = {kind}: {e}"
    return ""


def openBackend(config, reactor):
    """
    The backend C{smtpd_sasl_type} names, set up from C{smtpd_sasl_path}.

    A type other than the built-in C{dovecot} and C{tmta} is looked for
    among the plugins (L{tmta.interfaces.ISASLBackendType}).

    @raise ValueError: a type nothing implements (Postfix's default,
        C{cyrus}, among them, unless a plugin adds it), or a plugin that
        does not provide its interface: AUTH must not silently be off.
    """
    kind = config.get("smtpd_sasl_type").strip().lower()
    backendType = BUILTIN_TYPES.get(kind)
    if backendType is not None:
        return backendType.open(config, reactor)
    try:
        backendType = findPlugin(ISASLBackendType, kind)
    except PluginError as e:
        raise ValueError(f"smtpd_sasl_type = {kind}: {e}")
    if backendType is None:
        raise ValueError(f"smtpd_sasl_type = {kind}: not implemented "
                         "(use dovecot or tmta, or install a plugin that adds it)")
    return backendType.open(config, reactor)
