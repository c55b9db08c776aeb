"""`xmppctl diagnose`: the support cases of the meeting appliance (DNS,
certificate, secret mistakes), each made for real and found.

Every test builds a set-up from real parts: xmppd nodes, a dnsmasq serving
the test's own SRV and A records, a CA of the test's own issuing the node's
certificate; then breaks one thing and checks that diagnose names exactly
that thing (one FAIL, the right words) and that the exit status follows.
"""

import os
import re
import socket
import time

import pytest

import pki
import xmpptest
from dnsmasq import DnsServer

DOMAIN = "diag.test"
NODE_FQDN = "node1." + DOMAIN
CLIENT_SRV = "_xmpp-client._tcp." + DOMAIN
SERVER_SRV = "_xmpp-server._tcp." + DOMAIN
COMPONENT_SRV = "_xmpp-component._tcp." + DOMAIN
DNS_PORT = 10053
# Per DNS query and per connection; dnsmasq answers in microseconds.
TIMEOUT_MS = "2000"

FINDING_RE = re.compile(r"^(OK|INFO|WARN|FAIL)  +(.*)$", re.M)


class Report:
    """diagnose's output, parsed: findings as (WORD, text)."""

    def __init__(self, proc):
        self.text = proc.stdout
        self.status = proc.returncode
        self.findings = FINDING_RE.findall(self.text)
        summary = re.search(r"^summary: (\d+) OK, (\d+) WARN, (\d+) FAIL, (\d+) INFO",
                            self.text, re.M)
        assert summary, "no summary line in:\n" + self.text
        self.summary = dict(zip(("OK", "WARN", "FAIL", "INFO"),
                                (int(n) for n in summary.groups())))
        for word in self.summary:
            assert self.summary[word] == len(self.with_word(word)), \
                "summary counts %d %s, the report shows %d:\n%s" % (
                    self.summary[word], word, len(self.with_word(word)), self.text)

    def with_word(self, word):
        return [text for w, text in self.findings if w == word]

    def find(self, word, pattern):
        """The WORD findings matching regex PATTERN."""
        return [text for text in self.with_word(word) if re.search(pattern, text)]

    def only_fail(self, pattern):
        """Exactly one FAIL, matching PATTERN, and exit status 1."""
        fails = self.with_word("FAIL")
        assert len(fails) == 1 and re.search(pattern, fails[0]), \
            "want exactly one FAIL matching %r, got %r:\n%s" % (pattern, fails, self.text)
        assert self.status == 1, "exit status %d with a FAIL:\n%s" % (self.status, self.text)
        return fails[0]

    def explained(self, finding):
        """The cause and fix lines printed under FINDING."""
        after = self.text.split(finding, 1)[1].splitlines()[1:3]
        assert len(after) == 2 and after[0].strip().startswith("cause:") and \
            after[1].strip().startswith("fix:"), \
            "no cause and fix under %r:\n%s" % (finding, self.text)
        return after


def dns_address():
    """A loopback address of our own where DNS_PORT is free (allocate_address
    only knows about xmppd's port)."""
    for _ in range(20):
        address = xmpptest.allocate_address()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((address, DNS_PORT))
            return address
        except OSError:
            continue
        finally:
            probe.close()
    raise RuntimeError("no loopback address with port %d free" % DNS_PORT)


@pytest.fixture
def dns(tmp_path):
    server = DnsServer(str(tmp_path), dns_address(), DNS_PORT)
    yield server
    server.stop()


@pytest.fixture
def ca(tmp_path):
    directory = tmp_path / "pki"
    directory.mkdir()
    return pki.CA(str(directory), days=365)


def publish(dns, node, client=True, component=True, fqdn=NODE_FQDN,
            component_port=None):
    """SRV records naming NODE by FQDN, its A record, and start the server."""
    if client:
        dns.srv(CLIENT_SRV, fqdn, node.port, priority=10, weight=50)
    if component:
        dns.srv(COMPONENT_SRV, fqdn, component_port or node.component_port, priority=10,
                weight=50)
    dns.host(fqdn, node.address)
    dns.start()


def make_diag_node(make_node, ca, sans=(DOMAIN, NODE_FQDN), days=90, bundle=True,
                   callbridge=True, start=True):
    key, cert = ca.issue("node-%d" % time.monotonic_ns(), list(sans), days=days)
    node = make_node(start=False, domain=DOMAIN, component="direct", tls_key=key,
                     tls_cert=cert, tls_bundle=ca.cert if bundle else None)
    if callbridge:
        node.add_callbridge("cb1")
    if start:
        node.start()
    return node


