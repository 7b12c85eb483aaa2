"""
The tables asked of a server over a socket: C{socketmap:} (against
Debian's postfix-mta-sts-resolver and a scripted server), C{tcp:} (a
scripted server) and C{memcache:} (a private memcached, with a backup
table), each held key by key against C{postmap -q} on the same server.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from typing import List

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.differential import (
    Agreement,
    configDirectory,
    postfixHasTableType,
    postfixMissing,
)
from tests.support import (
    accepting,
    endToEnd,
    freePort,
    inThread,
    sendMessage,
    settled,
    stopProcess,
    waitFor,
)
from tests.test_smtp import RelayHarness
from tmta.cli.admin import queryMap
from tmta.tables import TableLookupError, openTable
from tmta.tables.tcp import hexQuote, hexUnquote

#: What the scripted servers answer: a value, or one of the special
#: answers below.
ENTRIES = {
    "ann@example.org": "ann@mail.example.org",
    "with space": "a value with spaces, and % signs",
    "percent%key": "found",
    "caf\u00e9@example.org": "utf-8 value \u00e9",
    "temp": "<TEMP>",
    "perm": "<PERM>",
    "timeout": "<TIMEOUT>",
    "empty": "",
}

KEYS = list(ENTRIES) + ["nobody@example.org", "ANN@EXAMPLE.ORG", "a" * 200, "x\ty", "%41",
                        "semi;colon", "comma,key", "colon:key", "brace{}", "ann@example.org "]



class _Handler(socketserver.StreamRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.server.connections.append(self.request)  # type: ignore[attr-defined]

    def handle(self) -> None:
        try:
            while True:
                if not self.server.serve(self):  # type: ignore[attr-defined]
                    return
        except (OSError, ValueError):
            return


class _SocketmapServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def serve(self, handler) -> bool:
        length = b""
        while not length.endswith(b":"):
            c = handler.rfile.read(1)
            if not c:
                return False
            length += c
        data = handler.rfile.read(int(length[:-1]) + 1)[:-1].decode("utf-8", "surrogateescape")
        name, _, key = data.partition(" ")
        value = ENTRIES.get(key) if name == "postfix" else None
        if value is None:
            reply = "NOTFOUND "
        elif value.startswith("<"):
            reply = f"{value.strip('<>')} the server says so"
        else:
            reply = f"OK {value}"
        encoded = reply.encode("utf-8", "surrogateescape")
        handler.wfile.write(b"%d:%s," % (len(encoded), encoded))
        return True


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def serve(self, handler) -> bool:
        line = handler.rfile.readline()
        if not line:
            return False
        command, _, quoted = line.rstrip(b"\n").partition(b" ")
        key = hexUnquote(quoted).decode("utf-8", "surrogateescape")
        value = ENTRIES.get(key)
        if value is None:
            reply = b"500 " + hexQuote(b"not here")
        elif value.startswith("<"):
            reply = b"400 " + hexQuote(b"try again")
        else:
            reply = b"200 " + hexQuote(value.encode("utf-8"))
        handler.wfile.write(reply + b"\n")
        return True


def _stop(server) -> None:
    """
    Stop serving, and close the connections being served.
    """
    server.shutdown()
    server.server_close()
    for connection in server.connections:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _serve(server_class) -> socketserver.ThreadingTCPServer:
    server = server_class(("127.0.0.1", 0), _Handler)
    server.connections = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class NetworkTableTests(SynchronousTestCase):
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)


    def agree(self, name: str, spec: str, keys: List[str]) -> Agreement:
        """
        C{tmta map query} and C{postmap -q}, key by key, one key per
        query (a lookup error ends a C{postmap -q -} run).
        """
        missing = postfixMissing()
        if missing:
            raise SkipTest(missing)
        postfixConfig = configDirectory(os.path.join(self.base, "postfix"))
        settled(os.path.join(postfixConfig, "main.cf"))
        kind = spec.split(":", 1)[0]
        if not postfixHasTableType(kind, postfixConfig):
            raise SkipTest(f"this Postfix has no {kind}: tables")
        agreement = Agreement(name)
        for key in keys:
            postmap = subprocess.run(["/usr/sbin/postmap", "-c", postfixConfig, "-q", key,
                                      spec], capture_output=True, timeout=60)
            stderr = postmap.stderr.decode("utf-8", "replace")
            failed = "fatal:" in stderr or " error" in stderr
            postfix = postmap.stdout.decode("utf-8", "surrogateescape").rstrip("\n") \
                if postmap.returncode == 0 else None
            out, err = io.StringIO(), io.StringIO()
            status = inThread(queryMap, spec, [key], out, err)
            tmta = out.getvalue().rstrip("\n") if status == 0 else None
            agreement.compare(f"{key!r}", "error" if failed else postfix,
                              "error" if status == 2 else tmta, stderr + err.getvalue())
        print(agreement.report())
        self.assertEqual(agreement.differences, [], agreement.report())
        return agreement

    def test_socketmap(self):
        """
        socketmap: answers OK, NOTFOUND, and TEMP, TIMEOUT, PERM as
        lookup errors, as Postfix reads them.
        """
        server = _serve(_SocketmapServer)
        self.addCleanup(_stop, server)
        port = server.server_address[1]
        self.agree("socketmap", f"socketmap:inet:127.0.0.1:{port}:postfix", KEYS)
        table = openTable(f"socketmap:inet:127.0.0.1:{port}:other")
        self.assertIsNone(inThread(table.get, "ann@example.org"))

    def test_tcp(self):
        server = _serve(_TCPServer)
        self.addCleanup(_stop, server)
        self.agree("tcp", f"tcp:127.0.0.1:{server.server_address[1]}", KEYS)

    def test_serverGone(self):
        """
        A server that cannot be reached is a lookup error, not "not
        found"; once it is back (after a second), lookups succeed.
        """
        port = freePort()
        table = openTable(f"socketmap:inet:127.0.0.1:{port}:postfix")
        self.assertRaises(TableLookupError, inThread, table.get, "ann@example.org")
        server = _SocketmapServer(("127.0.0.1", port), _Handler)
        server.connections = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(_stop, server)
        time.sleep(1.1)
        self.assertEqual(inThread(table.get, "ann@example.org"), "ann@mail.example.org")

    def test_mtaStsResolver(self):
        """
        Debian's postfix-mta-sts-resolver, a real socketmap server: a
        domain without a policy is not found, through tmta as through
        Postfix.
        """
        endToEnd()
        if not shutil.which("mta-sts-daemon"):
            raise SkipTest("Debian's postfix-mta-sts-resolver is not installed")
        port = freePort()
        config = os.path.join(self.base, "mta-sts.yml")
        with open(config, "w") as f:
            f.write(f"host: 127.0.0.1\nport: {port}\nshutdown_timeout: 1\n"
                    "cache:\n  type: internal\n  options:\n    cache_size: 100\n"
                    "default_zone:\n  strict_testing: false\n  timeout: 2\n")
        log = os.path.join(self.base, "mta-sts.log")
        with open(log, "w") as out:
            # Debian's Python runs it: not with this Python's module path
            # (trial's parallel workers set PYTHONPATH).
            daemon = subprocess.Popen(["mta-sts-daemon", "-c", config], stdout=out,
                                      stderr=subprocess.STDOUT,
                                      env={k: v for k, v in os.environ.items()
                                           if not k.startswith("PYTHON")})
        self.addCleanup(stopProcess, daemon)
        waitFor(lambda: accepting(port) or daemon.poll() is not None, timeout=90,
                what="mta-sts-daemon to listen")
        if daemon.poll() is not None:
            with open(log) as f:
                self.fail(f"mta-sts-daemon exited: {f.read()}")
        self.agree("mta-sts", f"socketmap:inet:127.0.0.1:{port}:postfix",
                   ["example.org", "no-policy.test", "[127.0.0.1]", "localhost"])

    def test_memcache(self):
        """
        memcache: a value memcached holds; one it lacks comes from the
        backup table and is then kept in memcached; with memcached
        down, the backup still answers.
        """
        endToEnd()
        if not shutil.which("memcached"):
            raise SkipTest("Debian's memcached is not installed")
        port = freePort()
        daemon = subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                                   "-u", "nobody", "-m", "16"])
        self.addCleanup(stopProcess, daemon)
        waitFor(lambda: accepting(port), what="memcached to listen")
        _memcached(port, b"set ann@example.org 0 0 20\r\nann@mail.example.org\r\n")
        backup = os.path.join(self.base, "backup")
        with open(backup, "w") as f:
            f.write("bob@example.org bob@mail.example.org\nann@example.org never-asked\n")
        config = os.path.join(self.base, "memcache.cf")
        with open(config, "w") as f:
            f.write(f"memcache = inet:127.0.0.1:{port}\nbackup = texthash:{backup}\n"
                    "ttl = 600\n")
        settled(config)
        spec = f"memcache:{config}"
        self.agree("memcache", spec, ["ann@example.org", "bob@example.org", "nobody@example.org",
                                      "with space", ""])
        self.assertIn(b"bob@mail.example.org", _memcached(port, b"get bob@example.org\r\n"))
        formatted = os.path.join(self.base, "formatted.cf")
        with open(formatted, "w") as f:
            f.write(f"memcache = inet:127.0.0.1:{port}\nkey_format = user:%u\n"
                    "domain = example.org\n")
        _memcached(port, b"set user:cy 0 0 2\r\ncy\r\n")
        table = openTable(f"memcache:{formatted}")
        self.assertEqual([inThread(table.get, k) for k in ("cy@example.org", "cy@other.test",
                                                               "@example.org")],
                         ["cy", None, None])
        stopProcess(daemon)
        table = openTable(spec)
        self.assertEqual(inThread(table.get, "bob@example.org"), "bob@mail.example.org")
        self.assertRaises(TableLookupError, inThread, openTable(f"memcache:{formatted}").get,
                          "cy@example.org")



def _memcached(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command)
        time.sleep(0.1)
        return s.recv(65536)




class RemotePolicyRelayTests(RelayHarness, SynchronousTestCase):
    """
    The SMTP client's TLS policy asked of a C{tcp:} server: delivered
    by what it answers, deferred (never sent without its policy) while
    it cannot be asked.
    """

    def test_policyFromServer(self):
        endToEnd()
        self.startSink()
        nexthop = f"[127.0.0.1]:{self.sinkPort}"
        ENTRIES[nexthop] = "none"
        self.addCleanup(ENTRIES.pop, nexthop)
        server = _serve(_TCPServer)
        master = self.startMaster(smtp_tls_policy_maps=f"tcp:127.0.0.1:{server.server_address[1]}",
                                  smtp_tls_security_level="encrypt")
        sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "by policy")
        waitFor(lambda: self.dumped(), what="the message at the sink")
        _stop(server)
        sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "no policy")
        waitFor(lambda: "TLS policy lookup" in master.log(), what="the deferral")
        self.assertEqual(len(self.dumped()), 1)


class RemoteMilterMapsTests(SynchronousTestCase):
    """
    C{smtpd_milter_maps} asked of a C{tcp:} server: its C{DISABLE} for
    the client lets the session go on without the (unreachable) milters
    C{smtpd_milters} names; with the server gone, the client is told to
    come back (421), never let in without its milters.
    """

    def test_milterMapsFromServer(self):
        endToEnd()
        from tests.support import MASTER_CF, Master, localMaildirs, shortTemporaryDirectory

        ENTRIES["127.0.0.1"] = "DISABLE"
        self.addCleanup(ENTRIES.pop, "127.0.0.1")
        server = _serve(_TCPServer)
        base = shortTemporaryDirectory(self)
        port = freePort()
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(base + "/mail/"),
            "smtpd_milters": f"inet:127.0.0.1:{freePort()}", "milter_default_action": "reject",
            "smtpd_milter_maps": f"tcp:127.0.0.1:{server.server_address[1]}",
        }, MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        sendMessage(port, "alice@localhost", ["bob@localhost"], "no milters for this client")
        _stop(server)
        import smtplib

        client = smtplib.SMTP()
        code, reply = client.connect("127.0.0.1", port)
        client.close()
        self.assertEqual((code, reply.split()[-3:]), (421, [b"Server", b"configuration",
                                                           b"error"]))
