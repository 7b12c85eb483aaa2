"""
The seams of tmta.

Every part that can be replaced or added by a plugin is named here by a
zope.interface: a master.cf program (L{IComponent}), a transport
(L{IDeliveryAgent}), a lookup table (L{ILookupTable}), address rewriting
and resolution (L{IAddressRewriter}, L{IAddressResolver}), an smtpd
restriction (L{ISMTPRestriction}), a SASL backend (L{ISASLBackend}) and
a check or signature cleanup applies to a whole message
(L{IMessageAuthenticator}: DKIM, DMARC).
Plugins add components (L{IComponent}), transports
(L{IDeliveryAgentFactory}), table types (L{ILookupTableType}),
restrictions (L{ISMTPRestriction}), SASL backends
(L{ISASLBackendType}) and message authenticators
(L{IMessageAuthenticatorType}); each is checked with
C{zope.interface.verify.verifyObject} when found.

The queue store (L{IQueue}) is the contract between cleanup, qmgr, the
delivery agents and the commands; its directories and file format are
Postfix's discipline, which every process and command relies on.

A plugin author needs nothing but this module: write a class that
provides one of these interfaces and C{twisted.plugin.IPlugin}, put an
instance of it in a file in a C{twisted/plugins/} directory on
C{sys.path}, and name it in master.cf (components, delivery agents) or
main.cf (tables, restrictions).  C{docs/plugins.rst} walks through one
of each.

What every plugin may assume about its process:

  - It runs in a worker process the master started for the service
    that uses it, on that process's one reactor thread; nothing else
    runs there while it does, and it must not block: files, databases
    and the system resolver go to a thread
    (C{twisted.internet.threads.deferToThreadPool}).
  - It is built once per worker process (C{makeService}, C{makeAgent},
    C{open}, or when smtpd reads its restriction lists), while the
    process may still be root, and is used for the life of that
    process: up to C{max_use} clients, or C{max_idle} seconds idle.
    After building, the process gives up root unless the component
    asked to keep it (C{needsRoot}).
  - Errors are answers: each interface says which answer makes mail
    wait (and be tried again) and which refuses or bounces it; an
    unexpected exception always makes mail wait, never loses it.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IWorkerContext",
    "IComponent",
    "IQueue",
    "IDeliveryAgent",
    "IAddressVerifier",
    "IDeliveryAgentFactory",
    "ILookupTable",
    "IOwnedTable",
    "ILookupTableType",
    "IRemoteTable",
    "IAddressRewriter",
    "IAddressResolver",
    "ISMTPRestriction",
    "ISASLBackendType",
    "ISASLBackend",
    "ISASLExchange",
    "IMessageAuthenticatorType",
    "IMessageAuthenticator",
]


class IWorkerContext(Interface):
    """
    What a component gets from the process that runs it: its parameters,
    its reactor, and the sockets it serves.

    Under the master the sockets are inherited from it; a Twisted program
    that embeds a component supplies its own context.
    """

    reactor = Attribute("The reactor the component runs on.")
    config = Attribute(
        "The L{tmta.config.MainConfig} as this service sees it: main.cf "
        "with the service's -o overrides."
    )
    serviceName = Attribute("The master.cf service name (first column).")
    services = Attribute(
        "Every master.cf entry (L{tmta.config.MasterEntry}), for components "
        "that need to know the other services (qmgr: transport limits)."
    )
    arguments = Attribute(
        "The service's master.cf command arguments after the -o settings "
        "(pipe's C{flags=... user=... argv=...}), as a list of words."
    )

    def listen(factory, upstreamProxy=None):
        """
        Serve this service's sockets with C{factory}.

        Connections are counted for the master's process policy
        (C{max_use}, C{max_idle}, the per-process client limit).

        @param upstreamProxy: for an C{inet} service behind a load
            balancer, the seconds each connection has to send HAProxy's
            PROXY header, whose addresses its transport's C{getPeer} and
            C{getHost} then give (C{None}: no header is expected).
        """

    def connect(service, private=True):
        """
        Connect to another service's socket in C{private/} (or
        C{public/}).

        @return: a Deferred firing with a connected
            C{twisted.protocols.amp.AMP} protocol.
        """


class IComponent(Interface):
    """
    A master.cf program: what the eighth column (command) of master.cf
    names, provided by a plugin.
    """

    name = Attribute(
        "The command name in master.cf: smtpd, cleanup, qmgr, local, ..."
    )
    resident = Attribute(
        "True for a service that stays up regardless of max_idle and "
        "max_use, as Postfix's qmgr and pickup do."
    )
    worldReachable = Attribute(
        "True for a service whose UNIX socket every local user may "
        "connect to (showq, which lists the queue for users who cannot "
        "read it); the other public sockets are the mail system's only."
    )
    busyReply = Attribute(
        "For a network service: the bytes the master sends a client that "
        "none of the service's processes can take (every one busy, and no "
        "other may start) before closing the connection, rather than "
        "leave it waiting in the backlog; None for no such reply."
    )

    def needsRoot(config, unpriv):
        """
        Whether the worker keeps root after start-up.

        @param unpriv: master.cf's unpriv column for the service (C{False}
            asks for root, as for local and pipe).
        @return: normally C{not unpriv}; a component may answer C{False}
            when its configuration needs no identity changes (local with
            no system accounts).
        """

    def clientLimit(config):
        """
        How many clients one process serves at once: 1 for a component
        that serves one client at a time (local, which changes identity
        for each delivery), more for one that multiplexes (smtpd).
        """

    def configurationProblems(config, entry):
        """
        What in a service's configuration the component could not honour
        (a restriction it cannot enforce, a command it cannot run):
        checked by the master before start-up, where a problem stops it,
        and before a reload, which a problem refuses.

        @param config: the service's configuration: main.cf with the
            entry's C{-o} overrides.
        @param entry: its master.cf entry (C{service}, C{type},
            C{command}, C{args}).
        @return: a list of problems, each a sentence; empty when none.
        """

    def makeService(context):
        """
        Build the service a worker runs.

        Everything the component needs is imported and built here, before
        the worker gives up root, since an unprivileged process may not
        be able to read the Python installation.

        @param context: an L{IWorkerContext}.
        @return: an C{twisted.application.service.IService} that calls
            C{context.listen} when started.
        """


class IQueue(Interface):
    """
    The mail queue (L{tmta.queue.store.QueueStore}): written by cleanup,
    read by qmgr, the delivery agents and the commands.  Every operation
    is a file-system operation that may block; queue names are
    C{incoming}, C{active}, C{deferred}, C{hold} and C{corrupt}.
    """

    def path(queueName, queueId):
        """
        The file name of a queue file (for an agent that reads it).
        """

    def create(queueName):
        """
        Start a new queue file in C{queueName} (C{incoming} for cleanup).

        @return: C{(queueId, writer)}: the new file's queue id and an open
            writer whose C{commit} makes the message durable and visible.
        """

    def open(queueName, queueId, writable):
        """
        Open an existing queue file, without following a link or
        blocking on what is not a regular file.
        """

    def readEnvelope(queueName, queueId):
        """
        @return: the file's L{tmta.queue.qfile.Envelope}.
        @raise tmta.queue.qfile.CorruptQueueFile: it cannot be read as one.
        """

    def move(queueId, fromQueue, toQueue):
        """
        Move a queue file between queues.
        """

    def remove(queueName, queueId):
        """
        Delete a queue file whose every recipient is done.
        """

    def corrupt(queueName, queueId, reason):
        """
        Set a file that cannot be used aside in C{corrupt/}, with a word
        in the log.
        """

    def isRegular(queueName, queueId):
        """
        Whether what is there is a regular file (a name that is gone
        counts as one).
        """

    def isComplete(queueName, queueId):
        """
        Whether a file is finished (its writer committed it).
        """

    def list(queueName):
        """
        The queue ids in a queue, oldest first.
        """

    def removeStale(queueName, olderThan, now):
        """
        Remove files never completed, once older than C{olderThan}
        seconds.
        """

    def writeDeferLog(queueId, reasons, warned):
        """
        Record why each recipient of a deferred message waits (and when
        its sender was warned of the delay).
        """

    def readDeferLog(queueId):
        """
        @return: each waiting recipient's reason, by address.
        """

    def deferWarned(queueId):
        """
        @return: when the sender was warned of the delay, or C{None}.
        """

    def removeDeferLog(queueId):
        """
        Forget a message's reasons (it was delivered or returned).
        """


class IDeliveryAgent(Interface):
    """
    A transport: local, smtp, lmtp, pipe, discard, error, or a plugin's.
    """

    def deliver(request):
        """
        Deliver one message to some of its recipients.

        @param request: a L{tmta.delivery.DeliveryRequest}: queue id,
            sender, recipients (with their original addresses), nexthop
            and access to the message.
        @return: one L{tmta.delivery.RecipientStatus} per recipient, or a
            Deferred firing with them: C{SENT} once the message is safely
            where it goes (durably: qmgr then marks the recipient done),
            C{DEFERRED} (a 4.x.x DSN code) when trying again later may
            succeed -- qmgr retries with backoff until
            C{maximal_queue_lifetime} -- and C{BOUNCED} (5.x.x) when it
            never will, which returns the message to its sender.  An
            exception, or a failed Deferred, defers every recipient.
            The agent reads the message with C{request.content()}
            (blocking reads: from a thread, or for small messages).
            Each status gets Postfix's delivery line in the maillog
            (C{to=<...>, relay=..., status=...}): the agent may write it
            with L{tmta.delivery.logDelivery} (to name its own relay);
            for each status it did not, tmta writes one, naming the
            transport.
        """


class IAddressVerifier(IDeliveryAgent):
    """
    A transport that can answer address verification probes
    (C{reject_unverified_sender}, C{reject_unverified_recipient}): given
    a request whose C{verifyOnly} is set, it delivers nothing and only
    finds out what would become of each recipient -- C{SENT} for
    deliverable (with what it found as the reason), C{DEFERRED} or
    C{BOUNCED} as a delivery would have ended.  A probe for a transport
    that does not provide this is answered "not known" (C{DEFERRED}) for
    it, so an agent never delivers a probe by mistake.
    """


class IDeliveryAgentFactory(Interface):
    """
    A transport added by a plugin: what master.cf's command column names
    for a delivery service (C{mytransport unix - n n - - myagent}).  tmta
    serves the agent it makes on the service's socket, as it serves
    local; the plugin writes only the agent.
    """

    name = Attribute("The command name in master.cf.")

    def needsRoot(config, unpriv):
        """
        Whether the worker keeps root after start-up (as for
        L{IComponent.needsRoot}): C{not unpriv} unless the agent knows
        better.
        """

    def clientLimit(config):
        """
        How many deliveries one process takes at once.
        """

    def makeAgent(context):
        """
        Build the agent, while the worker may still be root.

        @param context: an L{IWorkerContext}; its C{arguments} are the
            service's master.cf arguments (C{url=...}, say).
        @return: an L{IDeliveryAgent}.
        @raise ValueError: the service's settings are unusable; the
            worker stops, logging the message.
        """


class ILookupTable(Interface):
    """
    A C{type:name} lookup table with Postfix's semantics.

    Synchronous, for speed: smtpd and local consult tables for every
    recipient.  A table whose source is another server (a database, a
    socketmap or memcache server) provides L{IRemoteTable} as well.
    """

    def get(key):
        """
        @param key: looked up as is (callers lower-case where Postfix
            does).
        @return: the value for C{key}, or C{None} when there is none.
        @raise tmta.tables.TableLookupError: the table cannot be
            consulted now; the mail concerned waits (a temporary
            failure), as with Postfix's table lookup errors.
        """


class IRemoteTable(ILookupTable):
    """
    A lookup table whose answers come from another server (C{pgsql:},
    C{mysql:}, C{ldap:}, C{memcache:}, C{socketmap:}, C{tcp:},
    C{proxy:}): L{get<ILookupTable.get>} waits for that server, so it is
    called in a lookup thread (L{tmta.tables.remote.LookupThreads}),
    never on the reactor's thread, where it fails rather than stall
    every session of the process.  A server that is down or too slow is
    a L{tmta.tables.TableLookupError}, so the mail concerned waits.
    """


class IOwnedTable(Interface):
    """
    A lookup table whose content somebody owns, as a file is owned.  As
    in Postfix, local runs the commands and file deliveries an alias
    table names as the owner of the table, or as C{default_privs} when
    root owns it.  A table that does not provide this interface (one
    that is not a file: C{static:}, C{inline:}, a plugin's) counts as
    root's.
    """

    def owner():
        """
        @return: the uid that owns the table's content (its database,
            else its source file), or C{None} when it cannot be told
            now (then root's).
        """


class ILookupTableType(Interface):
    """
    A table type added by a plugin: what C{type} in C{type:name} names.
    """

    name = Attribute("The type, e.g. C{redis} for C{redis:/etc/tmta/redis.cf}.")

    def open(name):
        """
        Open the table C{name} (what follows C{type:}).

        @return: an L{ILookupTable}.
        @raise ValueError: C{name} does not name a table of this type.
        """


class IAddressRewriter(Interface):
    """
    Address rewriting: what Postfix's trivial-rewrite does in its
    rewrite mode.

    Synchronous, for speed: the trivial-rewrite service calls it for
    every address, and smtpd and cleanup reach that service over AMP
    (L{tmta.rewrite.client.RewriteClient} answers them with Deferreds).
    """

    def rewrite(address):
        """
        @return: the address in canonical form (C{@$myorigin} appended,
            C{host!user} swapped, ...).
        """


class IAddressResolver(Interface):
    """
    Address resolution: which transport and next hop deliver to an
    address.

    Synchronous, for the same reason as L{IAddressRewriter}.
    """

    def resolve(address):
        """
        @return: a L{tmta.rewrite.Resolution} (transport, nexthop,
            recipient, address class).
        """


class ISMTPRestriction(Interface):
    """
    One restriction in an smtpd_*_restrictions list, by its name in
    main.cf; a plugin adds one by providing this and naming it.
    """

    name = Attribute("Its name in main.cf, e.g. permit_mynetworks.")

    def evaluate(context):
        """
        Decide for one SMTP command.

        @param context: a L{tmta.smtpd.restrictions.RecipientContext}:
            the stage (C{EHLO}, C{MAIL}, C{RCPT}, C{DATA},
            C{END-OF-MESSAGE}), the client's address and names, the HELO
            name, the sender and recipient (with its address class), the
            login of an authenticated client, the TLS summary, and the
            transaction's side actions (C{context.actions}: a restriction
            may ask for HOLD, DISCARD, FILTER, REDIRECT or PREPEND there).
        @return: C{(action, reply)}, action one of C{permit}, C{reject},
            C{defer}, C{dunno}, reply the SMTP reply for a reject or
            defer (C{None} for the list's default); or a Deferred firing
            with that pair, for a restriction that must ask elsewhere.
            Any other answer, or an exception, defers the mail with 451
            4.3.5: a broken restriction never lets mail through.
        """


class ISASLBackendType(Interface):
    """
    A kind of SASL backend: what C{smtpd_sasl_type} names.  C{dovecot}
    and C{tmta} are built in (L{tmta.smtpd.saslbackends}); a plugin
    adds others.
    """

    name = Attribute("The type, e.g. C{cyrus} for C{smtpd_sasl_type = cyrus}.")

    def open(config, reactor):
        """
        Set up the backend for one smtpd process, while it is still
        root.

        @param config: the smtpd service's configuration; the backend
            reads C{smtpd_sasl_path} and its own settings from it.
        @param reactor: the process's reactor.
        @return: an L{ISASLBackend}.
        @raise ValueError: the configuration does not describe a usable
            backend (smtpd then refuses to start, as AUTH must not
            silently be off).
        """


class ISASLBackend(Interface):
    """
    Where smtpd checks the credentials of SMTP AUTH (RFC 4954): Dovecot's
    authentication service, tmta's own password table, or a plugin's
    (L{ISASLBackendType}).  Chosen by C{smtpd_sasl_type}; built once per
    smtpd process, while it is still root, so it may open what only root
    can read.
    """

    def mechanisms():
        """
        The SASL mechanisms it can run, upper case (C{["PLAIN",
        "LOGIN"]}); a Deferred firing with them when it must ask
        elsewhere first.
        """

    def begin(mechanism, client):
        """
        Start one authentication exchange.

        @param mechanism: one of L{mechanisms}, upper case.
        @param client: a L{tmta.sasl.SASLClient}: the client's address,
            whether the session is under TLS, the service name.
        @return: an L{ISASLExchange}.
        """


class ISASLExchange(Interface):
    """
    One AUTH exchange, step by step.
    """

    def step(response):
        """
        Take the client's next response (decoded from base64; C{None}
        for an AUTH command without an initial response).

        @return: a Deferred firing with a L{tmta.sasl.Challenge} (send it,
            wait for the next response) or a L{tmta.sasl.Authenticated}
            (done: the login name); failing with
            L{tmta.sasl.AuthenticationFailed} (wrong credentials: 535) or
            L{tmta.sasl.AuthenticationUnavailable} (the backend cannot
            tell now: 454).
        """

    def abort():
        """
        The client gave up (C{*}) or went away: free what the exchange
        holds.
        """


class IMessageAuthenticatorType(Interface):
    """
    A kind of message authentication cleanup applies once a whole
    message is in: DKIM verification (C{dkim_verify}), DMARC (C{dmarc})
    and DKIM signing (C{dkim_sign}) are built in
    (L{tmta.authentication}), each switched on by its own parameter; a
    plugin adds one by naming it in C{message_authentication_plugins},
    or replaces a built-in one by taking its name.
    """

    name = Attribute("Its name, e.g. C{dkim_verify}.")

    def open(config, reactor, resolver):
        """
        Set up the authenticator for one cleanup process.

        @param config: cleanup's configuration, for the settings the
            authenticator reads.
        @param reactor: the process's reactor.
        @param resolver: a twisted.names resolver (C{lookupText} and the
            others), for what the authenticator asks the DNS.
        @return: an L{IMessageAuthenticator}, or C{None} when the
            configuration leaves it off.
        @raise ValueError: the configuration does not describe a usable
            authenticator (cleanup then refuses to start: a check asked
            for is never silently off).
        """


class IMessageAuthenticator(Interface):
    """
    One check or signature applied to a whole message in cleanup,
    after the milters and before the message is committed.
    """

    def authenticate(message):
        """
        Examine or sign one message.

        @param message: a L{tmta.authentication.message.MessageUnderTest}:
            its header section and body, envelope, client, whether it is
            being verified or signed, and what the authenticators before
            this one found (C{results}).  The authenticator adds its
            results there, the headers to put on top of the message
            (C{prepend}), and may set C{disposition} (reject, defer or
            hold the message).
        @return: C{None}, or a Deferred firing when done.  A failure
            makes the mail wait (451 4.3.0): a broken check never lets
            mail through unchecked.
        """
