"""
DMARC aggregate reports (RFC 7489 section 7.2): what cleanup's DMARC
check found for each message from a domain that asks for reports
(C{rua=}) is appended to C{dmarc_history_file}, one JSON line each;
C{tmta dmarc report}, run daily (by cron or a systemd timer, as
OpenDMARC's opendmarc-reports is), gathers the lines into one XML report
per domain (Appendix C's schema), gzipped, mailed to each C{mailto:}
address the domain names.

A report goes to addresses in the reported domain's own organizational
domain, and to another organization's only when that one publishes the
authorization of section 7.1 (C{DOMAIN._report._dmarc.THEIRS}); others
are left out, and said.
"""

from __future__ import annotations

import gzip
import json
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Dict, List, Optional, Tuple


def externalAuthorized(domain: str, target: str) -> bool:
    """
    Whether C{target}'s domain agrees to take reports about C{domain}
    (RFC 7489 section 7.1): a C{v=DMARC1} TXT record at
    C{DOMAIN._report._dmarc.TARGET}, asked of the system's resolver (a
    command, not a daemon: it may wait).
    """
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(f"{domain}._report._dmarc.{target}", "TXT", lifetime=20)
    except dns.exception.DNSException:
        return False
    return any(b"".join(r.strings).startswith(b"v=DMARC1") for r in answer)


def ruaAddresses(rua: str, domain: str, authorized=externalAuthorized
                 ) -> Tuple[List[str], List[str]]:
    """
    The C{mailto:} addresses of a C{rua=} tag that may be sent a
    report about C{domain}: its own organization's, and another's that
    agrees (L{externalAuthorized}); and those left out.
    """
    from tmta.authentication.dmarc import organizationalDomain

    allowed, refused = [], []
    for item in rua.split(","):
        item = item.strip()
        if not item.lower().startswith("mailto:"):
            continue
        address = item[len("mailto:"):].split("!", 1)[0].strip()
        if "@" not in address:
            continue
        target = address.rpartition("@")[2].lower()
        if organizationalDomain(target) == organizationalDomain(domain) \
                or authorized(domain, target):
            allowed.append(address)
        else:
            refused.append(address)
    return allowed, refused


def _text(parent, tag: str, value) -> None:
    ElementTree.SubElement(parent, tag).text = str(value)


def reportXML(records: List[Dict], orgName: str, email: str, reportId: str,
              begin: int, end: int) -> bytes:
    """
    The aggregate report of one policy domain's records (RFC 7489
    Appendix C): one row per source address and outcome, counted.
    """
    last = records[-1]
    feedback = ElementTree.Element("feedback")
    metadata = ElementTree.SubElement(feedback, "report_metadata")
    _text(metadata, "org_name", orgName)
    _text(metadata, "email", email)
    _text(metadata, "report_id", reportId)
    dates = ElementTree.SubElement(metadata, "date_range")
    _text(dates, "begin", begin)
    _text(dates, "end", end)
    published = ElementTree.SubElement(feedback, "policy_published")
    _text(published, "domain", last["policy_domain"])
    _text(published, "adkim", last.get("adkim", "r"))
    _text(published, "aspf", last.get("aspf", "r"))
    _text(published, "p", last.get("p", "none"))
    _text(published, "sp", last.get("sp") or last.get("p", "none"))
    _text(published, "pct", last.get("pct", 100))
    rows: Counter = Counter()
    for r in records:
        key = json.dumps([r.get("source_ip", ""), r.get("disposition", "none"),
                          r.get("dkim_aligned", False), r.get("spf_aligned", False),
                          r.get("header_from", ""), r.get("dkim", []), r.get("spf", []),
                          r.get("override", "")])
        rows[key] += 1
    for key, count in sorted(rows.items()):
        (source, disposition, dkimAligned, spfAligned, headerFrom, dkims, spf,
         override) = json.loads(key)
        record = ElementTree.SubElement(feedback, "record")
        row = ElementTree.SubElement(record, "row")
        _text(row, "source_ip", source)
        _text(row, "count", count)
        evaluated = ElementTree.SubElement(row, "policy_evaluated")
        _text(evaluated, "disposition", disposition)
        _text(evaluated, "dkim", "pass" if dkimAligned else "fail")
        _text(evaluated, "spf", "pass" if spfAligned else "fail")
        if override:
            reason = ElementTree.SubElement(evaluated, "reason")
            _text(reason, "type", override)
        identifiers = ElementTree.SubElement(record, "identifiers")
        _text(identifiers, "header_from", headerFrom)
        results = ElementTree.SubElement(record, "auth_results")
        for domain, result in dkims:
            dkim = ElementTree.SubElement(results, "dkim")
            _text(dkim, "domain", domain)
            _text(dkim, "result", result)
        if spf:
            spfResult = ElementTree.SubElement(results, "spf")
            _text(spfResult, "domain", spf[0])
            _text(spfResult, "scope", spf[2] if len(spf) > 2 else "mfrom")
            _text(spfResult, "result", spf[1])
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        feedback, encoding="utf-8")


def reportMessage(domain: str, xml: bytes, orgName: str, sender: str, recipients: List[str],
                  reportId: str, begin: int, end: int) -> bytes:
    """
    The mail carrying one report (RFC 7489 section 7.2.1.1): its
    subject and gzipped attachment named as the RFC names them.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = f"Report Domain: {domain} Submitter: {orgName} Report-ID: <{reportId}>"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(f"DMARC aggregate report for {domain} from {orgName}.\n")
    message.add_attachment(gzip.compress(xml), maintype="application", subtype="gzip",
                           filename=f"{orgName}!{domain}!{begin}!{end}.xml.gz")
    return message.as_bytes()


def gatherReports(records: List[Dict], orgName: str, email: str,
                  now: Optional[float] = None, authorized=externalAuthorized):
    """
    One report per policy domain that asked for reports: C{(domain,
    addresses, left out, report id, begin, end, XML)}.
    """
    now = time.time() if now is None else now
    byDomain: Dict[str, List[Dict]] = {}
    for record in records:
        if record.get("rua"):
            byDomain.setdefault(record["policy_domain"], []).append(record)
    reports = []
    for domain, domainRecords in sorted(byDomain.items()):
        addresses, refused = ruaAddresses(domainRecords[-1]["rua"], domain, authorized)
        begin = int(min(r.get("time", now) for r in domainRecords))
        end = int(max(r.get("time", now) for r in domainRecords))
        reportId = f"{domain}.{begin}.{end}"
        xml = reportXML(domainRecords, orgName, email, reportId, begin, end)
        reports.append((domain, addresses, refused, reportId, begin, end, xml))
    return reports
