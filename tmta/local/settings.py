"""
What a local delivery agent is configured to do, read once from main.cf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple


@dataclass(frozen=True)
class LocalSettings:
    """
    The parameters local(8) obeys.

    @ivar accounts: whether recipients are system accounts
        (C{local_mailbox_accounts} is not C{none}).
    @ivar spool: the directory mailboxes are reached through (a
        descriptor's C{/proc/self/fd/N} when the process was given one),
        without its trailing C{/}.
    @ivar spoolName: C{mail_spool_directory} as messages name it.
    @ivar spoolMaildir: whether mailboxes under the spool are Maildirs
        (C{mail_spool_directory} ends in C{/}).
    """

    myhostname: str
    accounts: bool
    spool: str
    spoolName: str
    spoolMaildir: bool
    homeMailbox: str
    aliasMaps: str
    delimiter: str
    dotlock: bool
    sizeLimit: int
    forwardPath: Tuple[str, ...]
    commandsFrom: FrozenSet[str]
    filesFrom: FrozenSet[str]
    mailboxCommand: str
    luserRelay: str
    mailboxTransport: str
    fallbackTransport: str
    ownerRequests: bool
    shell: str
    commandFilter: str
    export: Tuple[str, ...]
    timeLimit: float
    executionDirectory: str
    defaultPrivs: str
    duplicateLimit: int

    @classmethod
    def fromConfig(cls, config, spoolDirectory: Optional[str] = None) -> "LocalSettings":
        """
        Read the settings from main.cf.

        @param spoolDirectory: another name for C{mail_spool_directory}
            to reach it by; messages still name the directory itself.
        """
        spoolName = config.get("mail_spool_directory")
        spool = spoolDirectory or spoolName
        return cls(
            myhostname=config.get("myhostname"),
            accounts=config.get("local_mailbox_accounts").strip().lower() != "none",
            spool=spool.rstrip("/") or "/",
            spoolName=spoolName.rstrip("/") or "/",
            spoolMaildir=spool.endswith("/"),
            homeMailbox=config.get("home_mailbox"),
            aliasMaps=config.get("alias_maps"),
            delimiter=config.get("recipient_delimiter"),
            dotlock="dotlock" in config.getList("mailbox_delivery_lock"),
            sizeLimit=config.getInt("mailbox_size_limit"),
            forwardPath=tuple(config.getList("forward_path")),
            commandsFrom=frozenset(config.getList("allow_mail_to_commands")),
            filesFrom=frozenset(config.getList("allow_mail_to_files")),
            mailboxCommand=config.get("mailbox_command").strip(),
            luserRelay=config.get("luser_relay").strip(),
            mailboxTransport=config.get("mailbox_transport").strip(),
            fallbackTransport=config.get("fallback_transport").strip(),
            ownerRequests=config.getBool("owner_request_special"),
            shell=config.get("local_command_shell"),
            commandFilter=config.get("command_expansion_filter"),
            export=tuple(config.getList("export_environment")),
            timeLimit=config.getTime("command_time_limit"),
            executionDirectory=config.get("command_execution_directory"),
            defaultPrivs=config.get("default_privs"),
            duplicateLimit=config.getInt("duplicate_filter_limit"),
        )

    def publicPath(self, text: str) -> str:
        """
        C{text} with the spool named as the configuration names it, not
        as this process reaches it.
        """
        return text.replace(self.spool + "/", self.spoolName + "/")
