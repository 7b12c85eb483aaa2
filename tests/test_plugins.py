"""
The seams keep their word: every built-in provider of every interface in
L{tmta.interfaces} passes L{verifyObject}, and a plugin of each kind --
component, transport, table type, smtpd restriction -- dropped into a
C{twisted/plugins/} directory is found and used by a real master, while
one that does not provide its interface is refused with a message that
names it and what is missing.
"""

import os
import textwrap

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.support import (
    CORE_MASTER_CF,
    REPO,
    Master,
    endToEnd,
    freePort,
    freePorts,
    localMaildirs,
    sendMessage,
    shortTemporaryDirectory,
    waitFor,
)
from tmta import interfaces
from tmta.config import MainConfig


def twistd(args, extraPath=()):
    endToEnd()
    import subprocess
    import sys

    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(list(extraPath) + [REPO]))
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "tmta"] + args,
        capture_output=True, text=True, timeout=60, env=environ)


class ConformanceTests(SynchronousTestCase):
    def test_builtinComponents(self):
        import twisted.plugins
        from twisted.plugin import IPlugin, getPlugins

        components = [c for c in getPlugins(interfaces.IComponent, twisted.plugins)
                      if type(c).__module__.startswith("twisted.plugins.tmta")]
        self.assertGreaterEqual(len(components), 8)
        for component in components:
            verifyObject(interfaces.IComponent, component)
            verifyObject(IPlugin, component)
        # And the twistd plugin: every built-in provider found through
        # getPlugins.
        from twisted.application.service import IServiceMaker

        makers = [m for m in getPlugins(IServiceMaker, twisted.plugins) if m.tapname == "tmta"]
        self.assertEqual([m.tapname for m in makers], ["tmta"])
        for maker in makers:
            verifyObject(IServiceMaker, maker)
            verifyObject(IPlugin, maker)

    def test_builtinAgents(self):
        from tmta.delivery.trivial import DiscardAgent, ErrorAgent
        from tmta.local.agent import LocalAgent, LocalDeliveryAgent
        from tmta.master.components import AgentComponent

        base = shortTemporaryDirectory(self)
        config = MainConfig({"local_mailbox_accounts": "none", "alias_maps": "",
                             "mail_spool_directory": base + "/"})
        local = LocalDeliveryAgent(reactor, LocalAgent(config))
        for agent in (DiscardAgent(), ErrorAgent("error"), local):
            verifyObject(interfaces.IDeliveryAgent, agent)

        class Factory:
            name = "x"

            def needsRoot(self, config, unpriv):
                return False

            def clientLimit(self, config):
                return 1

            def makeAgent(self, context):
                return DiscardAgent()

        verifyObject(interfaces.IComponent, AgentComponent(Factory()))

    def test_builtinTables(self):
        from tmta.tables import BUILTIN_TYPES, openTable

        for kind in BUILTIN_TYPES.values():
            verifyObject(interfaces.ILookupTableType, kind)
        for spec in ("unix:passwd.byname", "static:x", "inline:{a=b}", "hash:/nonexistent",
                     "texthash:/nonexistent", "proxy:unix:passwd.byname"):
            verifyObject(interfaces.ILookupTable, openTable(spec))
        # Those kept in a file say who owns it (local's rights follow).
        for spec in ("hash:/nonexistent", "texthash:/nonexistent", "regexp:/nonexistent",
                     "cidr:/nonexistent", "regexp:{ /a/ b }"):
            table = openTable(spec)
            verifyObject(interfaces.IOwnedTable, table)
            self.assertIsNone(table.owner())
        self.assertFalse(interfaces.IOwnedTable.providedBy(openTable("static:x")))

    def test_builtinRestrictions(self):
        from tmta.smtpd.builtins import BUILTIN_RESTRICTIONS
        from tmta.smtpd.restrictions import RestrictionList

        restrictions = RestrictionList("smtpd_recipient_restrictions",
                                       ", ".join(sorted(BUILTIN_RESTRICTIONS)), [], 554, 554)
        self.assertEqual(len(restrictions.restrictions), len(BUILTIN_RESTRICTIONS))
        for restriction in restrictions.restrictions:
            verifyObject(interfaces.ISMTPRestriction, restriction)
        # Those that take an argument, and the DNS checks.
        withArguments = RestrictionList(
            "smtpd_recipient_restrictions",
            "check_client_access static:OK, check_helo_access static:OK, "
            "check_sender_access static:OK, check_recipient_access static:OK, "
            "reject_rbl_client zen.example, reject_rhsbl_client dbl.example, "
            "reject_rhsbl_sender dbl.example, reject_rhsbl_helo dbl.example, "
            "permit_dnswl_client wl.example, reject_unknown_sender_domain, "
            "reject_unknown_recipient_domain, check_policy_service inet:127.0.0.1:1, "
            "warn_if_reject reject", [], 554, 554)
        self.assertEqual(len(withArguments.restrictions), 13)
        for restriction in withArguments.restrictions:
            verifyObject(interfaces.ISMTPRestriction, restriction)

    def test_queueRewriterContext(self):
        from tmta.master.worker import WorkerContext
        from tmta.queue.layout import createLayout
        from tmta.queue.store import QueueStore
        from tmta.rewrite import Rewriter

        directory = shortTemporaryDirectory(self)
        createLayout(directory)
        verifyObject(interfaces.IQueue, QueueStore(directory))
        rewriter = Rewriter(MainConfig({"myhostname": "h.example"}))
        verifyObject(interfaces.IAddressRewriter, rewriter)
        verifyObject(interfaces.IAddressResolver, rewriter)
        self.assertIsInstance(rewriter.rewrite("a"), str)
        verifyObject(interfaces.IWorkerContext,
                     WorkerContext(reactor, MainConfig({}), "x", None, [], []))


