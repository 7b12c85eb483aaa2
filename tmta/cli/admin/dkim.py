"""
C{tmta dkim}: the DKIM keys of the domains this site signs for.

C{tmta dkim keygen -d DOMAIN -s SELECTOR} makes a key (RSA of C{-b}
bits, or C{-t ed25519}), writes it to C{SELECTOR.private} in C{-D}
(mode 0600, as C{opendkim-genkey} does, so either tool's keys serve
either), and prints the TXT record to publish and the line for
C{dkim_key_table}.  C{tmta dkim record KEYFILE -d DOMAIN -s SELECTOR}
prints the record of a key that exists.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO


def addParser(commands) -> None:
    parser = commands.add_parser("dkim", help="DKIM signing keys and their DNS records")
    actions = parser.add_subparsers(dest="dkimAction", required=True)
    keygen = actions.add_parser("keygen", help="make a signing key and print its DNS record")
    keygen.add_argument("-d", "--domain", required=True, help="the signing domain (d=)")
    keygen.add_argument("-s", "--selector", required=True, help="the selector (s=)")
    keygen.add_argument("-t", "--type", choices=("rsa", "ed25519"), default="rsa",
                        help="the key type (rsa)")
    keygen.add_argument("-b", "--bits", type=int, default=2048,
                        help="an RSA key's size in bits (2048)")
    keygen.add_argument("-D", "--directory", default=".",
                        help="where SELECTOR.private is written (.)")
    keygen.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    keygen.set_defaults(run=runKeygen, listOf=None)
    record = actions.add_parser("record", help="print the DNS record of a key file")
    record.add_argument("keyfile")
    record.add_argument("-d", "--domain", required=True, help="the signing domain (d=)")
    record.add_argument("-s", "--selector", required=True, help="the selector (s=)")
    record.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    record.set_defaults(run=runRecord, listOf=None)


def _printRecord(key, path: str, out: TextIO) -> None:
    from tmta.authentication.domainkeys import zoneRecord

    out.write(zoneRecord(key) + "\n")
    out.write(f"; dkim_key_table line: {key.selector}._domainkey.{key.domain} "
              f"{key.domain}:{key.selector}:{os.path.abspath(path)}\n")


def runKeygen(options: argparse.Namespace, parser: argparse.ArgumentParser,
              out: TextIO = sys.stdout) -> int:
    from tmta.authentication.domainkeys import generateKey, loadPrivateKey

    domain = options.domain.strip().rstrip(".").lower()
    selector = options.selector.strip()
    if not domain or not selector or "/" in selector or selector.startswith("."):
        parser.error("a domain and a selector (a DNS label, no /) are needed")
    try:
        pem = generateKey(options.type, options.bits)
    except ValueError as e:
        parser.error(str(e))
    path = os.path.join(options.directory, f"{selector}.private")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        sys.stderr.write(f"tmta: fatal: cannot create {path}: {e.strerror}\n")
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    _printRecord(loadPrivateKey(pem, domain, selector), path, out)
    return 0


def runRecord(options: argparse.Namespace, parser: argparse.ArgumentParser,
              out: TextIO = sys.stdout) -> int:
    from tmta.authentication.domainkeys import KeyProblem, readKeySpec

    domain = options.domain.strip().rstrip(".").lower()
    try:
        key = readKeySpec(f"{domain}:{options.selector.strip()}:{options.keyfile}")
    except KeyProblem as e:
        sys.stderr.write(f"tmta: fatal: {e}\n")
        return 1
    _printRecord(key, options.keyfile, out)
    return 0
