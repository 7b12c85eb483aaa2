"""
Private database servers for the tests of the tables that live in
them: a PostgreSQL cluster made by C{initdb} and a MariaDB made by
C{mariadb-install-db}, each in a temporary directory, listening on a
UNIX socket there and on a loopback port, and an OpenLDAP slapd loaded
by C{slapadd}; owned by the test and stopped by it.  They need root
(the database servers run as Debian's C{postgres} and C{mysql}
accounts) and Debian's packages.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from typing import List, Optional
from urllib.parse import quote

from twisted.trial.unittest import SkipTest

from tests.support import accepting, freePort, stopProcess, waitFor

__all__ = ["PrivatePostgreSQL", "PrivateMariaDB", "PrivateSlapd", "MAIL_SCHEMA", "DIRECTORY"]

#: A schema in the shape of the ISPmail guide's, with two domains, three
#: mailboxes and aliases, in SQL both servers accept.
MAIL_SCHEMA = """
CREATE TABLE virtual_domains (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL);
CREATE TABLE virtual_users (id INTEGER PRIMARY KEY, domain_id INTEGER NOT NULL,
    email VARCHAR(100) NOT NULL, password VARCHAR(150) NOT NULL, quota INTEGER,
    active INTEGER NOT NULL DEFAULT 1);
CREATE TABLE virtual_aliases (id INTEGER PRIMARY KEY, domain_id INTEGER NOT NULL,
    source VARCHAR(100) NOT NULL, destination VARCHAR(100) NOT NULL);
INSERT INTO virtual_domains VALUES (1, 'example.org'), (2, 'example.net');
INSERT INTO virtual_users VALUES
    (1, 1, 'ann@example.org', 'x', NULL, 1),
    (2, 1, 'bob@example.org', 'x', 1000, 1),
    (3, 2, 'cy@example.net', 'x', NULL, 1),
    (4, 2, 'gone@example.net', 'x', NULL, 0);
INSERT INTO virtual_aliases VALUES
    (1, 1, 'postmaster@example.org', 'ann@example.org'),
    (2, 1, 'team@example.org', 'ann@example.org'),
    (3, 1, 'team@example.org', 'bob@example.org'),
    (4, 2, '@example.net', 'cy@example.net'),
    (5, 1, 'o''brien@example.org', 'bob@example.org'),
    (6, 1, '100%@example.org', 'ann@example.org');