def diagnose(node, dns, *args, expect=None):
    return Report(node.ctl("diagnose", "--dns-server", dns.server, "--timeout", TIMEOUT_MS,
                           *args, expect=expect))


# ---------------------------------------------------------------------------
# A clean set-up


@pytest.mark.parametrize("sans", [(DOMAIN, NODE_FQDN), ("DIAG.Test", "*.Diag.TEST")],
                         ids=["names", "wildcard"])
def test_clean_setup_is_clean(make_node, dns, ca, sans):
    node = make_diag_node(make_node, ca, sans=sans)
    publish(dns, node)
    report = diagnose(node, dns)
    assert report.status == 0, "exit %d for a clean set-up:\n%s" % (report.status,
                                                                      report.text)
    assert not report.with_word("FAIL") and not report.with_word("WARN"), report.text

    # Each check ran and passed, with what it found.
    endpoint = {CLIENT_SRV: node.port, COMPONENT_SRV: node.component_port}
    for name, port in endpoint.items():
        assert report.find("OK", r"^%s: 1 SRV record: %s:%d " % (
            re.escape(name), re.escape(NODE_FQDN), port)), report.text
        assert report.find("OK", r"^%s:%d \(%s\) accepts TCP connections" % (
            re.escape(NODE_FQDN), port, re.escape(node.address))), report.text
    assert report.find("INFO", r"no DNS SRV records for %s \(not checked: no s2s listener"
                       % re.escape(SERVER_SRV)), report.text
    assert report.find("OK", r"^certificate names %s \(the XMPP domain\)" % re.escape(DOMAIN))
    assert report.find("OK", r"^certificate names %s \(SRV target of " % re.escape(NODE_FQDN))
    assert report.find("OK", r"^key .* matches the certificate"), report.text
    assert report.find("OK", r"^certificate chain verifies against the bundle %s"
                       % re.escape(ca.cert)), report.text
    assert report.find("OK", r"^certificate valid until \d{4}-\d\d-\d\d"), report.text
    assert report.find("OK", r"^1 call-bridge secret stored: cb1$"), report.text
    assert "summary: " in report.text and "nothing is wrong" in report.text


def test_domain_argument_and_secret_never_printed(make_node, dns, ca):
    """DOMAIN on the command line replaces the configured one; the
    call-bridge secret is named, never shown."""
    node = make_diag_node(make_node, ca, callbridge=False)
    secret = node.add_callbridge("cb7")
    publish(dns, node)
    report = diagnose(node, dns, "other.test", expect=1)
    assert report.find("FAIL", r"^no DNS SRV records for _xmpp-client\._tcp\.other\.test$")
    assert report.find("FAIL", r"^certificate does not name other\.test \(the XMPP domain\)")
    assert report.find("OK", r"^1 call-bridge secret stored: cb7$"), report.text
    assert secret not in report.text
    report = diagnose(node, dns, expect=0)
    assert secret not in report.text


# ---------------------------------------------------------------------------
# DNS


@pytest.mark.parametrize("missing", ["client", "component"])
def test_missing_srv_record(make_node, dns, ca, missing):
    node = make_diag_node(make_node, ca)
    publish(dns, node, client=missing != "client", component=missing != "component")
    report = diagnose(node, dns)
    name = CLIENT_SRV if missing == "client" else COMPONENT_SRV
    fail = report.only_fail(r"^no DNS SRV records for %s$" % re.escape(name))
    cause, fix = report.explained(fail)
    assert "SRV" in fix and name in fix, fix
    # The record that is there is still checked, and found fine.
    other = COMPONENT_SRV if missing == "client" else CLIENT_SRV
    assert report.find("OK", r"^%s: 1 SRV record" % re.escape(other)), report.text


def test_component_record_not_required_without_component_listener(make_node, dns, ca):
    """No component listener: a missing component record is INFO, and a
    call-bridge secret is not required either."""
    node = make_diag_node(make_node, ca, callbridge=False, start=False)
    node.config["listeners"] = [l for l in node.config["listeners"] if l["type"] == "c2s"]
    node.start()
    publish(dns, node, component=False)
    report = diagnose(node, dns, expect=0)
    assert report.find("INFO", r"^no DNS SRV records for %s \(not checked: no component "
                       % re.escape(COMPONENT_SRV)), report.text
    assert report.find("INFO", r"^no call-bridge secrets stored"), report.text


