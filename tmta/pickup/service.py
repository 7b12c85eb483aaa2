"""
The pickup service: resident, woken by C{tmta-sendmail} and by the
master's timer, it hands each finished file in C{maildrop/} to cleanup
and removes it once cleanup has the message on disk.

A maildrop file is gossip written by an ordinary user.  The sender is
the file's owner (its login name, which cleanup qualifies with
C{$myorigin}); a sender the file names (C{-f}) is believed only from
root or the mail system's own account.  Files that are not regular,
not finished, or not readable as queue files are moved aside to
C{corrupt/} and logged.
"""

from __future__ import annotations

import os
import pwd
import stat
import time
from typing import Dict, List, Optional

from twisted.application.service import Service
from twisted.internet import defer, task, threads
from twisted.internet.protocol import Factory

from tmta.cleanup.client import CleanupClient, connectCleanup
from tmta.logging import Logger
from tmta.mail.receiving import receiveOverrides, receivingAttributes
from tmta.queue.qfile import (
    PROBE_ATTRIBUTE,
    VERIFY_REPORT,
    CorruptQueueFile,
    iterContent,
    readEnvelope,
)
from tmta.queue.qid import isQueueId
from tmta.wire import ServiceAMP
from tmta.wire.triggers import Wakeup

log = Logger()

#: Messages handed to cleanup at once: a flood of posted files is taken
#: at a steady pace rather than all together.
CONCURRENCY = 10

#: A temporary file older than this was left by a tmta-sendmail that
#: died: it is removed.
STALE_TEMPORARY = 86400


