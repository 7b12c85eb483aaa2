# An application with tmta inside: SMTP on 127.0.0.1, its domain's mail
# handed to the application's own delivery agent, and a web page listing
# the subjects received, newest first.  Run: twistd -ny mailapp.tac
import os
from email.parser import BytesHeaderParser
from html import escape

from twisted.application.internet import TCPServer
from twisted.application.service import Application
from twisted.web import resource, server
from zope.interface import implementer

from tmta.delivery import SENT, RecipientStatus
from tmta.embedded import EmbeddedMTA
from tmta.interfaces import IDeliveryAgent

SMTP_PORT = int(os.environ.get("TMTA_EXAMPLE_SMTP_PORT", "2526"))
WEB_PORT = int(os.environ.get("TMTA_EXAMPLE_WEB_PORT", "8025"))
DOMAIN = "mailapp.example"
subjects = []


@implementer(IDeliveryAgent)
class Inbox:
    def deliver(self, request):
        headers = BytesHeaderParser().parsebytes(b"".join(request.content()))
        subjects.insert(0, headers.get("Subject", "(no subject)"))
        return [RecipientStatus(r.offset, SENT, "2.0.0", "kept by the application")
                for r in request.recipients]


class Subjects(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        items = "".join(f"<li>{escape(s)}</li>" for s in subjects)
        return f"<html><body><h1>Mail received</h1><ul>{items}</ul></body></html>".encode()


application = Application("mailapp")
EmbeddedMTA(os.environ.get("TMTA_EXAMPLE_DIR", os.path.abspath("mailapp-data")), {
    "myhostname": DOMAIN,
    "mydestination": "",
    "relay_domains": DOMAIN,
    "transport_maps": f"inline:{{ {DOMAIN}=inbox }}",
    "smtpd_relay_restrictions": "reject_unauth_destination",
}, smtpd=f"tcp:{SMTP_PORT}:interface=127.0.0.1", agents={"inbox": Inbox()}).setServiceParent(application)
TCPServer(WEB_PORT, server.Site(Subjects()), interface="127.0.0.1").setServiceParent(application)