PLUGINS = textwrap.dedent(
    """
    import json, os
    from twisted.plugin import IPlugin
    from zope.interface import implementer
    from tmta.delivery import SENT, RecipientStatus
    from twisted.internet import defer
    from tmta.interfaces import (
        IDeliveryAgent, IDeliveryAgentFactory, ILookupTable, ILookupTableType,
        ISASLBackend, ISASLBackendType, ISMTPRestriction)
    from tmta.sasl import PasswordExchange

    @implementer(IDeliveryAgent)
    class Recorder:
        def __init__(self, directory):
            self.directory = directory
        def deliver(self, request):
            statuses = []
            for r in request.recipients:
                name = os.path.join(self.directory, request.queueId + "-" + str(r.offset))
                with open(name, "w") as f:
                    json.dump({"to": r.address, "from": request.sender,
                               "text": b"".join(request.content()).decode()}, f)
                statuses.append(RecipientStatus(r.offset, SENT, "2.0.0", "recorded"))
            return statuses

    @implementer(IPlugin, IDeliveryAgentFactory)
    class RecorderFactory:
        name = "recorder"
        def needsRoot(self, config, unpriv):
            return False
        def clientLimit(self, config):
            return 10
        def makeAgent(self, context):
            return Recorder(os.environ["TMTA_TEST_RECORDS"])

    @implementer(ILookupTable)
    class Listed:
        def get(self, key):
            return "ok" if key in ("bob", "carol", "bob@localhost", "carol@localhost") else None

    @implementer(IPlugin, ILookupTableType)
    class ListedType:
        name = "testlisted"
        def open(self, name):
            return Listed()

    @implementer(IPlugin, ISMTPRestriction)
    class NoCarol:
        name = "test_reject_carol"
        def evaluate(self, context):
            if context.recipient.startswith("carol@"):
                return "reject", "550 5.7.1 <%s>: no mail for carol" % context.recipient
            return "dunno", None

    @implementer(ISASLBackend)
    class OneLogin:
        def mechanisms(self):
            return ["PLAIN", "LOGIN"]
        def begin(self, mechanism, client):
            return PasswordExchange(mechanism, lambda name, password: defer.succeed(
                (name, password) == ("alice", "s3cret")))

    @implementer(IPlugin, ISASLBackendType)
    class OneLoginType:
        name = "testonelogin"
        def open(self, config, reactor):
            return OneLogin()

    recorder = RecorderFactory()
    listed = ListedType()
    nocarol = NoCarol()
    onelogin = OneLoginType()
    """
)

