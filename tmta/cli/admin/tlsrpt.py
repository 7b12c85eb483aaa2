"""
C{tmta tlsrpt report}: send the TLS reports (RFC 8460) of the sessions
C{smtp_tls_report_history_file} recorded since the last run (run it
daily).  Each policy domain whose C{_smtp._tls} TXT record names
C{mailto:} addresses is sent one gzipped JSON report, queued as mail from
C{tls_report_sender}; the records are then removed.  C{-n} prints the
reports and sends nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, TextIO


def addParser(commands) -> None:
    parser = commands.add_parser("tlsrpt", help="TLS reports (RFC 8460)")
    actions = parser.add_subparsers(dest="tlsrptAction", required=True)
    report = actions.add_parser("report", help="send the TLS reports recorded so far")
    report.add_argument("-n", "--dry-run", action="store_true",
                        help="print what would be sent; send and remove nothing")
    report.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    report.set_defaults(run=runReport, listOf=None)


def reportAddresses(domain: str) -> List[str]:
    """
    The C{mailto:} addresses of C{domain}'s C{_smtp._tls} record, asked
    of the system's resolver (a command, not a daemon: it may wait).
    """
    import dns.exception
    import dns.resolver

    from tmta.authentication.tlsreports import ruaOf

    try:
        answer = dns.resolver.resolve(f"_smtp._tls.{domain}", "TXT", lifetime=20)
    except dns.exception.DNSException:
        return []
    return ruaOf([b"".join(r.strings) for r in answer])


def runReport(options: argparse.Namespace, parser: argparse.ArgumentParser,
              out: TextIO = sys.stdout, addresses=reportAddresses) -> int:
    from tmta.authentication.tlsreports import reportJSON, reportMessage
    from tmta.cli.admin.common import configuration, takeHistory
    from tmta.cli.admin.reports import ReportSender

    config = configuration(options).main
    path = config.get("smtp_tls_report_history_file").strip()
    if not path:
        sys.stderr.write("tmta: fatal: smtp_tls_report_history_file is not set: nothing is "
                         "recorded\n")
        return 1
    records, done = takeHistory(path, options.dry_run)
    orgName = config.get("tls_report_org_name").strip()
    sender = config.get("tls_report_sender").strip()
    reports = ReportSender(config.get("queue_directory"), sender, options.dry_run, out)
    byDomain: Dict[str, List[Dict]] = {}
    for record in records:
        byDomain.setdefault(record["policy_domain"], []).append(record)
    for domain, sessions in sorted(byDomain.items()):
        recipients = addresses(domain)
        if not recipients:
            out.write(f"{domain}: no TLS report address published\n")
            continue
        begin = int(min(r.get("time", 0) for r in sessions))
        end = int(max(r.get("time", 0) for r in sessions))
        reportId = f"{domain}.{begin}.{end}"
        report = reportJSON(sessions, orgName, sender, reportId, begin, end)
        reports.send(domain, reportId, recipients, report, lambda: reportMessage(
            domain, report, orgName, sender, recipients, reportId, begin, end))
    reports.finish()
    done()
    return 0
