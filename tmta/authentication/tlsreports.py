"""
TLS reports (RFC 8460): the SMTP client records each session under an
MTA-STS or DANE policy in C{smtp_tls_report_history_file}
(L{tmta.smtp.agent}); C{tmta tlsrpt report}, run daily, sums them into
one JSON report per policy domain, gzipped, and mails it to the
C{mailto:} addresses the domain's C{_smtp._tls} TXT record names.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Dict, List, Tuple


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def reportJSON(records: List[Dict], orgName: str, contact: str, reportId: str,
               begin: int, end: int) -> bytes:
    """
    The report of one policy domain's sessions (RFC 8460 section 4):
    per policy, the successes and failures, and each kind of failure by
    server.
    """
    byPolicy: Dict[Tuple, List[Dict]] = {}
    for r in records:
        key = (r.get("policy_type", ""), tuple(r.get("policy_string", [])))
        byPolicy.setdefault(key, []).append(r)
    policies = []
    for (kind, strings), sessions in byPolicy.items():
        failures: Counter = Counter()
        for r in sessions:
            if r.get("result") != "success":
                failures[(r["result"], r.get("mx_host", ""), r.get("receiving_ip", ""))] += 1
        policies.append({
            "policy": {"policy-type": kind, "policy-string": list(strings),
                       "policy-domain": sessions[0]["policy_domain"],
                       "mx-host": sorted({r.get("mx_host", "") for r in sessions})},
            "summary": {"total-successful-session-count": sum(
                1 for r in sessions if r.get("result") == "success"),
                "total-failure-session-count": sum(failures.values())},
            "failure-details": [
                {"result-type": result, "receiving-mx-hostname": host, "receiving-ip": address,
                 "failed-session-count": count}
                for (result, host, address), count in sorted(failures.items())],
        })
    report = {"organization-name": orgName,
              "date-range": {"start-datetime": _when(begin), "end-datetime": _when(end)},
              "contact-info": contact, "report-id": reportId, "policies": policies}
    return json.dumps(report, indent=1).encode("utf-8")


def reportMessage(domain: str, report: bytes, orgName: str, sender: str,
                  recipients: List[str], reportId: str, begin: int, end: int) -> bytes:
    """
    The mail carrying one report (RFC 8460 section 5.3).
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"Report Domain: {domain} Submitter: {orgName} Report-ID: <{reportId}>"
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = orgName
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(f"TLS report for {domain} from {orgName}.\n")
    message.add_attachment(gzip.compress(report), maintype="application",
                           subtype="tlsrpt+gzip",
                           filename=f"{orgName}!{domain}!{begin}!{end}.json.gz")
    return message.as_bytes()


def ruaOf(texts: List[bytes]) -> List[str]:
    """
    The C{mailto:} addresses of the one C{v=TLSRPTv1} record among
    C{texts} (none when there is not exactly one).
    """
    records = [t.decode("utf-8", "replace") for t in texts if t.startswith(b"v=TLSRPTv1")]
    if len(records) != 1:
        return []
    addresses = []
    for part in records[0].split(";"):
        name, _, value = part.strip().partition("=")
        if name == "rua":
            addresses += [item.strip()[len("mailto:"):] for item in value.split(",")
                          if item.strip().lower().startswith("mailto:")]
    return [a for a in addresses if "@" in a]