BROKEN = textwrap.dedent(
    """
    from twisted.plugin import IPlugin
    from zope.interface import implementer
    from tmta.interfaces import IDeliveryAgentFactory

    @implementer(IPlugin, IDeliveryAgentFactory)
    class Incomplete:
        name = "incomplete"
        def makeAgent(self, context):
            return None

    incomplete = Incomplete()
    """
)

MASTER_CF = CORE_MASTER_CF + """\
record    unix  -       -       n       -       -       recorder
"""


class PluginTests(SynchronousTestCase):
    def pluginDirectory(self, base, text, name):
        plugins = os.path.join(base, "plugins", "twisted", "plugins")
        os.makedirs(plugins, exist_ok=True)
        with open(os.path.join(plugins, name), "w") as f:
            f.write(text)
        return os.path.join(base, "plugins")

    def test_transportTableRestriction(self):
        """
        A transport, a table type and a restriction from one plugin file
        are used by a real master: mail for a listed name is handed to
        the transport; carol is refused by the restriction, an unlisted
        name by the table.
        """
        base = shortTemporaryDirectory(self)
        records = os.path.join(base, "records")
        os.makedirs(records)
        os.chmod(records, 0o777)
        path = self.pluginDirectory(base, PLUGINS, "tmta_test_kinds.py")
        port = freePort()
        os.environ["TMTA_TEST_RECORDS"] = records
        self.addCleanup(os.environ.pop, "TMTA_TEST_RECORDS", None)
        master = Master(
            os.path.join(base, "conf"),
            {"mydestination": "localhost", "local_transport": "record:",
             "local_recipient_maps": "testlisted:anything",
             "smtpd_recipient_restrictions": "test_reject_carol, permit_mynetworks, "
                                             "reject_unauth_destination"},
            MASTER_CF.format(port=port), extraPath=[path]).start()
        self.addCleanup(master.stop)
        sendMessage(port, "alice@example.com", ["bob@localhost"], "plugged")
        waitFor(lambda: os.listdir(records), what="the transport's record")
        import json

        [name] = os.listdir(records)
        with open(os.path.join(records, name)) as f:
            record = json.load(f)
        self.assertEqual((record["to"], record["from"]), ("bob@localhost", "alice@example.com"))
        self.assertIn("Subject: plugged", record["text"])
        import smtplib

        for recipient, text in [("carol@localhost", b"no mail for carol"),
                                ("dave@localhost", b"User unknown")]:
            e = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, port,
                                  "alice@example.com", [recipient], "refused")
            code, reply = e.recipients[recipient]
            self.assertEqual(code, 550)
            self.assertIn(text, reply)

    def test_saslBackend(self):
        """
        smtpd_sasl_type names a SASL backend a plugin adds: smtpd checks
        AUTH with it.
        """
        import smtplib

        base = shortTemporaryDirectory(self)
        path = self.pluginDirectory(base, PLUGINS, "tmta_test_kinds.py")
        port = freePort()
        master = Master(
            os.path.join(base, "conf"),
            {"mydestination": "localhost", "smtpd_sasl_auth_enable": "yes",
             "smtpd_sasl_type": "testonelogin"},
            MASTER_CF.format(port=port), extraPath=[path]).start()
        self.addCleanup(master.stop)
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        self.assertIn("PLAIN", client.esmtp_features.get("auth", ""))
        e = self.assertRaises(smtplib.SMTPAuthenticationError, client.login, "alice", "wrong")
        self.assertEqual(e.smtp_code, 535)
        code, _ = client.login("alice", "s3cret")
        self.assertEqual(code, 235)

    def test_brokenPluginRefused(self):
        """
        A transport plugin that does not provide its interface stops
        start-up when master.cf names it, with a message naming the
        plugin and what it lacks.
        """
        base = shortTemporaryDirectory(self)
        path = self.pluginDirectory(base, BROKEN, "tmta_test_broken.py")
        conf = os.path.join(base, "conf")
        os.makedirs(conf)
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.write(f"queue_directory = {base}/queue\n")
        with open(os.path.join(conf, "master.cf"), "w") as f:
            f.write("x unix - - n - - incomplete\n")
        result = twistd(["-c", conf], extraPath=[path])
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("master.cf, line 1: x/unix: plugin tmta_test_broken.Incomplete does not "
                      "provide IDeliveryAgentFactory", output.replace("twisted.plugins.", ""))
        self.assertIn("needsRoot", output)