def test_srv_port_nobody_listens_on(make_node, dns, ca):
    node = make_diag_node(make_node, ca)
    publish(dns, node, component_port=node.component_port + 1)
    report = diagnose(node, dns)
    fail = report.only_fail(r"^cannot connect to %s:%d \(%s\), the SRV target of %s: "
                            r"Connection refused$" % (
                                re.escape(NODE_FQDN), node.component_port + 1,
                                re.escape(node.address), re.escape(COMPONENT_SRV)))
    cause, fix = report.explained(fail)
    assert "component listener" in fix, fix
    assert report.find("OK", r"^%s:%d \(.*\) accepts TCP connections" % (
        re.escape(NODE_FQDN), node.port)), report.text


def test_srv_target_without_address_record(make_node, dns, ca):
    node = make_diag_node(make_node, ca, sans=(DOMAIN, "*." + DOMAIN))
    dns.srv(CLIENT_SRV, NODE_FQDN, node.port)
    dns.srv(COMPONENT_SRV, "node2." + DOMAIN, node.component_port)
    dns.host(NODE_FQDN, node.address)
    dns.start()
    report = diagnose(node, dns)
    report.only_fail(r"^node2\.%s, the SRV target of %s, has no A or AAAA record$" % (
        re.escape(DOMAIN), re.escape(COMPONENT_SRV)))


def test_server_record_checked_when_published(make_node, dns, ca):
    """There is no s2s listener: a published _xmpp-server record that leads
    nowhere is a WARN, which does not fail diagnose."""
    node = make_diag_node(make_node, ca)
    dns.srv(SERVER_SRV, NODE_FQDN, 5269)
    publish(dns, node)
    report = diagnose(node, dns, expect=0)
    assert report.find("OK", r"^%s: 1 SRV record: %s:5269 " % (
        re.escape(SERVER_SRV), re.escape(NODE_FQDN))), report.text
    assert report.find("WARN", r"^cannot connect to %s:5269 .*%s" % (
        re.escape(NODE_FQDN), re.escape(SERVER_SRV))), report.text
    assert not report.with_word("FAIL"), report.text


def test_dns_server_not_answering(make_node, ca, tmp_path):
    """A DNS server that takes the query and never answers: a dns error
    naming the timeout, within about the timeout per phase."""
    node = make_diag_node(make_node, ca)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        silent.bind((dns_address(), DNS_PORT))
        server = "%s:%d" % silent.getsockname()
        started = time.monotonic()
        proc = node.ctl("diagnose", "--dns-server", server, "--timeout", "500", expect=1)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    report = Report(proc)
    for name in (CLIENT_SRV, COMPONENT_SRV):
        assert report.find("FAIL", r"^dns error looking up %s: timed out" % re.escape(name)), \
            report.text
    assert report.find("INFO", r"^dns error looking up %s" % re.escape(SERVER_SRV))
    assert elapsed < 10 * (2 if xmpptest.SANITIZED else 1), \
        "diagnose took %.1f s with a 500 ms timeout" % elapsed


# ---------------------------------------------------------------------------
# Certificate


@pytest.mark.parametrize("sans,missing", [
    ((DOMAIN,), NODE_FQDN),
    ((NODE_FQDN,), DOMAIN),
    # A wildcard is one whole left-most label: "*.test" is too broad to
    # count, and "*.node1.diag.test" does not cover node1.diag.test itself.
    (("*.test", NODE_FQDN), DOMAIN),
    ((DOMAIN, "*." + NODE_FQDN), NODE_FQDN),
], ids=["no-node-name", "no-domain", "wildcard-too-broad", "wildcard-one-level-down"])
def test_certificate_without_needed_san(make_node, dns, ca, sans, missing):
    node = make_diag_node(make_node, ca, sans=sans)
    publish(dns, node)
    report = diagnose(node, dns)
    fail = report.only_fail(r"^certificate does not name %s \(" % re.escape(missing))
    cause, fix = report.explained(fail)
    assert "DNS:%s" % missing in fix, fix


