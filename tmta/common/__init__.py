"""
Mechanisms every part of tmta shares, as Postfix keeps them in its
C{src/global/}: the wake-up trigger, accounts, durable files, eager
transports, and the contract between the master and its workers.

Nothing here imports a daemon (C{tmta.master}, C{tmta.smtpd}, ...), so
any daemon, and any plugin, may use it.
"""
