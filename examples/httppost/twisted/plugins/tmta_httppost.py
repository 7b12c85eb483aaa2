"""
An example tmta transport plugin: delivers each message by HTTP POST.

Not part of tmta.  Put this file in a C{twisted/plugins/} directory on
C{sys.path} (for instance C{PYTHONPATH=/srv/tmta-plugins} with the file
at C{/srv/tmta-plugins/twisted/plugins/tmta_httppost.py}), name it in
master.cf with the URL to post to::

    httppost  unix  -  n  n  -  10  httppost url=https://hooks.example.org/mail

and route mail to it with C{transport_maps}::

    hooks.example.org   httppost:

Each delivery is one POST: the message as C{message/rfc822}, with the
envelope in C{X-Envelope-From} and one C{X-Envelope-To} per recipient.
A 2xx answer delivers, a 4xx bounces, anything else (5xx, no answer)
defers, so the web service decides like an SMTP server would.
"""

from __future__ import annotations

from twisted.internet import defer, threads
from twisted.plugin import IPlugin
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from tmta.delivery import BOUNCED, DEFERRED, SENT, RecipientStatus, logDelivery
from tmta.interfaces import IDeliveryAgent, IDeliveryAgentFactory


@implementer(IDeliveryAgent)
class HTTPPostAgent:
    def __init__(self, reactor, url: str, serviceName: str) -> None:
        self.reactor = reactor
        self.url = url.encode("ascii")
        self.serviceName = serviceName
        self.agent = Agent(reactor, connectTimeout=30)

    @defer.inlineCallbacks
    def deliver(self, request):
        import io
        import time

        started = time.time()
        content = yield threads.deferToThread(lambda: b"".join(request.content()))
        headers = Headers({b"Content-Type": [b"message/rfc822"],
                           b"X-Envelope-From": [request.sender.encode("utf-8")],
                           b"X-Envelope-To": [r.address.encode("utf-8")
                                              for r in request.recipients]})
        try:
            response = yield self.agent.request(b"POST", self.url, headers,
                                                FileBodyProducer(io.BytesIO(content)))
            body = yield readBody(response)
            code = response.code
            said = body.decode("utf-8", "replace").strip()[:200]
        except Exception as e:
            code, said = 0, str(e)
        if 200 <= code < 300:
            status, dsn, reason = SENT, "2.0.0", f"posted ({code})"
        elif 400 <= code < 500:
            status, dsn, reason = BOUNCED, "5.0.0", f"refused by {self.url.decode()}: {code} {said}"
        else:
            reason = f"cannot post to {self.url.decode()}: {code or said}"
            status, dsn = DEFERRED, "4.0.0"
        statuses = []
        for r in request.recipients:
            result = RecipientStatus(r.offset, status, dsn, reason)
            logDelivery(request, r, self.serviceName, result, started)
            statuses.append(result)
        return statuses


@implementer(IPlugin, IDeliveryAgentFactory)
class HTTPPostTransport:
    name = "httppost"

    def needsRoot(self, config, unpriv):
        return False

    def clientLimit(self, config):
        return 10

    def makeAgent(self, context):
        settings = dict(word.partition("=")[::2] for word in context.arguments)
        url = settings.get("url", "")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{context.serviceName}: httppost needs url=http(s)://...")
        return HTTPPostAgent(context.reactor, url, context.serviceName)


httppost = HTTPPostTransport()
