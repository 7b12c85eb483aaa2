"""
The C{proxymap} service: tables on other servers (C{proxy:pgsql:...},
C{proxy:mysql:...}) looked up in one process for every other, so that
many smtpd, trivial-rewrite and cleanup processes share that process's
few connections to the database instead of keeping their own, as
Postfix's proxymap(8) shares them.

Only the tables C{proxy_read_maps} lists are served (start-up refuses
the others, L{tmta.tables.tableProblems}).  A C{proxy:} table that is
a local file is read where it is used: it needs no connection to
share, and the trip to another process would only slow it.
"""