class GuideExampleTests(SynchronousTestCase):
    def test_examplesProvideTheirInterfaces(self):
        """
        The plugin examples in the plugin guide's summary of the
        interfaces are complete: each passes verifyObject.
        """
        import re

        with open(os.path.join(REPO, "docs", "plugins.rst")) as f:
            text = f.read()
        namespace = {"MyProtocol": object}
        for block in re.findall(r"::\n\n((?:        .*\n|\n)+)", text):
            code = "\n".join(line[8:] for line in block.splitlines())
            if "@implementer" in code:
                exec(code, namespace)
        verifyObject(interfaces.IDeliveryAgentFactory, namespace["printer"])
        verifyObject(interfaces.IComponent, namespace["greeter"])
        [status] = namespace["Printer"]().deliver(_Request())
        self.assertEqual(status.reason, "5 bytes")


class _Request:
    recipients = [type("R", (), {"offset": 3})()]

    def content(self):
        return iter([b"hello"])


WEB_SERVER = """
import os, sys
from twisted.internet import reactor
from twisted.web import resource, server

class Inbox(resource.Resource):
    isLeaf = True
    count = 0
    def render_POST(self, request):
        Inbox.count += 1
        path = os.path.join(sys.argv[2], f"post{Inbox.count}")
        with open(path + ".tmp", "wb") as f:
            f.write(request.getHeader(b"x-envelope-from") + b"\\n")
            f.write(b",".join(request.requestHeaders.getRawHeaders(b"x-envelope-to")) + b"\\n")
            f.write(request.content.read())
        os.rename(path + ".tmp", path)
        return b"stored"

reactor.listenTCP(int(sys.argv[1]), server.Site(Inbox()), interface="127.0.0.1")
reactor.run()
"""


class ExamplePluginTests(SynchronousTestCase):
    def test_httpPostTransport(self):
        """
        The example transport in examples/httppost, copied into a
        plugins directory and named in master.cf and transport_maps,
        posts mail to a twisted.web server, with no change to tmta.
        """
        import shutil
        import subprocess
        import sys

        base = shortTemporaryDirectory(self)
        plugins = os.path.join(base, "plugins", "twisted", "plugins")
        os.makedirs(plugins)
        shutil.copy(os.path.join(REPO, "examples", "httppost", "twisted", "plugins",
                                 "tmta_httppost.py"), plugins)
        received = os.path.join(base, "received")
        os.mkdir(received)
        webPort, port = freePorts(2)
        web = subprocess.Popen([sys.executable, "-c", WEB_SERVER, str(webPort), received])
        self.addCleanup(web.wait)
        self.addCleanup(web.kill)
        recorder = "record    unix  -       -       n       -       -       recorder\n"
        masterCf = MASTER_CF.format(port=port).replace(recorder, "") + (
            f"httppost  unix  -       n       n       -       4       httppost "
            f"url=http://127.0.0.1:{webPort}/inbox\n")
        master = Master(
            os.path.join(base, "conf"),
            {"mydestination": "localhost", "local_recipient_maps": "",
             "relay_domains": "hooks.example",
             "transport_maps": "inline:{ hooks.example=httppost: }"},
            masterCf, extraPath=[os.path.join(base, "plugins")]).start()
        self.addCleanup(master.stop)
        sendMessage(port, "alice@example.com", ["bob@hooks.example"], "by http")
        waitFor(lambda: "post1" in os.listdir(received), what="the POST")
        with open(os.path.join(received, "post1"), "rb") as f:
            text = f.read()
        self.assertTrue(text.startswith(b"alice@example.com\nbob@hooks.example\n"))
        self.assertIn(b"Subject: by http", text)
        waitFor(lambda: "relay=httppost" in master.log() and "status=sent" in master.log(),
                what="the log line")


