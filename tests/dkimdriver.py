"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_dkim.OpenDKIMInteroperationTests}: tmta's DKIM against
OpenDKIM, each verifying the other's signatures through the DNS.

A key made by C{tmta dkim keygen} and one made by C{opendkim-genkey} are
published by a twisted.names server on port 53 of loopback, which the
namespace's /etc/resolv.conf names.  Then:

  - C{opendkim-testkey} checks tmta's key against its record;
  - a real master signs mail from an internal client (its signing
    table names the key), and a private OpenDKIM, as the milter of
    another smtpd, verifies the signature -- as tmta does, with its own
    verification on;
  - a private OpenDKIM signs mail as the milter of a third smtpd, and
    tmta verifies that signature;
  - each message, its body altered, fails both.

What it saw goes to the test as JSON (L{tests.support.namespace}).
"""

import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support import (  # noqa: E402
    MASTER_CF,
    Master,
    accepting,
    freePort,
    localMaildirs,
    maildirMessages,
    stopProcess,
    waitFor,
)
from tests.support.namespace import namespaceScenario, testZone  # noqa: E402

#: An address outside the master's mynetworks and dkim_internal_hosts.
OUTSIDE = "127.0.0.5"


def _txt(name: str, text: str) -> str:
    strings = ", ".join(repr(text[i:i + 250].encode()) for i in range(0, len(text), 250))
    return f"    TXT({name!r}, {strings}),\n"


def makeKeys(keys: str):
    """
    tmta's key for signer.test (selector tmta) and OpenDKIM's for
    odk.test (selector odk); their records, and what the key command
    printed.
    """
    printed = subprocess.run(
        [sys.executable, "-m", "tmta.cli.admin", "dkim", "keygen", "-d", "signer.test",
         "-s", "tmta", "-D", keys], check=True, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=REPO)).stdout
    tmtaRecord = "".join(re.findall(r'"([^"]*)"', printed.splitlines()[0]))
    subprocess.run(["opendkim-genkey", "-D", keys, "-d", "odk.test", "-s", "odk"], check=True)
    with open(os.path.join(keys, "odk.txt")) as f:
        odkRecord = "".join(re.findall(r'"([^"]*)"', f.read()))
    return tmtaRecord, odkRecord, printed


def opendkim(base: str, name: str, settings: str, atEnd) -> int:
    port = freePort()
    path = os.path.join(base, f"{name}.conf")
    with open(path, "w") as f:
        # RequireSafeKeys no: the keys are under /tmp, which OpenDKIM
        # otherwise refuses as open to other users.
        f.write(f"Socket inet:{port}@127.0.0.1\nBackground no\nSyslog no\n"
                f"RequireSafeKeys no\nPidFile {base}/{name}.pid\n"
                f"ResolverConfiguration {base}/unbound.conf\n" + settings)
    process = subprocess.Popen(["opendkim", "-f", "-x", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atEnd(lambda: stopProcess(process))
    waitFor(lambda: accepting(port), what=f"OpenDKIM ({name})")
    return port


def onward(message: bytes) -> bytes:
    """
    A delivered message as the next server would be sent it: without
    what the delivery added, CRLF line ends.
    """
    lines = [line for line in message.splitlines(True)
             if not line.startswith((b"Return-Path:", b"Delivered-To:"))]
    return b"".join(lines).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def send(port: int, sender: str, recipient: str, message: bytes, source: str) -> None:
    client = smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=(source, 0))
    client.sendmail(sender, [recipient], message)
    client.quit()


def scenario(keys: str):
    def run(base: str, observed: dict, atEnd) -> None:
        # OpenDKIM resolves with libunbound: told to forward to the
        # zone's server on loopback (which unbound otherwise never asks),
        # with no trust anchor (the test zone is not signed), and to ask
        # about .test at all (unbound answers for it itself by default).
        with open(os.path.join(base, "unbound.conf"), "w") as f:
            f.write('server:\n  do-not-query-localhost: no\n  local-zone: "test." nodefault\n'
                    'forward-zone:\n  name: "."\n  forward-addr: 127.0.0.1\n')
        testkeyConf = os.path.join(base, "testkey.conf")
        with open(testkeyConf, "w") as f:
            f.write(f"ResolverConfiguration {base}/unbound.conf\n")
        result = subprocess.run(["opendkim-testkey", "-x", testkeyConf, "-d", "signer.test",
                                 "-s", "tmta", "-k", os.path.join(keys, "tmta.private"),
                                 "-vvv"],
                                capture_output=True, text=True, timeout=60)
        observed["testkey"] = [result.returncode, result.stdout + result.stderr]
        verifier = opendkim(base, "verify", "Mode v\nAuthservID opendkim.verifier\n", atEnd)
        signer = opendkim(base, "sign", "Mode s\nDomain odk.test\nSelector odk\n"
                          f"KeyFile {keys}/odk.private\nInternalHosts 127.0.0.1\n"
                          "Canonicalization relaxed/simple\n", atEnd)
        with open(os.path.join(base, "signing"), "w") as f:
            f.write("signer.test tmtakey\n")
        with open(os.path.join(base, "keytable"), "w") as f:
            f.write(f"tmtakey signer.test:tmta:{keys}/tmta.private\n")
        port, verifying, signing = freePort(), freePort(), freePort()
        spool = os.path.join(base, "mail")
        masterCf = MASTER_CF.format(port=port) + (
            f"127.0.0.1:{verifying} inet n - n - - smtpd "
            f"-o smtpd_milters=inet:127.0.0.1:{verifier}\n"
            f"127.0.0.1:{signing} inet n - n - - smtpd "
            f"-o smtpd_milters=inet:127.0.0.1:{signer}\n")
        master = Master(os.path.join(base, "conf"), {
            "myhostname": "mx.example.org", "mydestination": "localhost",
            "mynetworks": "127.0.0.1/32",
            "dkim_signing_table": f"texthash:{base}/signing",
            "dkim_key_table": f"texthash:{base}/keytable",
            "dkim_verification": "yes",
            **localMaildirs(spool + "/")}, masterCf).start()
        atEnd(lambda: (master.stop(), observed.update(log=master.log())))

        def delivered(user):
            waitFor(lambda: maildirMessages(spool).get(user), what=f"mail for {user}")
            [message] = maildirMessages(spool)[user]
            observed[user] = message.decode("utf-8", "replace")
            return message

        # tmta signs; OpenDKIM (and tmta) verify, then see it altered.
        send(port, "alice@signer.test", "bob@localhost",
             b"From: Alice <alice@signer.test>\r\nTo: bob@localhost\r\n"
             b"Subject: signed by tmta\r\n\r\nA message tmta signs.\r\n", "127.0.0.1")
        signed = onward(delivered("bob"))
        send(verifying, "alice@signer.test", "carol@localhost", signed, OUTSIDE)
        delivered("carol")
        send(verifying, "alice@signer.test", "dave@localhost",
             signed.replace(b"A message tmta signs.", b"A message tmta did not sign."), OUTSIDE)
        delivered("dave")
        # OpenDKIM signs; tmta verifies, then sees it altered.
        send(signing, "erin@odk.test", "frank@localhost",
             b"From: Erin <erin@odk.test>\r\nTo: frank@localhost\r\n"
             b"Subject: signed by OpenDKIM\r\n\r\nA message OpenDKIM signs.\r\n", "127.0.0.1")
        signed = onward(delivered("frank"))
        send(port, "erin@odk.test", "grace@localhost", signed, OUTSIDE)
        delivered("grace")
        send(port, "erin@odk.test", "henry@localhost",
             signed.replace(b"OpenDKIM signs.", b"OpenDKIM never saw."), OUTSIDE)
        delivered("henry")

    return run


def main() -> int:
    keys = tempfile.mkdtemp(prefix="tmta-dkim-keys-")
    os.chmod(keys, 0o755)
    try:
        tmtaRecord, odkRecord, printed = makeKeys(keys)
        zone = testZone(_txt("tmta._domainkey.signer.test", tmtaRecord)
                        + _txt("odk._domainkey.odk.test", odkRecord))
        return namespaceScenario(zone, scenario(keys))
    finally:
        shutil.rmtree(keys, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
