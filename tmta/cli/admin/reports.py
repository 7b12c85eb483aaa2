"""
Sending the reports the report commands make (C{tmta dmarc report},
C{tmta tlsrpt report}).
"""

from __future__ import annotations


class ReportSender:
    """
    Queues the reports of one run (DMARC's, TLS reporting's) as mail
    from C{sender}, like mail posted with sendmail, or with C{dryRun}
    only shows them; L{finish} wakes pickup once for them all.
    """

    def __init__(self, queueDirectory: str, sender: str, dryRun: bool, out) -> None:
        self.queueDirectory = queueDirectory
        self.sender = sender
        self.dryRun = dryRun
        self.out = out
        self.sent = 0

    def send(self, domain: str, reportId: str, recipients, report: bytes, message) -> None:
        """
        Queue one report to C{recipients}; C{message()} makes its mail.
        """
        from tmta.cli.maildrop import Posting, post

        where = f"{domain}: report {reportId} to {', '.join(recipients)}"
        if self.dryRun:
            self.out.write(f"{where}\n{report.decode('utf-8')}\n")
            return
        posting = Posting()
        posting.sender = self.sender
        posting.recipients = list(recipients)
        queueId = post(posting, message(), self.queueDirectory)
        self.out.write(f"{where}: queued as {queueId}\n")
        self.sent += 1

    def finish(self) -> None:
        from tmta.cli.maildrop import wakePickup

        if self.sent:
            wakePickup(self.queueDirectory)
