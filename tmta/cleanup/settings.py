"""
What cleanup is configured to do, read once from main.cf.  The address
mappings and content checks, which open tables, are built beside it
(L{tmta.cleanup.addresses}, L{tmta.mail.contentchecks}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class CleanupSettings:
    """
    The parameters cleanup(8) obeys.

    @ivar headerRewriteClients: C{local_header_rewrite_clients}: whose
        mail has its header addresses rewritten.
    """

    myhostname: str
    messageSizeLimit: int
    headerSizeLimit: int
    hopcountLimit: int
    duplicateFilterLimit: int
    inFlowDelay: float
    headerRewriteClients: Tuple[str, ...]

    @classmethod
    def fromConfig(cls, config) -> "CleanupSettings":
        """
        Read the settings from main.cf.
        """
        return cls(
            myhostname=config.get("myhostname"),
            messageSizeLimit=config.getInt("message_size_limit"),
            headerSizeLimit=config.getInt("header_size_limit"),
            hopcountLimit=config.getInt("hopcount_limit"),
            duplicateFilterLimit=config.getInt("duplicate_filter_limit"),
            inFlowDelay=config.getTime("in_flow_delay"),
            headerRewriteClients=tuple(config.getList("local_header_rewrite_clients")),
        )
