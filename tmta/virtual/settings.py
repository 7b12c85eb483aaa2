"""
What the virtual delivery agent is configured to do, read once from
main.cf.  Its tables (C{virtual_mailbox_maps}, C{virtual_uid_maps},
C{virtual_gid_maps}) are opened beside it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VirtualSettings:
    """
    The parameters virtual(8) obeys.

    @ivar base: C{virtual_mailbox_base}, which every mailbox path is
        under.
    """

    base: str
    minimumUid: int
    sizeLimit: int
    dotlock: bool
    delimiter: str

    @classmethod
    def fromConfig(cls, config) -> "VirtualSettings":
        """
        Read the settings from main.cf.
        """
        return cls(
            base=config.get("virtual_mailbox_base"),
            minimumUid=config.getInt("virtual_minimum_uid"),
            sizeLimit=config.getInt("virtual_mailbox_limit"),
            dotlock="dotlock" in config.getList("virtual_mailbox_lock"),
            delimiter=config.get("recipient_delimiter"),
        )
