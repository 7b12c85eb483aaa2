"""
Tests for the notices bounce writes (L{tmta.bounce.service.noticeText}):
RFC 3464 reports, and RFC 6533's for SMTPUTF8 mail.
"""

import email
from email import policy

from twisted.trial.unittest import SynchronousTestCase

from tmta.bounce.service import noticeText

HEADERS = "From: jörg@example.com\nSubject: grüße\n\n".encode()


def _notice(international: bool, original=None, address="bob@example.net"):
    text = noticeText("mx.example.org", "jörg@example.com" if international else
                      "alice@example.com",
                      [{"address": address, "reason": "host mx said: 550 5.1.1 no such user "
                        "(in reply to RCPT TO command)", "dsn": "5.1.1"}],
                      HEADERS, queueId="QID", original=original,
                      international=international)
    return email.message_from_bytes(text, policy=policy.default)


class NoticeTests(SynchronousTestCase):
    def parts(self, message):
        return [part.get_content_type() for part in message.iter_parts()]

    def test_plain(self):
        """
        A notice for ordinary mail is RFC 3464's.
        """
        message = _notice(False)
        self.assertEqual(self.parts(message), ["text/plain", "message/delivery-status",
                                               "text/rfc822-headers"])
        self.assertIn(b"Final-Recipient: rfc822; bob@example.net", message.as_bytes())

    def test_international(self):
        """
        A notice for SMTPUTF8 mail is RFC 6533's: a global delivery
        status with utf-8 addresses, and the message (or its headers) as
        message/global.
        """
        message = _notice(True, address="björn@example.net")
        self.assertEqual(self.parts(message), ["text/plain",
                                               "message/global-delivery-status",
                                               "message/global-headers"])
        report = message.as_bytes().decode("utf-8")
        self.assertIn("Final-Recipient: utf-8; björn@example.net", report)
        self.assertIn("X-Tmta-Sender: utf-8; jörg@example.com", report)
        whole = _notice(True, original=HEADERS + "body\n".encode())
        self.assertEqual(self.parts(whole)[-1], "message/global")
        # An ASCII address keeps its rfc822 type.
        self.assertIn("Final-Recipient: rfc822; bob@example.net",
                      whole.as_bytes().decode("utf-8"))
