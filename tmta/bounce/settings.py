"""
What the bounce service is configured to do, read once from main.cf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet


@dataclass(frozen=True)
class BounceSettings:
    """
    The parameters bounce(8) obeys.

    @ivar notifyClasses: C{notify_classes}, lower-cased: which troubles
        the postmaster hears of.
    """

    myhostname: str
    sizeLimit: int
    notifyClasses: FrozenSet[str]
    doubleBounceRecipient: str
    bounceRecipient: str
    delayRecipient: str
    ipcIdle: float

    @classmethod
    def fromConfig(cls, config) -> "BounceSettings":
        """
        Read the settings from main.cf.
        """
        return cls(
            myhostname=config.get("myhostname"),
            sizeLimit=config.getInt("bounce_size_limit"),
            notifyClasses=frozenset(c.lower() for c in config.getList("notify_classes")),
            doubleBounceRecipient=config.get("2bounce_notice_recipient"),
            bounceRecipient=config.get("bounce_notice_recipient"),
            delayRecipient=config.get("delay_notice_recipient"),
            ipcIdle=config.getTime("ipc_idle"),
        )
