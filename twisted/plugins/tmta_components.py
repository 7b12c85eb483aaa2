"""
tmta's built-in components, as plugins.  Each names the module that
builds it, imported only in the worker that runs it, so that the master
and the other workers do not carry its code.
"""

from __future__ import annotations

import importlib

from twisted.plugin import IPlugin
from zope.interface import implementer

from tmta.interfaces import IComponent


@implementer(IPlugin, IComponent)
class BuiltinComponent:
    """
    A component whose service is built by C{module.function(context)}.

    @ivar limitParameter: the main.cf parameter holding the per-process
        client limit, or C{None} for one client at a time.
    @ivar checker: C{module:function} that finds the problems in a
        service's configuration (imported by the master only when the
        service is configured), or C{None} when there can be none.
    """

    def __init__(self, name, target, resident=False, limitParameter=None, fixedLimit=1,
                 rootUnless=None, checker=None, worldReachable=False, busyReply=None):
        self.name = name
        self.target = target
        self.resident = resident
        self.limitParameter = limitParameter
        self.fixedLimit = fixedLimit
        self.rootUnless = rootUnless
        self.checker = checker
        self.worldReachable = worldReachable
        self.busyReply = busyReply

    def needsRoot(self, config, unpriv):
        if unpriv:
            return False
        if self.rootUnless is not None:
            name, value = self.rootUnless
            return config.get(name).strip().lower() != value
        return True

    def clientLimit(self, config):
        if self.limitParameter:
            return config.getInt(self.limitParameter)
        return self.fixedLimit

    def configurationProblems(self, config, entry):
        if self.checker is None:
            return []
        return _load(self.checker)(config, entry)

    def makeService(self, context):
        return _load(self.target)(context)


def _load(target):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _agent(kind):
    return f"tmta.delivery.agents:{kind}"


# The master answers SMTP clients itself when every smtpd is busy.
smtpd = BuiltinComponent("smtpd", "tmta.smtpd.service:SMTPService",
                         limitParameter="smtpd_process_client_limit",
                         checker="tmta.smtpd.checking:configurationProblems",
                         busyReply=b"421 4.3.2 All server ports are busy\r\n")
cleanup = BuiltinComponent("cleanup", "tmta.cleanup.service:CleanupService", fixedLimit=1000,
                           checker="tmta.cleanup.service:configurationProblems")
qmgr = BuiltinComponent("qmgr", "tmta.qmgr.service:QmgrService", resident=True, fixedLimit=1000)
pickup = BuiltinComponent("pickup", "tmta.pickup.service:PickupService", resident=True,
                          fixedLimit=100, checker="tmta.pickup.service:configurationProblems")
# Any local user may ask showq for the queue listing.
showq = BuiltinComponent("showq", "tmta.showq:ShowqService", fixedLimit=100,
                         worldReachable=True)
rewrite = BuiltinComponent("trivial-rewrite", "tmta.rewrite.service:RewriteService",
                           fixedLimit=1000)
bounce = BuiltinComponent("bounce", "tmta.bounce.service:BounceService", fixedLimit=100)
# local changes identity per recipient; with no system accounts every
# delivery is made as mail_owner, so it gives up root like the others.
local = BuiltinComponent("local", "tmta.local.service:makeLocalService",
                         rootUnless=("local_mailbox_accounts", "none"))
discard = BuiltinComponent("discard", _agent("makeDiscard"), fixedLimit=100)
error = BuiltinComponent("error", _agent("makeError"), fixedLimit=100)
# The SMTP and LMTP clients multiplex: many deliveries per process.
smtp = BuiltinComponent("smtp", "tmta.smtp.service:makeSMTPService", fixedLimit=100,
                        checker="tmta.smtp.problems:configurationProblems")
lmtp = BuiltinComponent("lmtp", "tmta.smtp.service:makeLMTPService", fixedLimit=100,
                        checker="tmta.smtp.problems:configurationProblems")
# virtual takes each mailbox's uid for its delivery.
virtual = BuiltinComponent("virtual", "tmta.virtual:makeVirtualService")
# pipe keeps root to run its command as the entry's user=.
pipe = BuiltinComponent("pipe", "tmta.pipe:makePipeService",
                        checker="tmta.pipe:configurationProblems")
# spawn keeps root to run its program as the entry's user=.
spawn = BuiltinComponent("spawn", "tmta.spawn:makeSpawnService",
                         checker="tmta.spawn:configurationProblems")
# anvil counts for every smtpd: one process.
anvil = BuiltinComponent("anvil", "tmta.anvil:makeAnvilService", resident=True, fixedLimit=1000,
                         checker="tmta.anvil.shared:configurationProblems")
# postscreen screens every client of port 25 in one process, before smtpd.
postscreen = BuiltinComponent("postscreen", "tmta.postscreen.service:PostscreenService",
                              fixedLimit=10000,
                              checker="tmta.postscreen.service:configurationProblems")
# proxymap holds the connections to the tables on other servers for
# every process that names them proxy:.
proxymap = BuiltinComponent("proxymap", "tmta.proxymap.service:ProxymapService",
                            fixedLimit=1000)
# verify keeps the address verification cache for every smtpd: one
# process (its cache lives in address_verify_map between processes).
verify = BuiltinComponent("verify", "tmta.verify.service:makeVerifyService", fixedLimit=1000)
