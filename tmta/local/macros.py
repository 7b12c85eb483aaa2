"""
The names local(8) expands: recipient extensions, C{forward_path}
entries and C{luser_relay}.
"""

from __future__ import annotations

import pwd
import re
from typing import Optional, Tuple

from tmta.mail.address import splitAddress, unquoteLocal


def splitExtension(name: str, delimiters: str) -> Tuple[str, str]:
    """
    C{name} as its base and its extension, split at the first of
    C{recipient_delimiter}'s characters that it holds after at least one
    character.
    """
    for d in delimiters:
        if d in name:
            base, _, extension = name.partition(d)
            if base:
                return base, extension
    return name, ""


def expandForwardPath(template: str, account: pwd.struct_passwd, extension: str,
                      delimiters: str) -> Optional[str]:
    """
    One C{forward_path} entry with C{$home}, C{$user}, C{$extension},
    C{$recipient_delimiter} and C{${name?value}} expanded; C{None} when
    it names nothing (an extension-only entry without an extension).
    """
    values = {"home": account.pw_dir, "user": account.pw_name, "extension": extension,
              "recipient_delimiter": delimiters[:1] if extension else "",
              "shell": account.pw_shell}
    missing = False

    def expand(match: "re.Match") -> str:
        nonlocal missing
        name = match.group(1) or match.group(4)
        conditional, alternative = match.group(2), match.group(3)
        value = values.get(name, "")
        if conditional == "?":
            return alternative if value else ""
        if conditional == ":":
            return "" if value else alternative
        if name == "extension" and not value:
            missing = True
        return value

    path = re.sub(r"\$\{(\w+)(?:([?:])([^}]*))?\}|\$(\w+)", expand, template)
    if missing or not path.startswith("/"):
        return None
    return path


def expandUserMacros(template: str, user: str, extension: str, recipient: str,
                     delimiters: str) -> str:
    """
    C{luser_relay} with C{$user}, C{$extension}, C{$recipient}, C{$local},
    C{$domain} and C{$recipient_delimiter} expanded.
    """
    local, domain = splitAddress(recipient)
    values = {"user": user, "extension": extension, "recipient": recipient,
              "local": unquoteLocal(local), "domain": domain,
              "recipient_delimiter": delimiters[:1]}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), template)
