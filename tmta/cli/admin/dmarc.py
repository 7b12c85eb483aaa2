"""
C{tmta dmarc report}: send the DMARC aggregate reports of what
C{dmarc_history_file} recorded since the last run (run it daily, from
cron or a systemd timer).  Each report goes into the queue as mail from
C{dmarc_report_sender}, like mail posted with sendmail; the records sent
are then removed.  C{-n} prints what would be sent and sends nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO


def addParser(commands) -> None:
    parser = commands.add_parser("dmarc", help="DMARC aggregate reports")
    actions = parser.add_subparsers(dest="dmarcAction", required=True)
    report = actions.add_parser("report", help="send the aggregate reports recorded so far")
    report.add_argument("-n", "--dry-run", action="store_true",
                        help="print what would be sent; send and remove nothing")
    report.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    report.set_defaults(run=runReport, listOf=None)


def runReport(options: argparse.Namespace, parser: argparse.ArgumentParser,
              out: TextIO = sys.stdout) -> int:
    from tmta.authentication.dmarcreports import gatherReports, reportMessage
    from tmta.cli.admin.common import configuration, takeHistory
    from tmta.cli.admin.reports import ReportSender

    config = configuration(options).main
    path = config.get("dmarc_history_file").strip()
    if not path:
        sys.stderr.write("tmta: fatal: dmarc_history_file is not set: nothing is recorded\n")
        return 1
    records, done = takeHistory(path, options.dry_run)
    orgName = config.get("dmarc_report_org_name").strip()
    sender = config.get("dmarc_report_sender").strip()
    reports = ReportSender(config.get("queue_directory"), sender, options.dry_run, out)
    for domain, addresses, refused, reportId, begin, end, xml in gatherReports(
            records, orgName, sender):
        for address in refused:
            out.write(f"{domain}: not sent to {address}: another organization's address, "
                      "which does not publish the authorization of RFC 7489 section 7.1\n")
        if not addresses:
            continue
        reports.send(domain, reportId, addresses, xml, lambda: reportMessage(
            domain, xml, orgName, sender, addresses, reportId, begin, end))
    reports.finish()
    done()
    return 0
