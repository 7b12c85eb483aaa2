"""
What an smtp or lmtp delivery service is asked to do and cannot: the
master refuses to start rather than send mail with less protection
than the operator asked for.
"""

from __future__ import annotations

from typing import List

from tmta.config import parseBool


def clientProblems(config, prefix: str) -> List[str]:
    """
    @param config: the service's configuration (main.cf with its C{-o}
        settings).
    @param prefix: C{"smtp"} or C{"lmtp"}.
    @return: one line per setting that cannot be honoured.
    """
    from tmta.smtp.sasl import SASLFailed, SASLPasswords
    from tmta.smtp.tls import TLSPolicies, TLSPolicyError

    problems = []
    try:
        TLSPolicies(config, prefix)
    except TLSPolicyError as e:
        problems.append(f"{prefix}_tls_security_level or {prefix}_tls_policy_maps: "
                        f"cannot be honoured: {e}")
    if _yes(config, f"{prefix}_tls_wrappermode"):
        problems.append(f"{prefix}_tls_wrappermode: cannot be honoured: TLS wrapper mode is "
                        "not implemented yet")
    if _yes(config, f"{prefix}_sasl_auth_enable"):
        try:
            SASLPasswords(config, prefix)
        except SASLFailed as e:
            problems.append(f"{prefix}_sasl_password_maps: cannot be honoured: {e}")
    return problems


def _yes(config, name: str) -> bool:
    value = config.get(name)
    if not value:
        return False
    try:
        return parseBool(value)
    except ValueError:
        return True  # not a boolean: the type check names it


def configurationProblems(config, entry) -> List[str]:
    """
    L{clientProblems} for an smtp or lmtp service
    (L{tmta.interfaces.IComponent.configurationProblems}).
    """
    return clientProblems(config, entry.command)
