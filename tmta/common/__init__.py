"""
Mail-agnostic helpers, as Postfix keeps them in its C{src/util/}:
durable files, eager transports, batching work into threads, the flow
gate, slots classes, plugins found and checked, the reactor workers run
on, credentials passed over UNIX sockets, the checks of the Twisted
internals tmta relies on, and the contract between the master and its
workers.

Nothing here knows about mail, nor imports any other part of tmta but
the log (L{tmta.logging}): mail-aware shared code is L{tmta.mail}, the
AMP conversation between processes L{tmta.wire}.
"""