class PluginGuideTests(SynchronousTestCase):
    """
    docs/plugins.rst's examples, from docs/examples/plugins, working in a
    real master: a lookup table type, an SMTP restriction, a transport
    and a message authenticator.
    """

    def test_guideExamples(self):
        import json
        import smtplib

        from tests.support import MASTER_CF, maildirMessages

        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        archive = os.path.join(base, "archive")
        os.makedirs(archive)
        os.chmod(archive, 0o777)
        aliases = os.path.join(base, "aliases.json")
        transports = os.path.join(base, "transport.json")
        with open(aliases, "w") as f:
            json.dump({"team@localhost": "bob@localhost"}, f)
        with open(transports, "w") as f:
            json.dump({"archive.example": "archive:"}, f)
        port = freePort()
        masterCf = MASTER_CF.format(port=port) + (
            f"archive   unix  -       n       n       -       1       jsonlines "
            f"path={archive}/mail.jsonl\n")
        master = Master(os.path.join(base, "conf"), {
            "myhostname": "localhost", "mydestination": "localhost",
            **localMaildirs(spool + "/"),
            "virtual_alias_maps": f"json:{aliases}",
            "transport_maps": f"json:{transports}",
            "relay_domains": "archive.example",
            "smtpd_recipient_restrictions": "reject_numeric_localpart",
            # Mail from loopback counts as from outside, for the
            # authenticator.
            "mydomain": "own.example", "dkim_internal_hosts": "", "dkim_verification": "yes",
            "message_authentication_plugins": "own_domain_signed",
        }, masterCf, extraPath=[os.path.join(REPO, "docs", "examples", "plugins")]).start()
        self.addCleanup(master.stop)
        sendMessage(port, "alice@example.com", ["team@localhost"], "to the team")
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as caught:
            sendMessage(port, "alice@example.com", ["12345@localhost"], "numeric")
        self.assertIn(b"numeric mailbox names", caught.exception.recipients[
            "12345@localhost"][1])
        queueId = sendMessage(port, "alice@example.com", ["x@archive.example"], "archived")
        waitFor(lambda: maildirMessages(spool).get("bob"), what="the aliased delivery")
        path = os.path.join(archive, "mail.jsonl")
        waitFor(lambda: os.path.exists(path) and open(path).read(), what="the archive")
        with open(path) as f:
            [record] = [json.loads(line) for line in f]
        self.assertEqual((record["queue_id"], record["recipients"]),
                         (queueId, ["x@archive.example"]))
        self.assertIn("Subject: archived", record["message"])
        # Unsigned mail from outside in the site's own name is held.
        sendMessage(port, "mallory@own.example", ["bob@localhost"], "spoofed")
        hold = os.path.join(master.queue, "hold")
        waitFor(lambda: any(files for _, _, files in os.walk(hold)), what="the held message")
        self.assertEqual(len(maildirMessages(spool)["bob"]), 1)
        self.assertRegex(maildirMessages(spool)["bob"][0].decode(),
                         r"Authentication-Results: localhost;\s+dkim=none")