"""


def _needs(*programs: str) -> None:
    if os.geteuid() != 0:
        raise SkipTest("a private database server needs root")
    for program in programs:
        if not (shutil.which(program) or os.path.exists(program)):
            raise SkipTest(f"{program} is not installed")


def _postgresBin() -> Optional[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class PrivatePostgreSQL:
    """
    A PostgreSQL cluster of the test's own, run as the C{postgres}
    account, with a database C{mail} owned by a user C{mailuser}
    (password C{secret}).

    @ivar socketDirectory: where its UNIX socket is.
    @ivar port: its loopback TCP port.
    """

    def __init__(self, testCase) -> None:
        binaries = _postgresBin()
        if binaries is None:
            raise SkipTest("PostgreSQL's server (Debian's postgresql) is not installed")
        _needs(os.path.join(binaries, "postgres"))
        self.bin = binaries
        self.base = tempfile.mkdtemp(prefix="tmta-pg-")
        testCase.addCleanup(shutil.rmtree, self.base, True)
        account = pwd.getpwnam("postgres")
        os.chown(self.base, account.pw_uid, account.pw_gid)
        self.data = os.path.join(self.base, "data")
        self.socketDirectory = self.base
        self.port = freePort()
        self.logPath = os.path.join(self.base, "server.log")
        self.process: Optional[subprocess.Popen] = None
        self._asPostgres([os.path.join(binaries, "initdb"), "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--locale=C", "-D", self.data])
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all postgres trust\n"
                    "local all all md5\n"
                    "host all all 127.0.0.1/32 md5\n")

    def _asPostgres(self, command: List[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--"] + command, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)

    def start(self) -> "PrivatePostgreSQL":
        log = open(self.logPath, "ab")
        account = pwd.getpwnam("postgres")

        def becomePostgres():
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

        self.process = subprocess.Popen(
            [os.path.join(self.bin, "postgres"),
             "-D", self.data, "-k", self.socketDirectory, "-h", "127.0.0.1",
             "-p", str(self.port), "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=log, preexec_fn=becomePostgres)
        log.close()
        waitFor(lambda: self.process.poll() is not None or self._ready(), timeout=60,
                what="PostgreSQL to accept connections")
        if self.process.poll() is not None:
            raise AssertionError(f"PostgreSQL exited at start: {self.log()}")
        return self

    def _ready(self) -> bool:
        return subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h",
                               self.socketDirectory, "-p", str(self.port)]).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """
        Run SQL as the superuser.
        """
        return self._asPostgres([os.path.join(self.bin, "psql"), "-v", "ON_ERROR_STOP=1",
                                 "-qAt", "-h", self.socketDirectory, "-p", str(self.port),
                                 "-d", database], input=sql.encode()).stdout.decode()

    def createMailDatabase(self, schema: str = MAIL_SCHEMA) -> None:
        """
        The database C{mail}, owned by C{mailuser}, with C{schema}.
        """
        self.psql("CREATE USER mailuser PASSWORD 'secret'; CREATE DATABASE mail OWNER mailuser;")
        self.psql("SET ROLE mailuser;\n" + schema, database="mail")

    def log(self) -> str:
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """
        Stop the server (a fast shutdown: clients are disconnected), as
        an operator would.
        """
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
            stopProcess(self.process, grace=30)
            self.process = None


class PrivateMariaDB:
    """
    A MariaDB server of the test's own, run as the C{mysql} account,
    with a database C{mail} a user C{mailuser} (password C{secret}) may
    read.
    """

    def __init__(self, testCase) -> None:
        _needs("mariadbd", "mariadb-install-db")
        self.base = tempfile.mkdtemp(prefix="tmta-my-")
        testCase.addCleanup(shutil.rmtree, self.base, True)
        account = pwd.getpwnam("mysql")
        os.chown(self.base, account.pw_uid, account.pw_gid)
        # Its socket is for every account, as /run/mysqld's is.
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "data")
        self.socket = os.path.join(self.base, "mysqld.sock")
        self.port = freePort()
        self.logPath = os.path.join(self.base, "server.log")
        self.process: Optional[subprocess.Popen] = None
        # A temporary directory of its own: bootstraps running at once
        # in the shared /tmp trip over each other's temporary tables.
        installed = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
             f"--tmpdir={self.base}", "--user=mysql", "--auth-root-authentication-method=socket",
             "--skip-test-db"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if installed.returncode != 0:
            raise AssertionError("mariadb-install-db failed: "
                                 + installed.stdout.decode("utf-8", "replace")[-2000:])

    def start(self) -> "PrivateMariaDB":
        log = open(self.logPath, "ab")
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--user=mysql",
             f"--pid-file={self.base}/mysqld.pid", f"--tmpdir={self.base}", "--skip-log-bin",
             "--innodb-flush-log-at-trx-commit=0", "--max-connections=300"],
            stdout=log, stderr=log)
        log.close()
        waitFor(lambda: self.process.poll() is not None or os.path.exists(self.socket),
                timeout=60, what="MariaDB's socket")
        time.sleep(0.2)
        if self.process.poll() is not None:
            raise AssertionError(f"MariaDB exited at start: {self.log()}")
        return self

    def sql(self, sql: str, database: str = "") -> str:
        """
        Run SQL as the server's root.
        """
        return subprocess.run(["mariadb", "--no-defaults", "-S", self.socket, "-u", "root",
                               "-N", "-B"] + ([database] if database else []),
                              input=sql.encode(), check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT).stdout.decode()

    def createMailDatabase(self, schema: str = MAIL_SCHEMA) -> None:
        self.sql("CREATE DATABASE mail; CREATE USER 'mailuser'@'localhost' IDENTIFIED BY "
                 "'secret'; CREATE USER 'mailuser'@'127.0.0.1' IDENTIFIED BY 'secret'; "
                 "GRANT SELECT ON mail.* TO 'mailuser'@'localhost'; "
                 "GRANT SELECT ON mail.* TO 'mailuser'@'127.0.0.1';")
        self.sql(schema, database="mail")

    def log(self) -> str:
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stopProcess(self.process, grace=60)
            self.process = None


#: A directory of people and groups under dc=example,dc=org, with the
#: mail attributes of OpenLDAP's misc schema.
DIRECTORY = """\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups
""" + "".join(f"""
dn: uid={uid},ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: {uid}
cn: {uid}
sn: {uid}
mail: {uid}@example.org
{''.join(f'mailLocalAddress: {a}{chr(10)}' for a in addresses)}\
mailRoutingAddress: {uid}@mail.example.org
description: secret-{uid}
""" for uid, addresses in [
    ("ann", ["ann@example.org", "anne@example.org"]),
    ("bob", ["bob@example.org"]),
    ("obrien", ["o'brien@example.org"]),
    ("star", ["a*b@example.org", "paren(x)@example.org", "back\\slash@example.org"]),
]) + """
dn: cn=team,ou=groups,dc=example,dc=org
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: team
mailLocalAddress: team@example.org
member: uid=ann,ou=people,dc=example,dc=org
member: uid=bob,ou=people,dc=example,dc=org