class Pickup:
    """
    The maildrop scanner.

    @param trusted: uids whose C{-f} sender is believed.
    """

    def __init__(self, reactor, queueDirectory: str, cleanup: CleanupClient,
                 sizeLimit: int, trusted=(0,),
                 receiving: Optional[Dict[str, str]] = None) -> None:
        self.reactor = reactor
        self.maildrop = os.path.join(queueDirectory, "maildrop")
        self.corrupt = os.path.join(queueDirectory, "corrupt")
        #: What could not be moved aside, by name: (device, inode), so
        #: that it is complained of once, not at every scan.
        self._stuck: dict = {}
        self.cleanup = cleanup
        self.sizeLimit = sizeLimit
        self.trusted = set(trusted)
        #: What each message carries to cleanup beyond its envelope
        #: (L{tmta.mail.receiving.receivingAttributes}).
        self.receiving = dict(receiving or {})
        self._running: Optional[defer.Deferred] = None
        self._again = False

    def wakeup(self) -> None:
        if self._running is not None:
            self._again = True
            return
        self._running = defer.Deferred.fromCoroutine(self._scanUntilQuiet())
        self._running.addErrback(lambda f: log.failure("pickup scan failed", f))
        self._running.addBoth(self._done)

    def _done(self, _) -> None:
        self._running = None

    async def _scanUntilQuiet(self) -> None:
        while True:
            self._again = False
            await self.scan()
            if not self._again:
                return

    async def scan(self) -> None:
        try:
            names = sorted(os.listdir(self.maildrop))
        except OSError as e:
            log.error("cannot list {path}: {error}", path=self.maildrop, error=e)
            return
        pending = [name for name in names if isQueueId(name) and not self._isStuck(name)]
        for name in names:
            if name.startswith(".") and not isQueueId(name):
                self._removeIfStale(name)
        work = (self._take(name) for name in pending)
        await defer.DeferredList([
            task.cooperate(_drive(work)).whenDone() for _ in range(CONCURRENCY)
        ])

    def _removeIfStale(self, name: str) -> None:
        path = os.path.join(self.maildrop, name)
        try:
            if time.time() - os.lstat(path).st_mtime > STALE_TEMPORARY:
                os.unlink(path)
                log.info("removed stale maildrop file {name}", name=name)
        except OSError:
            pass

    async def _take(self, name: str) -> None:
        path = os.path.join(self.maildrop, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        except OSError as e:
            self._setAside(name, f"cannot open: {e.strerror}")
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._setAside(name, "not a regular file", st)
                return
            if st.st_nlink != 1:
                # A hard link to a file its owner wrote elsewhere (a
                # root-owned file the poster can write, say): not posted
                # by that owner.
                self._setAside(name, f"uid={st.st_uid}: file has {st.st_nlink} links", st)
                return
            if not self._madeHere(st):
                self._setAside(name, f"uid={st.st_uid}: not made in maildrop (group "
                                     f"{st.st_gid})", st)
                return
            if st.st_size > self.sizeLimit + 1024 * 1024 and self.sizeLimit:
                self._setAside(name, f"too large ({st.st_size} bytes)")
                return
            with os.fdopen(os.dup(fd), "rb") as f:
                try:
                    envelope, content = await threads.deferToThreadPool(
                        self.reactor, self.reactor.getThreadPool(), _read, f)
                except CorruptQueueFile as e:
                    self._setAside(name, f"malformed: {e}")
                    return
        finally:
            os.close(fd)
        owner = _login(st.st_uid)
        if owner is None:
            self._setAside(name, f"owner uid {st.st_uid} has no account")
            return
        given = envelope.attributes.get("sender_given") == "yes"
        sender = envelope.sender if given and st.st_uid in self.trusted else owner
        attributes = {**self.receiving, "protocol": "local", "origin": "pickup",
                      "uid": str(st.st_uid), "login": owner}
        for key in ("full_name", "dsn_ret", "dsn_envid"):
            if key in envelope.attributes:
                attributes[key] = envelope.attributes[key]
        if envelope.attributes.get(PROBE_ATTRIBUTE) == VERIFY_REPORT:
            # sendmail -bv.  (Only that value: a probe of the verify
            # service's own is never taken from a user's file.)
            attributes[PROBE_ATTRIBUTE] = VERIFY_REPORT
        recipients = [(r.address, r.address, r.notify, "") if r.notify else
                      (r.address, r.address) for r in envelope.recipients]
        result = await self.cleanup.post(sender, attributes, recipients, content)
        code, reason, queueId = result["code"], result["reason"], result["queue_id"]
        if code == 250:
            log.info("{queueId}: uid={uid} from=<{sender}>", queueId=queueId,
                     uid=st.st_uid, sender=sender)
            os.unlink(path)
        elif code // 100 == 5:
            self._setAside(name, f"refused by cleanup: {code} {reason}")
        else:
            log.warn("{name}: cleanup: {code} {reason}; will try again", name=name, code=code,
                     reason=reason)

    def _madeHere(self, st: os.stat_result) -> bool:
        """
        Whether a file has the group that maildrop gives what is made in
        it (the directory is set-group-id): a file made elsewhere and
        moved or linked in keeps its own.
        """
        try:
            directory = os.stat(self.maildrop)
        except OSError:
            return False
        if not directory.st_mode & stat.S_ISGID:
            return True  # maildrop without set-group-id: nothing to tell by
        return st.st_gid == directory.st_gid

    def _isStuck(self, name: str) -> bool:
        identity = self._stuck.get(name)
        if identity is None:
            return False
        try:
            st = os.lstat(os.path.join(self.maildrop, name))
        except OSError:
            del self._stuck[name]
            return False
        if (st.st_dev, st.st_ino) != identity:
            del self._stuck[name]
            return False
        return True

    def _setAside(self, name: str, reason: str, st: Optional[os.stat_result] = None) -> None:
        log.warn("maildrop file {name}: {reason}; moved to corrupt/", name=name, reason=reason)
        try:
            os.rename(os.path.join(self.maildrop, name), os.path.join(self.corrupt, name))
        except OSError as e:
            log.error("maildrop file {name}: cannot move aside: {error}; left alone until "
                      "it changes", name=name, error=e)
            if st is not None:
                self._stuck[name] = (st.st_dev, st.st_ino)


def _drive(work):
    for take in work:
        yield defer.Deferred.fromCoroutine(take)


def _read(f):
    envelope = readEnvelope(f, maxRecipients=100000)
    return envelope, b"".join(iterContent(f, envelope))


def _login(uid: int) -> Optional[str]:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class PickupProtocol(ServiceAMP):
    def __init__(self, pickup: Pickup) -> None:
        super().__init__()
        self.pickup = pickup

    @Wakeup.responder
    def wakeup(self, reason=None, queue_id=None):
        self.pickup.wakeup()
        return {}


def configurationProblems(config, entry) -> List[str]:
    """
    What stops a pickup service from starting: a
    C{receive_override_options} value it does not know
    (L{tmta.interfaces.IComponent.configurationProblems}).
    """
    try:
        receiveOverrides(config.get("receive_override_options"))
    except ValueError as e:
        return [str(e)]
    return []


class PickupService(Service):
    def __init__(self, context) -> None:
        self.context = context
        config = context.config
        cleanup = CleanupClient(connectCleanup(context),
                                context.reactor, idle=config.getTime("ipc_idle"))
        trusted = {0}
        try:
            trusted.add(pwd.getpwnam(config.get("mail_owner")).pw_uid)
        except KeyError:
            pass
        trusted.add(os.getuid())
        self.pickup = Pickup(context.reactor, config.get("queue_directory"), cleanup,
                             config.getInt("message_size_limit"), trusted,
                             receivingAttributes(config))

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: PickupProtocol(self.pickup)))
        self._watch()
        self.pickup.wakeup()

    def _watch(self) -> None:
        """
        Watch maildrop/ with inotify where there is one: an ordinary
        user's tmta-sendmail cannot reach pickup's socket (public/ is
        the mail system's), so the file's arrival is the wake-up; the
        master's timer remains for systems without inotify.
        """
        try:
            from twisted.internet import inotify
            from twisted.python.filepath import FilePath
        except ImportError as e:
            log.warn("cannot watch {path} ({error}): posted mail waits for the next "
                     "timer wake-up", path=self.pickup.maildrop, error=e)
            return
        try:
            notifier = inotify.INotify(self.context.reactor)
            notifier.startReading()
            notifier.watch(FilePath(self.pickup.maildrop), mask=inotify.IN_MOVED_TO,
                           callbacks=[lambda *_: self.pickup.wakeup()])
        except Exception as e:
            log.warn("cannot watch {path} ({error}): posted mail waits for the next "
                     "timer wake-up", path=self.pickup.maildrop, error=e)
            return
        self._notifier = notifier

    def stopService(self):
        notifier = getattr(self, "_notifier", None)
        if notifier is not None:
            notifier.loseConnection()
        return super().stopService()
