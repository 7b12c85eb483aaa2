"""
The parameters tmta knows, with Postfix 3's defaults at
C{compatibility_level = 3.6}.

L{POSTFIX_DEFAULTS} holds every parameter Postfix knows (read from
C{postfix-defaults.cf}, what C{postconf -d} prints), so that any
C{$name} expands as in Postfix and C{tmta config NAME} answers for any
of them.  L{DEFAULTS} holds the parameters tmta implements, with the
defaults it applies; a parameter set in C{main.cf} that is only in
L{POSTFIX_DEFAULTS} is not acted on, and is warned about.  The one
deliberate difference from Postfix is C{inet_interfaces}, which
defaults to C{loopback-only}: listening to the world is the operator's
decision.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from typing import Dict, List, Tuple


def defaultHostname() -> str:
    """
    The default for C{myhostname}: this machine's fully qualified name, or
    its short name with C{.localdomain} appended, as Postfix does.
    """
    name = socket.gethostname() or "localhost"
    if "." not in name:
        name += ".localdomain"
    return name.lower()


def defaultDomain(hostname: str) -> str:
    """
    The default for C{mydomain}: C{myhostname} without its first label.
    """
    _, _, domain = hostname.partition(".")
    return domain or "localdomain"


# Parameters whose defaults depend on the machine are computed by
# L{computedDefaults}; everything else is a literal Postfix value.
DEFAULTS: Dict[str, str] = {
    # identity
    "compatibility_level": "3.6",
    "mail_name": "tmta",
    "mail_version": "0.1",
    "myorigin": "$myhostname",
    "mydestination": "$myhostname, localhost.$mydomain, localhost",
    "mynetworks_style": "${{$compatibility_level} <level {2} ? {subnet} : {host}}",
    "inet_interfaces": "loopback-only",
    "inet_protocols": "all",
    "relay_domains": "${{$compatibility_level} <level {2} ? {$mydestination} : {}}",
    "relayhost": "",
    "transport_maps": "",
    "parent_domain_matches_subdomains": (
        "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
        "qmqpd_authorized_clients,relay_domains,smtpd_access_maps"),
    "append_at_myorigin": "yes",
    "append_dot_mydomain": "${{$compatibility_level} <level {1} ? {yes} : {no}}",
    "swap_bangpath": "yes",
    "allow_percent_hack": "yes",
    "recipient_delimiter": "",
    "empty_address_recipient": "MAILER-DAEMON",
    "double_bounce_sender": "double-bounce",
    # places and accounts
    "config_directory": "/etc/tmta",
    "queue_directory": "/var/spool/tmta",
    "data_directory": "/var/lib/tmta",
    "mail_spool_directory": "/var/mail",
    "mail_owner": "postfix",
    "default_privs": "nobody",
    "syslog_name": "tmta",
    # The log file tmta start and twistd write to (empty: syslog).
    "maillog_file": "",
    # tmta never notifies comsat (biff): "no" is what it does.
    "biff": "no",
    "process_id_directory": "pid",
    "hash_queue_depth": "1",
    "hash_queue_names": "deferred, defer",
    # master
    "default_process_limit": "100",
    "max_use": "100",
    "max_idle": "100s",
    "service_throttle_time": "60s",
    "ipc_timeout": "3600s",
    "ipc_idle": "5s",
    "daemon_timeout": "18000s",
    "trigger_timeout": "10s",
    "stress": "",
    # smtpd
    "smtpd_banner": "$myhostname ESMTP $mail_name",
    "smtpd_timeout": "${stress?{10}:{300}}s",
    "smtpd_hard_error_limit": "${stress?{1}:{20}}",
    # Postfix 3.7's name; the older smtpd_per_record_deadline, when set,
    # still decides.
    "smtpd_per_request_deadline": (
        "${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}"),
    "smtpd_min_data_rate": "500",
    "smtpd_soft_error_limit": "10",
    "smtpd_error_sleep_time": "1s",
    "smtpd_junk_command_limit": "${stress?{1}:{100}}",
    "smtpd_recipient_limit": "1000",
    "smtpd_recipient_overshoot_limit": "1000",
    "smtpd_helo_required": "no",
    # Postfix 3.9's defaults against command injection and smuggling,
    # with no exclusions: clients in mynetworks get no licence to smuggle.
    "smtpd_forbid_unauth_pipelining": "yes",
    "smtpd_forbid_bare_newline": "normalize",
    "smtpd_forbid_bare_newline_exclusions": "",
    "smtpd_forbid_bare_newline_reject_code": "550",
    "smtpd_relay_restrictions": (
        "${{$compatibility_level} <level {1} ? {} : "
        "{permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination}}"
    ),
    "smtpd_recipient_restrictions": "",
    "smtpd_client_restrictions": "",
    "smtpd_helo_restrictions": "",
    "smtpd_sender_restrictions": "",
    "smtpd_data_restrictions": "",
    "smtpd_reject_unlisted_recipient": "yes",
    "smtpd_sasl_auth_enable": "no",
    "smtpd_peername_lookup": "yes",
    "smtpd_process_client_limit": "1000",
    # tmta: the Redis or memcached where anvil counts client rates for
    # every host sharing it (empty: each host counts its own).
    "anvil_shared_store": "",
    # tmta: the form of the maillog's lines, text (Postfix's) or json.
    "maillog_file_format": "text",
    # tmta: message authentication in cleanup (tmta.authentication).
    # The name this host gives its Authentication-Results headers.
    "authserv_id": "$myhostname",
    # DKIM signing of mail from this site's own clients: the From:
    # domain (or address) to a key name, the key name to
    # domain:selector:keyfile (OpenDKIM's SigningTable and KeyTable);
    # empty: no signing.
    "dkim_signing_table": "",
    "dkim_key_table": "",
    # Clients whose mail is signed, not verified (besides local
    # submissions and authenticated clients).
    "dkim_internal_hosts": "$mynetworks",
    "dkim_canonicalization": "relaxed/relaxed",
    "dkim_signed_headers": (
        "from, reply-to, subject, date, to, cc, resent-date, resent-from, resent-to, "
        "resent-cc, in-reply-to, references, list-id, list-help, list-unsubscribe, "
        "list-subscribe, list-post, list-owner, list-archive, message-id, mime-version, "
        "content-type, content-transfer-encoding"),
    "dkim_oversigned_headers": "from",
    # DKIM verification of incoming mail, into Authentication-Results.
    "dkim_verification": "no",
    "dkim_minimum_key_bits": "1024",
    # ARC (RFC 8617): the chain of forwarders' seals on incoming mail.
    "arc_verification": "no",
    # ARC sealing of mail passed on (forwarded): domain:selector:keyfile.
    "arc_signing_key": "",
    # DMARC of incoming mail, and what its policies do here: p=reject
    # is refused (reject), held or only tagged; p=quarantine held or
    # tagged.
    "dmarc_verification": "no",
    "dmarc_reject_action": "reject",
    "dmarc_quarantine_action": "hold",
    # Where each DMARC evaluation for a domain that asks for aggregate
    # reports (rua=) is recorded, for "tmta dmarc report" (empty: none);
    # who the reports say they are from.
    "dmarc_history_file": "",
    # Forwarders (ARC sealer domains) whose intact seal overrides a DMARC
    # failure (RFC 7489's trusted_forwarder); needs arc_verification.
    "dmarc_trusted_arc_sealers": "",
    "dmarc_report_org_name": "$mydomain",
    "dmarc_report_sender": "dmarc-reports@$mydomain",
    # tmta: MTA-STS (RFC 8461) for mail to a domain's MX hosts, its
    # policies kept under $data_directory/mta-sts.
    "smtp_mta_sts_enable": "no",
    # tmta: TLS reporting (RFC 8460): where each session under an
    # MTA-STS or DANE policy is recorded for "tmta tlsrpt report" (empty:
    # nowhere), and who the reports say they are from.
    "smtp_tls_report_history_file": "",
    "tls_report_org_name": "$mydomain",
    "tls_report_sender": "tls-reports@$mydomain",
    # tmta: REQUIRETLS (RFC 8689), offered by smtpd under TLS; such
    # mail leaves only over TLS that verifies its server, or bounces.
    "requiretls_enable": "yes",
    # Plugins (IMessageAuthenticatorType) run after the built-in checks.
    "message_authentication_plugins": "",
    "disable_vrfy_command": "no",
    "message_size_limit": "10240000",
    "line_length_limit": "2048",
    "header_size_limit": "102400",
    "strict_rfc821_envelopes": "no",
    "smtputf8_enable": "${{$compatibility_level} <level {1} ? {no} : {yes}}",
    "reject_code": "554",
    "relay_domains_reject_code": "554",
    "unknown_local_recipient_reject_code": "550",
    "local_recipient_maps": "proxy:unix:passwd.byname $alias_maps",
    # cleanup
    "hopcount_limit": "50",
    "queue_minfree": "0",
    "duplicate_filter_limit": "1000",
    "undisclosed_recipients_header": "",
    # qmgr
    "queue_run_delay": "300s",
    "minimal_backoff_time": "300s",
    "maximal_backoff_time": "4000s",
    "maximal_queue_lifetime": "5d",
    "bounce_queue_lifetime": "5d",
    "qmgr_message_active_limit": "20000",
    "default_destination_concurrency_limit": "20",
    "default_destination_recipient_limit": "50",
    "local_destination_recipient_limit": "1",
    "local_destination_concurrency_limit": "2",
    # tmta: how many delivery requests may share one connection to an
    # agent process, which serves them as one batch (local: one fsync of
    # a Maildir's new/ for them all); above 1, the process and
    # destination concurrency limits count processes.  1: a process per
    # delivery under way, as in Postfix.
    "default_delivery_batch_limit": "1",
    "local_delivery_batch_limit": "8",
    "default_transport": "smtp",
    "local_transport": "local:$myhostname",
    "relay_transport": "relay",
    "soft_bounce": "no",
    "defer_transports": "",
    # local
    "alias_maps": "hash:/etc/aliases",
    "alias_database": "hash:/etc/aliases",
    "home_mailbox": "",
    "mailbox_delivery_lock": "fcntl, dotlock",
    "mailbox_size_limit": "51200000",
    "local_mailbox_accounts": "system",  # tmta: "none" = no system accounts (embedded)
    # bounce
    "bounce_size_limit": "50000",
    "bounce_notice_recipient": "postmaster",
    "2bounce_notice_recipient": "postmaster",
    "error_notice_recipient": "postmaster",
    "delay_warning_time": "0h",
    "in_flow_delay": "1s",
    "notify_classes": "resource, software",
}


LOOPBACK_NETWORKS = "127.0.0.0/8 [::1]/128"


def interfaceAddresses() -> List[Tuple[str, int]]:
    """
    This machine's interface addresses with their prefix lengths (from
    C{ip -o addr}); the loopback addresses alone when they cannot be
    read.
    """
    try:
        output = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True,
                                timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        output = ""
    found = []
    for line in output.splitlines():
        words = line.split()
        for family in ("inet", "inet6"):
            if family in words[:4]:
                address, _, length = words[words.index(family) + 1].partition("/")
                found.append((address, int(length or (32 if family == "inet" else 128))))
    return found or [("127.0.0.1", 8), ("::1", 128)]


def networksByStyle(style: str, addresses: List[Tuple[str, int]]) -> str:
    """
    C{mynetworks} as Postfix works it out from C{mynetworks_style}:
    C{host}, each interface address alone; C{subnet}, each interface's
    subnet; C{class}, each IPv4 address's class A, B or C network (IPv6
    as C{subnet}).  IPv4 first, IPv6 in brackets.
    """
    style = style.strip().lower()
    networks: List[ipaddress._BaseNetwork] = []
    for text, length in addresses:
        address = ipaddress.ip_address(text)
        if style == "host":
            length = address.max_prefixlen
        elif style == "class" and address.version == 4:
            first = int(str(address).split(".")[0])
            length = 8 if first < 128 else 16 if first < 192 else 24 if first < 224 else 32
        network = ipaddress.ip_network(f"{text}/{length}", strict=False)
        if network not in networks:
            networks.append(network)
    networks.sort(key=lambda n: n.version)
    return " ".join(str(n) if n.version == 4 else f"[{n.network_address}]/{n.prefixlen}"
                    for n in networks)


def computedDefaults() -> Dict[str, str]:
    """
    Defaults that depend on the machine tmta runs on.

    C{mynetworks} is not among them: it follows C{mynetworks_style}
    (L{networksByStyle}), worked out when first asked for.
    """
    hostname = defaultHostname()
    return {
        "myhostname": hostname,
        "mydomain": defaultDomain(hostname),
    }


def _readPostfixDefaults() -> Dict[str, str]:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "postfix-defaults.cf")
    defaults: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or "=" not in line:
                continue
            name, _, value = line.partition("=")
            defaults[name.strip()] = value.strip()
    return defaults


#: Every parameter of Postfix, with its default.
POSTFIX_DEFAULTS: Dict[str, str] = _readPostfixDefaults()

# What the smtp and lmtp delivery agents read, with Postfix's defaults.
for _prefix in ("smtp", "lmtp"):
    for _name in ("connect_timeout", "helo_timeout", "mail_timeout", "rcpt_timeout",
                  "data_init_timeout", "data_done_timeout", "quit_timeout",
                  "mx_address_limit", "lhlo_name", "lhlo_timeout", "helo_name",
                  "connection_cache_time_limit", "connection_reuse_time_limit",
                  "fallback_relay", "mx_session_limit", "starttls_timeout",
                  # TLS
                  "tls_security_level", "tls_policy_maps", "tls_CAfile", "tls_CApath",
                  "tls_protocols", "tls_mandatory_protocols", "tls_ciphers",
                  "tls_mandatory_ciphers", "tls_exclude_ciphers",
                  "tls_mandatory_exclude_ciphers", "tls_servername",
                  "tls_verify_cert_match", "tls_secure_cert_match", "tls_wrappermode",
                  "use_tls", "enforce_tls", "tls_enforce_peername",
                  # SMTP AUTH
                  "sasl_auth_enable", "sasl_password_maps", "sasl_security_options",
                  "sasl_tls_security_options", "sasl_mechanism_filter", "sasl_type",
                  # where and how to connect
                  "bind_address", "bind_address6", "address_preference", "host_lookup",
                  "dns_support_level", "connection_cache_on_demand",
                  "connection_cache_destinations"):
        _full = f"{_prefix}_{_name}"
        if _full in POSTFIX_DEFAULTS:
            DEFAULTS.setdefault(_full, POSTFIX_DEFAULTS[_full])

# The queue manager's scheduler and what the agents share.
for _name in ("initial_destination_concurrency",
              "default_destination_concurrency_positive_feedback",
              "default_destination_concurrency_negative_feedback",
              "default_destination_concurrency_failed_cohort_limit",
              "sender_dependent_relayhost_maps", "empty_address_relayhost_maps_lookup_key",
              "sender_dependent_default_transport_maps",
              "empty_address_default_transport_maps_lookup_key",
              "qmgr_message_recipient_limit", "smtp_skip_5xx_greeting",
              "disable_dns_lookups", "tls_export_cipherlist", "tls_low_cipherlist",
              "tls_medium_cipherlist", "tls_high_cipherlist", "tls_null_cipherlist"):
    DEFAULTS.setdefault(_name, POSTFIX_DEFAULTS[_name])

# The local side: local(8), pipe(8), virtual(8), cleanup's rewriting and
# content checks, and the table tools.
for _name in ("forward_path", "allow_mail_to_commands", "allow_mail_to_files",
              "mailbox_command", "luser_relay", "owner_request_special",
              "local_command_shell", "command_expansion_filter", "export_environment",
              "command_time_limit", "command_execution_directory", "mailbox_transport",
              "fallback_transport", "virtual_mailbox_domains", "virtual_mailbox_base",
              "virtual_mailbox_maps", "virtual_uid_maps", "virtual_gid_maps",
              "virtual_minimum_uid", "virtual_mailbox_limit", "virtual_mailbox_lock",
              "virtual_transport", "virtual_alias_domains", "virtual_alias_maps",
              "virtual_alias_recursion_limit", "virtual_alias_expansion_limit",
              "unknown_virtual_mailbox_reject_code", "unknown_virtual_alias_reject_code",
              "canonical_maps", "sender_canonical_maps", "recipient_canonical_maps",
              "masquerade_domains", "masquerade_classes", "masquerade_exceptions",
              "always_bcc", "sender_bcc_maps", "recipient_bcc_maps",
              "local_header_rewrite_clients", "propagate_unmatched_extensions",
              "header_checks", "mime_header_checks", "nested_header_checks", "body_checks",
              "default_database_type", "alias_database", "smtpd_discard_ehlo_keywords"):
    DEFAULTS.setdefault(_name, POSTFIX_DEFAULTS[_name])

# smtpd's TLS and AUTH.
for _name in ("smtpd_tls_security_level", "smtpd_use_tls", "smtpd_enforce_tls",
              "smtpd_tls_cert_file", "smtpd_tls_key_file", "smtpd_tls_chain_files",
              "smtpd_tls_eccert_file", "smtpd_tls_eckey_file", "smtpd_tls_dcert_file",
              "smtpd_tls_dkey_file", "smtpd_tls_protocols", "smtpd_tls_mandatory_protocols",
              "smtpd_tls_ciphers", "smtpd_tls_mandatory_ciphers", "smtpd_tls_exclude_ciphers",
              "smtpd_tls_mandatory_exclude_ciphers", "smtpd_tls_received_header",
              "smtpd_tls_loglevel", "smtpd_tls_wrappermode", "smtpd_tls_auth_only",
              "smtpd_tls_req_ccert", "smtpd_tls_ask_ccert",
              "smtpd_sasl_type", "smtpd_sasl_path", "smtpd_sasl_security_options",
              "smtpd_sasl_tls_security_options", "smtpd_sasl_mechanism_filter",
              "smtpd_sasl_authenticated_header", "smtpd_sasl_response_limit",
              "smtpd_sasl_service",
              # The restriction language.
              "smtpd_end_of_data_restrictions", "smtpd_delay_reject",
              "smtpd_restriction_classes", "smtpd_sender_login_maps",
              "smtpd_null_access_lookup_key", "defer_code", "non_fqdn_reject_code",
              "invalid_hostname_reject_code", "unknown_client_reject_code",
              "unknown_address_reject_code", "maps_rbl_reject_code", "access_map_reject_code",
              "access_map_defer_code", "unverified_sender_reject_code",
              "smtpd_policy_service_timeout", "smtpd_policy_service_max_idle",
              "smtpd_policy_service_max_ttl", "smtpd_policy_service_request_limit",
              "smtpd_policy_service_default_action", "smtpd_policy_service_policy_context"):
    DEFAULTS.setdefault(_name, POSTFIX_DEFAULTS[_name])

# Enforced by smtpd and anvil, and the replies of restrictions.
for _name in ("relay_recipient_maps", "unknown_relay_recipient_reject_code",
              "smtpd_reject_unlisted_sender", "multi_recipient_bounce_reject_code",
              "plaintext_reject_code", "anvil_rate_time_unit", "unknown_hostname_reject_code",
              "permit_mx_backup_networks", "maps_rbl_domains",
              "smtpd_client_connection_count_limit", "smtpd_client_connection_rate_limit",
              "smtpd_client_message_rate_limit", "smtpd_client_recipient_rate_limit",
              "smtpd_client_new_tls_session_rate_limit", "smtpd_client_auth_rate_limit",
              "smtpd_client_event_limit_exceptions", "delay_notice_recipient",
              # tmta verifies no client certificate, so these permit nobody.
              "relay_clientcerts"):
    DEFAULTS.setdefault(_name, POSTFIX_DEFAULTS[_name])

# Address verification: verify, its probes' routing, and smtpd's replies.
for _name in ("address_verify_map", "address_verify_service_name", "address_verify_sender",
              "address_verify_sender_ttl", "address_verify_poll_count",
              "address_verify_poll_delay", "address_verify_positive_expire_time",
              "address_verify_positive_refresh_time", "address_verify_negative_cache",
              "address_verify_negative_expire_time", "address_verify_negative_refresh_time",
              "address_verify_cache_cleanup_interval", "address_verify_pending_request_limit",
              "address_verify_transport_maps", "address_verify_relayhost",
              "address_verify_local_transport", "address_verify_virtual_transport",
              "address_verify_relay_transport", "address_verify_default_transport",
              "address_verify_sender_dependent_relayhost_maps", "data_directory",
              "address_verify_sender_dependent_default_transport_maps",
              "unverified_sender_defer_code", "unverified_sender_reject_code",
              "unverified_sender_reject_reason", "unverified_sender_tempfail_action",
              "unverified_recipient_defer_code", "unverified_recipient_reject_code",
              "unverified_recipient_reject_reason", "unverified_recipient_tempfail_action",
              "unknown_helo_hostname_tempfail_action", "unknown_address_tempfail_action",
              "reject_tempfail_action",
              # Where Postfix's documentation is: nothing acts on it.
              "readme_directory",
              # Milters (tmta.milter), for smtpd and for cleanup.
              "smtpd_milters", "non_smtpd_milters", "smtpd_milter_maps", "milter_protocol",
              "milter_default_action",
              "milter_connect_timeout", "milter_command_timeout", "milter_content_timeout",
              "milter_connect_macros", "milter_helo_macros", "milter_mail_macros",
              "milter_rcpt_macros", "milter_data_macros", "milter_end_of_header_macros",
              "milter_end_of_data_macros", "milter_unknown_command_macros",
              "milter_macro_daemon_name", "milter_macro_v", "milter_macro_defaults",
              "milter_header_checks",
              # Client certificates (tmta.smtpd.tls).
              "smtpd_tls_CAfile", "smtpd_tls_CApath", "smtpd_tls_fingerprint_digest",
              # Users who moved (tmta.mail.rewriting).
              "relocated_maps",
              # Which cleanup service a daemon hands its mail to.
              "cleanup_service_name",
              # The tables proxymap serves (tmta.proxymap).
              "proxy_read_maps", "proxy_write_maps",
              # What the SMTP and LMTP clients edit in what they send
              # (tmta.mail.contentchecks).
              "smtp_header_checks", "smtp_mime_header_checks", "smtp_nested_header_checks",
              "smtp_body_checks", "lmtp_header_checks", "lmtp_mime_header_checks",
              "lmtp_nested_header_checks", "lmtp_body_checks",
              # ... and the addresses they send (tmta.mail.addressmaps).
              "smtp_generic_maps", "lmtp_generic_maps",
              # After-queue content filters (tmta.mail.receiving, qmgr).
              "content_filter", "receive_override_options", "default_filter_nexthop",
              # The before-queue filter (tmta.smtpd.proxy).
              "smtpd_proxy_filter", "smtpd_proxy_ehlo", "smtpd_proxy_timeout",
              "smtpd_proxy_options", "smtpd_authorized_xforward_hosts",
              "smtp_send_xforward_command", "lmtp_send_xforward_command",
              # postscreen (tmta.postscreen), and the pass service it hands to.
              "smtpd_service_name", "postscreen_access_list", "postscreen_denylist_action",
              "postscreen_allowlist_interfaces", "postscreen_bare_newline_action",
              "postscreen_bare_newline_enable", "postscreen_bare_newline_ttl",
              "postscreen_cache_cleanup_interval", "postscreen_cache_map",
              "postscreen_cache_retention_time", "postscreen_client_connection_count_limit",
              "postscreen_command_count_limit", "postscreen_command_time_limit",
              "postscreen_disable_vrfy_command", "postscreen_dnsbl_action",
              "postscreen_dnsbl_allowlist_threshold", "postscreen_dnsbl_max_ttl",
              "postscreen_dnsbl_min_ttl",
              "postscreen_dnsbl_sites", "postscreen_dnsbl_threshold",
              "postscreen_dnsbl_reply_map",
              "postscreen_dnsbl_timeout", "postscreen_forbidden_commands",
              "postscreen_greet_action", "postscreen_greet_banner", "postscreen_greet_ttl",
              "postscreen_greet_wait", "postscreen_non_smtp_command_action",
              "postscreen_non_smtp_command_enable", "postscreen_non_smtp_command_ttl",
              "postscreen_pipelining_action", "postscreen_pipelining_enable",
              "postscreen_pipelining_ttl", "postscreen_pre_queue_limit",
              "postscreen_upstream_proxy_protocol", "postscreen_upstream_proxy_timeout",
              "postscreen_watchdog_timeout",
              # The PROXY protocol in front of smtpd (tmta.mail.proxyprotocol).
              "smtpd_upstream_proxy_protocol", "smtpd_upstream_proxy_timeout"):
    DEFAULTS.setdefault(_name, POSTFIX_DEFAULTS[_name])

#: The parameters tmta acts on.
IMPLEMENTED = frozenset(DEFAULTS) | {"myhostname", "mydomain", "mynetworks"}

#: Parameters whose values Postfix never expands (they are expanded later,
#: per message, with other names in scope: $recipient, $user, ...).
RAW_PARAMETERS = frozenset({
    "default_rbl_reply", "forward_path", "luser_relay", "mailbox_command",
    "postscreen_expansion_filter", "postscreen_reject_footer",
    "smtpd_expansion_filter", "smtpd_reject_footer",
})
