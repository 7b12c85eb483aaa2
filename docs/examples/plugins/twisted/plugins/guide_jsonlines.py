"""
Plugin guide, example 3: a transport (a delivery agent and its factory).
A master.cf entry::

    archive  unix  -  n  n  -  1  jsonlines path=/srv/archive/mail.jsonl

appends each message it is given, with its envelope, as one JSON line
to the file; route mail to it with transport_maps (C{example.net
archive:}).
"""

import json
import os
import time

from twisted.internet import threads
from twisted.plugin import IPlugin
from zope.interface import implementer

from tmta.delivery import DEFERRED, SENT, RecipientStatus, logDelivery
from tmta.interfaces import IDeliveryAgent, IDeliveryAgentFactory


@implementer(IDeliveryAgent)
class JSONLinesAgent:
    def __init__(self, reactor, path, serviceName):
        self.reactor = reactor
        self.path = path
        self.serviceName = serviceName

    def _append(self, request):
        # Blocking file work, in a thread: the reactor serves others.
        record = {"queue_id": request.queueId, "sender": request.sender,
                  "recipients": [r.address for r in request.recipients],
                  "message": b"".join(request.content()).decode("utf-8", "replace")}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def deliver(self, request):
        started = time.time()

        def done(result):
            ok = result is None
            statuses = []
            for r in request.recipients:
                status = (RecipientStatus(r.offset, SENT, "2.0.0", f"appended to {self.path}")
                          if ok else RecipientStatus(r.offset, DEFERRED, "4.3.0",
                                                     f"cannot append: {result.value}"))
                logDelivery(request, r, self.serviceName, status, started)
                statuses.append(status)
            return statuses

        return threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self._append, request).addBoth(done)


@implementer(IPlugin, IDeliveryAgentFactory)
class JSONLinesTransport:
    name = "jsonlines"

    def needsRoot(self, config, unpriv):
        return False

    def clientLimit(self, config):
        return 1

    def makeAgent(self, context):
        paths = [a.partition("=")[2] for a in context.arguments if a.startswith("path=")]
        if not paths:
            raise ValueError(f"{context.serviceName}: jsonlines needs path=FILE")
        return JSONLinesAgent(context.reactor, paths[0], context.serviceName)


jsonLines = JSONLinesTransport()
