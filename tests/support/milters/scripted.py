"""
A milter on Sendmail's libmilter (Debian's python3-milter), for the
tests: what it answers and what it changes come from a JSON script, and
what it saw goes to a JSON log, one line per message or event.

Run with Debian's Python: C{/usr/bin/python3 scripted.py SOCKET SCRIPT
LOG}, where C{SOCKET} is libmilter's (C{inet:PORT@127.0.0.1},
C{unix:/path}).

The script maps a callback (C{connect}, C{hello}, C{envfrom},
C{envrcpt}, C{data}, C{eoh}, C{body}, C{eom}) to what it returns
(C{continue}, C{accept}, C{reject}, C{tempfail}, C{discard}, or
C{[code, xcode, text]} for a reply of its own); C{"eom_edits"} lists the
changes made at the end of the message: C{["addheader", name, value]},
C{["insheader", index, name, value]}, C{["chgheader", name, index,
value]}, C{["addrcpt", address]}, C{["delrcpt", address]},
C{["chgfrom", address]}, C{["replacebody", text]}, C{["quarantine",
reason]}; C{"sleep"} maps a callback to seconds to wait first.
"""

import json
import sys
import time

import Milter

SOCKET, SCRIPT, LOG = sys.argv[1:4]

with open(SCRIPT) as f:
    script = json.load(f)

RESULTS = {"continue": Milter.CONTINUE, "accept": Milter.ACCEPT, "reject": Milter.REJECT,
           "tempfail": Milter.TEMPFAIL, "discard": Milter.DISCARD}
MACROS = ["j", "_", "i", "v", "{daemon_name}", "{daemon_addr}", "{client_addr}",
          "{client_name}", "{client_port}", "{auth_authen}", "{auth_type}", "{mail_addr}",
          "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}", "{tls_version}"]


def record(entry):
    with open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Scripted(Milter.Base):
    def __init__(self):
        self.seen = {"headers": [], "body": b"", "recipients": [], "macros": {}}

    def _macros(self, stage):
        found = {}
        for name in MACROS:
            value = self.getsymval(name)
            if value is not None:
                found[name] = value
        self.seen["macros"][stage] = found

    def _result(self, stage):
        delay = script.get("sleep", {}).get(stage)
        if delay:
            time.sleep(delay)
        answer = script.get(stage, "continue")
        if isinstance(answer, list):
            self.setreply(*answer)
            return Milter.REJECT if answer[0].startswith("5") else Milter.TEMPFAIL
        return RESULTS[answer]

    def connect(self, hostname, family, hostaddr):
        self.seen["connect"] = [hostname, str(hostaddr)]
        self._macros("connect")
        return self._result("connect")

    def hello(self, name):
        self.seen["helo"] = name
        self._macros("helo")
        return self._result("hello")

    def envfrom(self, sender, *args):
        self.seen["sender"] = sender
        self.seen["mail_args"] = list(args)
        self.seen["recipients"] = []
        self.seen["headers"] = []
        self.seen["body"] = b""
        self._macros("mail")
        return self._result("envfrom")

    def envrcpt(self, recipient, *args):
        self.seen["recipients"].append(recipient)
        self._macros("rcpt")
        self.seen.setdefault("rcpt_macros", []).append(self.seen["macros"]["rcpt"])
        return self._result("envrcpt")

    def data(self):
        return self._result("data")

    def header(self, name, value):
        self.seen["headers"].append([name, value])
        return self._result("header")

    def eoh(self):
        self._macros("eoh")
        return self._result("eoh")

    def body(self, chunk):
        self.seen["body"] += chunk
        return self._result("body")

    def eom(self):
        self._macros("eom")
        for edit in script.get("eom_edits", []):
            kind, args = edit[0], edit[1:]
            if kind == "addheader":
                self.addheader(args[0], args[1])
            elif kind == "insheader":
                self.addheader(args[1], args[2], args[0])
            elif kind == "chgheader":
                self.chgheader(args[0], args[1], args[2])
            elif kind == "addrcpt":
                self.addrcpt(args[0])
            elif kind == "delrcpt":
                self.delrcpt(args[0])
            elif kind == "chgfrom":
                self.chgfrom(args[0])
            elif kind == "replacebody":
                self.replacebody(args[0].encode())
            elif kind == "quarantine":
                self.quarantine(args[0])
        entry = dict(self.seen, body=self.seen["body"].decode("utf-8", "replace"))
        record({"message": entry})
        return self._result("eom")

    def abort(self):
        record({"abort": True})
        return Milter.CONTINUE

    def close(self):
        record({"close": True})
        return Milter.CONTINUE


if script.get("rcpt_rej"):
    # Ask to hear of the recipients the MTA refused (SMFIP_RCPT_REJ).
    Scripted._protocol_mask = Scripted.protocol_mask() & ~Milter.P_RCPT_REJ

Milter.factory = Scripted
Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.DELRCPT
                 | Milter.CHGBODY | Milter.CHGFROM | Milter.QUARANTINE)
record({"started": True})
Milter.runmilter("scripted", SOCKET, 240)