def test_key_does_not_match(make_node, dns, ca, tmp_path):
    """The node runs with a good pair; the YAML now names another key (not
    reloaded yet). diagnose reads the files, as the next reload would."""
    node = make_diag_node(make_node, ca)
    publish(dns, node)
    diagnose(node, dns, expect=0)
    other = pki.make_key(str(tmp_path), "other")
    node.config["tls"]["key"] = other
    node.write_config()
    report = diagnose(node, dns)
    fail = report.only_fail(r"^key %s does not match certificate %s$" % (
        re.escape(other), re.escape(node.config["tls"]["certificate"])))
    cause, fix = report.explained(fail)
    assert "reload" in fix, fix


def test_stopped_node_and_unreadable_key(make_node, dns, ca, tmp_path):
    """diagnose needs no running node for the files, and tells a missing key
    file apart from a wrong one."""
    node = make_diag_node(make_node, ca, start=False)
    publish(dns, node)
    report = diagnose(node, dns, expect=1)
    # Only the ports fail: nothing listens.
    fails = report.with_word("FAIL")
    assert len(fails) == 2 and all(f.startswith("cannot connect to ") for f in fails), \
        report.text
    assert report.find("OK", r"^key .* matches the certificate"), report.text
    node.config["tls"]["key"] = str(tmp_path / "no-such-key.pem")
    node.write_config()
    report = diagnose(node, dns, expect=1)
    assert report.find("FAIL", r"^cannot read the key .*no-such-key\.pem: No such file"), \
        report.text


def test_chain_does_not_verify_against_bundle(make_node, dns, ca, tmp_path):
    other_dir = tmp_path / "other-ca"
    other_dir.mkdir()
    other = pki.CA(str(other_dir), name="another CA")
    node = make_diag_node(make_node, ca, start=False)
    node.config["tls"]["bundle"] = other.cert
    node.start()
    publish(dns, node)
    report = diagnose(node, dns)
    fail = report.only_fail(r"^certificate chain does not verify against the bundle %s: "
                            r"no certificate in it issued .*xmppd test CA"
                            % re.escape(other.cert))
    report.explained(fail)


def test_self_signed_without_bundle_warns(make_node, dns, tmp_path):
    """A self-signed certificate (what operators install first) works for
    clients given that certificate: WARN, not FAIL."""
    key = pki.make_key(str(tmp_path), "self")
    cert = str(tmp_path / "self.cert.pem")
    pki._openssl("req", "-x509", "-new", "-key", key, "-out", cert, "-days", "90",
                 "-subj", "/CN=" + DOMAIN,
                 "-addext", "subjectAltName=DNS:%s,DNS:%s" % (DOMAIN, NODE_FQDN))
    node = make_node(start=False, domain=DOMAIN, component="direct", tls_key=key,
                     tls_cert=cert)
    node.add_callbridge("cb1")
    node.start()
    publish(dns, node)
    report = diagnose(node, dns, expect=0)
    warns = report.with_word("WARN")
    assert warns == ["the certificate is self-signed and no CA bundle is configured "
                     "(tls.bundle)"], report.text


def test_certificate_expiring_soon_warns(make_node, dns, ca):
    node = make_diag_node(make_node, ca, days=10)
    publish(dns, node)
    report = diagnose(node, dns, expect=0)
    warns = report.with_word("WARN")
    assert len(warns) == 1 and re.match(r"certificate expires on \d{4}-\d\d-\d\d .*, in "
                                        r"(9|10) days$", warns[0]), report.text


# ---------------------------------------------------------------------------
# Call-bridge secrets and usage


def test_component_listener_without_secret(make_node, dns, ca):
    node = make_diag_node(make_node, ca, callbridge=False)
    publish(dns, node)
    report = diagnose(node, dns)
    fail = report.only_fail(r"^no call-bridge secrets stored, but a component listener "
                            r"is configured$")
    cause, fix = report.explained(fail)
    assert "xmppctl callbridge add" in fix, fix


def test_diagnose_creates_nothing(make_node, dns, ca):
    """No store yet means no secrets; diagnose must not create one (nor
    anything else) in a data directory it only inspects."""
    node = make_diag_node(make_node, ca, callbridge=False, start=False)
    publish(dns, node)
    before = sorted(os.listdir(node.dir))
    diagnose(node, dns, expect=1)
    assert sorted(os.listdir(node.dir)) == before


@pytest.mark.parametrize("args", [
    ("--timeout", "0"),
    ("--timeout", "soon"),
    ("--no-such-option",),
    ("a.test", "b.test"),
    ("not a domain",),
])
def test_usage_errors(make_node, args):
    node = make_node(start=False)
    proc = node.ctl("diagnose", *args, expect=2)
    assert proc.stderr.strip(), "no message for a usage error"