dn: cn=list,ou=groups,dc=example,dc=org
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: list
mailLocalAddress: list@example.org
mailHost: lists.example.org
member: uid=ann,ou=people,dc=example,dc=org

dn: cn=nested,ou=groups,dc=example,dc=org
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: nested
mailLocalAddress: nested@example.org
member: cn=team,ou=groups,dc=example,dc=org
member: uid=obrien,ou=people,dc=example,dc=org
member: uid=gone,ou=people,dc=example,dc=org
"""


class PrivateSlapd:
    """
    An OpenLDAP slapd of the test's own with a directory loaded, on a
    loopback port and a UNIX socket (L{ldapi}); its manager is
    C{cn=admin,dc=example,dc=org} (password C{secret}).  Only the
    manager, and root bound with SASL EXTERNAL over the socket, may read
    C{description} attributes.

    @param directory: the LDIF loaded, under C{dc=example,dc=org}.
    @param schema: slapd.conf schema text added to OpenLDAP's core,
        cosine, inetorgperson, nis and misc schemas.
    """

    def __init__(self, testCase, directory: str = DIRECTORY, schema: str = "") -> None:
        _needs("slapd", "slapadd")
        self.base = tempfile.mkdtemp(prefix="tmta-ldap-")
        testCase.addCleanup(shutil.rmtree, self.base, True)
        self.data = os.path.join(self.base, "data")
        os.mkdir(self.data)
        self.port = freePort()
        #: The ldapi:// URL of its UNIX socket.
        self.ldapi = "ldapi://" + quote(os.path.join(self.base, "ldapi"), safe="")
        self.config = os.path.join(self.base, "slapd.conf")
        schemas = "".join(f"include /etc/ldap/schema/{name}.schema\n"
                          for name in ("core", "cosine", "inetorgperson", "nis", "misc"))
        if schema:
            with open(os.path.join(self.base, "test.schema"), "w") as f:
                f.write(schema)
            schemas += f"include {self.base}/test.schema\n"
        with open(self.config, "w") as f:
            f.write(schemas + "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
                    f"pidfile {self.base}/slapd.pid\n"
                    "database mdb\nsuffix \"dc=example,dc=org\"\n"
                    "rootdn \"cn=admin,dc=example,dc=org\"\nrootpw secret\n"
                    f"directory {self.data}\nmaxsize 10485760\n"
                    "access to attrs=description\n"
                    '  by dn.exact="gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth" '
                    "read\n"
                    '  by dn.exact="cn=admin,dc=example,dc=org" read\n  by * none\n'
                    "access to * by * read\n")
        ldif = os.path.join(self.base, "directory.ldif")
        with open(ldif, "w") as f:
            f.write(directory)
        subprocess.run(["slapadd", "-f", self.config, "-l", ldif], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "PrivateSlapd":
        self.process = subprocess.Popen(
            ["slapd", "-d", "0", "-f", self.config, "-h",
             f"ldap://127.0.0.1:{self.port}/ {self.ldapi}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waitFor(lambda: self.process.poll() is not None or accepting(self.port), timeout=60,
                what="slapd to listen")
        if self.process.poll() is not None:
            raise AssertionError("slapd exited at start")
        return self

    def stop(self) -> None:
        if self.process is not None:
            stopProcess(self.process)
            self.process = None