class EveryProviderTests(SynchronousTestCase):
    def test_everyImplementerVerifies(self):
        """
        Every class in tmta, its plugins and the plugin guide's examples
        that declares one of the seams provides all of it
        (C{verifyClass}), and every seam has at least one provider there
        -- the interfaces describe what is.
        """
        import importlib
        import importlib.util
        import inspect

        from zope.interface.verify import verifyClass

        from tests.test_imports import sourceFiles

        seams = [getattr(interfaces, name) for name in interfaces.__all__]
        found = {seam: [] for seam in seams}
        plugins = sorted(f"twisted.plugins.{name[:-3]}"
                         for name in os.listdir(os.path.join(REPO, "twisted", "plugins"))
                         if name.startswith("tmta") and name.endswith(".py"))
        guide = os.path.join(REPO, "docs", "examples", "plugins", "twisted", "plugins")
        examples = sorted(os.path.join(guide, name) for name in os.listdir(guide)
                          if name.endswith(".py"))
        for moduleName in sorted(m for _, m in sourceFiles()) + plugins + examples:
            if moduleName.endswith(".__main__"):
                continue  # a program, run when imported
            if moduleName.endswith(".py"):
                # The plugin guide's examples, loaded from their files.
                spec = importlib.util.spec_from_file_location(
                    "guide_" + os.path.basename(moduleName)[:-3], moduleName)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                moduleName = module.__name__
            else:
                module = importlib.import_module(moduleName)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != moduleName:
                    continue
                for seam in seams:
                    if seam.implementedBy(cls):
                        verifyClass(seam, cls)
                        found[seam].append(f"{moduleName}.{cls.__name__}")
        self.assertEqual([seam.__name__ for seam, providers in found.items() if not providers],
                         [])

    def test_builtinSASLTypesNamed(self):
        """
        The SASL backend types smtpd has built in are the ones the
        configuration checks know by name.
        """
        from tmta.sasl import BACKEND_TYPES
        from tmta.smtpd.saslbackends import BUILTIN_TYPES

        self.assertEqual(sorted(BUILTIN_TYPES), sorted(BACKEND_TYPES))


class DeliveryLineTests(SynchronousTestCase):
    """
    Every delivery has its log line, whether or not the agent writes it.
    """

    def deliver(self, agent):
        from twisted.logger import globalLogPublisher

        from tmta.delivery import AgentProtocol
        from tmta.logging import formatLine

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        store = type("Store", (), {"path": lambda *a: "/nonexistent"})()
        protocol = AgentProtocol(agent, store, transport="printer")
        result = self.successResultOf(protocol.deliver(
            "0123456789ABCDEF01", "a@b.example", "x.example", 1.0, 2.0,
            [{"address": "r@x.example", "original": "alias@x.example", "offset": 3,
              "notify": "", "orcpt": ""}]))
        self.assertEqual(result["statuses"], [{"offset": 3, "status": "sent", "dsn": "2.0.0",
                                               "reason": "printed", "action": ""}])
        return [formatLine(e) for e in events if "to=<" in formatLine(e)]

    def test_agentThatDoesNotLog(self):
        """
        A plugin's agent that never calls C{logDelivery} still gets
        Postfix's delivery line, with its transport as the relay.
        """
        from tmta.delivery import SENT, RecipientStatus

        class Quiet:
            def deliver(self, request):
                return [RecipientStatus(r.offset, SENT, "2.0.0", "printed")
                        for r in request.recipients]

        [line] = self.deliver(Quiet())
        self.assertTrue(line.startswith("0123456789ABCDEF01: to=<r@x.example>, "
                                        "orig_to=<alias@x.example>, relay=printer, delay="),
                        line)
        self.assertTrue(line.endswith("dsn=2.0.0, status=sent (printed)"), line)

    def test_agentThatLogsIsNotLoggedTwice(self):
        from tmta.delivery import SENT, RecipientStatus, logDelivery

        class Logs:
            def deliver(self, request):
                statuses = []
                for r in request.recipients:
                    status = RecipientStatus(r.offset, SENT, "2.0.0", "printed")
                    logDelivery(request, r, "myrelay", status, 2.0)
                    statuses.append(status)
                return statuses

        [line] = self.deliver(Logs())
        self.assertIn("relay=myrelay", line)
