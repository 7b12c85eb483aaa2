"""
Tests for L{tmta.common.credentials}: an account's identity taken by one
thread of a process.
"""

import os
import pwd
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.support import testAccount
from tmta.common import credentials


def _inThread(function):
    """
    Run C{function} in a new thread and return what it returned (or
    raise what it raised).
    """
    outcome = {}

    def run():
        try:
            outcome["result"] = function()
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class EffectiveIdentityTests(SynchronousTestCase):
    def setUp(self):
        if os.geteuid() != 0:
            raise self.skipTest("changing identity takes root")
        self.account = pwd.getpwnam(testAccount())

    def test_threadOnly(self):
        """
        A thread takes the account's user, group and only group, and
        becomes root again; on Linux the process's other threads stay
        root meanwhile, and a thread it starts inherits its identity.
        """
        uid, gid = self.account.pw_uid, self.account.pw_gid
        groupsBefore = os.getgroups()
        changed, checked = threading.Event(), threading.Event()
        seen = {}

        def deliver():
            credentials.setEffectiveIdentity(uid, gid, [gid])
            try:
                seen["during"] = (os.geteuid(), os.getegid(), os.getgroups())
                seen["child"] = _inThread(lambda: (os.geteuid(), os.getegid()))
                changed.set()
                checked.wait(10)
            finally:
                credentials.restoreRoot()
            seen["after"] = (os.geteuid(), os.getegid(), os.getgroups())

        thread = threading.Thread(target=deliver)
        thread.start()
        try:
            self.assertTrue(changed.wait(10))
            meanwhile = (os.geteuid(), os.getegid(), os.getgroups())
        finally:
            checked.set()
            thread.join()
        self.assertEqual(seen["during"], (uid, gid, [gid]))
        self.assertEqual(seen["child"], (uid, gid))
        self.assertEqual(seen["after"], (0, 0, []))
        if credentials.perThread():
            self.assertEqual(meanwhile, (0, 0, groupsBefore))
        else:
            self.assertEqual(meanwhile, (uid, gid, [gid]))

    def test_refused(self):
        """
        A change the thread may not make raises L{OSError}, and leaves it
        as it was.
        """
        uid, gid = self.account.pw_uid, self.account.pw_gid

        def twice():
            credentials.setEffectiveIdentity(uid, gid, [gid])
            try:
                self.assertRaises(OSError, credentials.setEffectiveIdentity,
                                  uid + 1, gid + 1, [gid + 1])
                return (os.geteuid(), os.getegid())
            finally:
                credentials.restoreRoot()

        self.assertEqual(_inThread(twice), (uid, gid))
        self.assertEqual(os.geteuid(), 0)

    def test_perThreadOnLinux(self):
        """
        On the machines whose system call numbers tmta knows, the change
        is the thread's alone.
        """
        if os.uname().sysname != "Linux" or os.uname().machine not in ("x86_64", "aarch64"):
            raise self.skipTest("only Linux on x86-64 and arm64 change one thread")
        self.assertTrue(credentials.perThread())
