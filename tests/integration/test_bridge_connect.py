"""xmpp-bridge-connect, the call bridge's side of the component connection
(bridge/), against real xmppd nodes: DNS SRV discovery through a real DNS
server (dnsmasq on 127.0.0.20), RFC 2782 preference, failover when the
preferred node dies, and the appliance's log lines for DNS, secret and
certificate mistakes; plus the login hand-off answered by the program.

Nodes sit on the fixed addresses 127.0.0.21-23 (the DNS records name them),
so every test here holds xmpptest.fixed_addresses()."""

import asyncio
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

import xmpptest
from dnsmasq import DNSMASQ, DnsServer
from pki import CA
from xmpptest import TIMEOUT, LoginFailed, login

BRIDGE = os.path.join(xmpptest.BUILD_DIR, "xmpp-bridge-connect")
DOMAIN = "example.test"
SRV = "_xmpp-component._tcp." + DOMAIN
DNS_ADDRESS = "127.0.0.20"
DNS_PORT = 10063          # not dnsmasq.py's default: other tests may use that
NODES = [  # (host, address, SRV priority)
    ("node1.example.test", "127.0.0.21", 10),
    ("node2.example.test", "127.0.0.22", 20),
    ("node3.example.test", "127.0.0.23", 30),
]
# "connected to the next within a few seconds" (the bridge's first retry
# comes after 0.5 s; the rest is the sanitizer build's slowness)
FAILOVER_TIMEOUT = 5.0 * (2 if xmpptest.SANITIZED else 1)
SECRET = "Fixed0Secret0For0Tests0x"

pytestmark = pytest.mark.skipif(not os.access(DNSMASQ, os.X_OK),
                                reason="dnsmasq (dnsmasq-base) is not installed")


class Bridge:
    """One xmpp-bridge-connect process; its stderr is its log."""

    def __init__(self, directory, secret, *args, users=None):
        self.dir = directory
        self.secret = secret
        self.log_path = os.path.join(directory, "bridge.log")
        secret_file = os.path.join(directory, "bridge.secret")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        argv = [BRIDGE, "--secret-file", secret_file, *args]
        if users:
            users_file = os.path.join(directory, "bridge.users")
            fd = os.open(users_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.writelines("%s %s\n" % u for u in users.items())
            argv += ["--users", users_file]
        assert os.access(BRIDGE, os.X_OK), "%s is not built" % BRIDGE
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         env=xmpptest.sanitizer_env())

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def log_size(self):
        return os.path.getsize(self.log_path)

    async def await_log(self, pattern, since=0, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[since:]
            m = re.search(pattern, text)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("xmpp-bridge-connect logged no line matching %r within "
                                     "%.0f s; its log:\n%s" % (pattern, timeout,
                                                               self.log_text()[-4000:]))
            await asyncio.sleep(0.02)

    async def await_exit(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("xmpp-bridge-connect still running after %.0f s; log:\n%s"
                                     % (timeout, self.log_text()[-4000:]))
            await asyncio.sleep(0.02)
        return self.proc.returncode

    async def stop(self):
        """SIGTERM: it must close the stream and exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = await self.await_exit()
        assert rc == 0, "xmpp-bridge-connect exited %d after SIGTERM; log:\n%s" % (
            rc, self.log_text()[-4000:])
        self.check()

    def check(self):
        text = self.log_text()
        bad = xmpptest.sanitizer_lines(text)
        assert not bad, "xmpp-bridge-connect: %s" % "\n".join(bad)
        assert self.secret not in text, "the secret is in xmpp-bridge-connect's log"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="xmppd-bridge-") as d:
        yield d


@pytest.fixture
def fixed():
    with xmpptest.fixed_addresses():
        yield


@pytest.fixture
def dns(workdir, fixed):
    server = DnsServer(workdir, DNS_ADDRESS, DNS_PORT)
    yield server
    server.stop()


@pytest.fixture
def bridges():
    started = []
    yield started
    for b in started:
        b.kill()


def start_nodes(make_node, ca, count, sans_of=None, **kwargs):
    """COUNT nodes of NODES, each with a certificate from CA naming the
    domain and its own host (or SANS_OF(host))."""
    nodes = []
    for host, address, _ in NODES[:count]:
        sans = sans_of(host) if sans_of else [DOMAIN, host]
        key, cert = ca.issue(host.split(".")[0], sans)
        nodes.append(make_node(name=host.split(".")[0], address=address, domain=DOMAIN,
                               component="direct", tls_key=key, tls_cert=cert, **kwargs))
    return nodes


def publish(dns, count):
    for host, address, priority in NODES[:count]:
        dns.srv(SRV, host, xmpptest.COMPONENT_PORT, priority=priority, weight=10)
        dns.host(host, address)
    dns.start()


def bridge_args(ca, *extra):
    return ["--name", "cb1", "--domain", DOMAIN, "--dns-server", "%s:%d" % (
        DNS_ADDRESS, DNS_PORT), "--ca", ca.cert, *extra]


async def test_lands_on_the_preferred_node_and_fails_over(fixed, workdir, make_node, dns, bridges):
    ca = CA(workdir)
    nodes = start_nodes(make_node, ca, 3)
    secret = await nodes[0].aadd_callbridge("cb1")
    for node in nodes[1:]:
        await node.aadd_callbridge("cb1", secret)
    publish(dns, 3)

    bridge = Bridge(workdir, secret, *bridge_args(ca))
    bridges.append(bridge)
    await bridge.await_log(r"connected to node1\.example\.test:5223 \(127\.0\.0\.21\) "
                           r"as cb1\.example\.test")
    await nodes[0].await_log(r"call bridge cb1 connected from .* as cb1\.example\.test")
    # the SRV answer was tried in priority order, so node1 came first
    assert "connecting to node2" not in bridge.log_text()

    # the preferred node dies: the bridge is on the next within seconds
    mark = bridge.log_size()
    killed_at = time.monotonic()
    nodes[0].send_signal(signal.SIGQUIT)
    assert await nodes[0].await_exit() == 0
    await bridge.await_log(r"XMPP component connection disconnected due to failure reason: "
                           r"\"(stream closed|connection lost)\"", since=mark)
    await bridge.await_log(r"connected to node2\.example\.test:5223 \(127\.0\.0\.22\) "
                           r"as cb1\.example\.test", since=mark, timeout=FAILOVER_TIMEOUT)
    took = time.monotonic() - killed_at
    assert took < FAILOVER_TIMEOUT, "failover took %.1f s" % took
    await nodes[1].await_log(r"call bridge cb1 connected from .* as cb1\.example\.test")

    # and the new connection carries traffic: a client of node2 pings the
    # bridge through the server, and the bridge answers
    jid, password = await nodes[1].aadd_user("alice")
    alice = await login(nodes[1], jid + "/desk", password)
    result = await alice.ping("cb1.example.test")
    assert result["type"] == "result", result
    await alice.logout()

    await bridge.stop()


async def test_no_srv_records_is_a_dns_error(fixed, workdir, dns, bridges):
    ca = CA(workdir)
    dns.host("node1.example.test", "127.0.0.21")    # an address, but no SRV
    dns.start()
    bridge = Bridge(workdir, "any-secret", *bridge_args(ca, "--once"))
    bridges.append(bridge)
    assert await bridge.await_exit() == 1
    text = bridge.log_text()
    assert "No DNS SRV records for _xmpp-component._tcp.example.test" in text, text
    assert 'XMPP component connection disconnected due to failure reason: "dns error"' \
        in text, text
    assert "connecting to" not in text, text
    bridge.check()


async def test_dns_error_then_records_appear(fixed, workdir, make_node, dns, bridges):
    """Without --once the bridge keeps asking: once the records exist it
    connects, without a restart."""
    ca = CA(workdir)
    node, = start_nodes(make_node, ca, 1)
    secret = await node.aadd_callbridge("cb1")
    dns.start()
    bridge = Bridge(workdir, secret, *bridge_args(ca))
    bridges.append(bridge)
    await bridge.await_log(r"No DNS SRV records for _xmpp-component\._tcp\.example\.test")
    await bridge.await_log(r'failure reason: "dns error"')
    dns.stop()
    publish(dns, 1)
    await bridge.await_log(r"connected to node1\.example\.test:5223 \(127\.0\.0\.21\)")
    await bridge.stop()


async def test_wrong_secret_is_an_authentication_failure(fixed, workdir, make_node, dns, bridges):
    ca = CA(workdir)
    node, = start_nodes(make_node, ca, 1)
    await node.aadd_callbridge("cb1")
    publish(dns, 1)
    wrong = "Wrong0Secret0For0Test0x"
    bridge = Bridge(workdir, wrong, *bridge_args(ca, "--once"))
    bridges.append(bridge)
    assert await bridge.await_exit() == 1
    text = bridge.log_text()
    assert "failed to connect to node1.example.test due to authentication failure" in text, text
    assert 'failure reason: "authentication failure"' in text, text
    bridge.check()
    await node.await_log(r"authentication failure for call bridge cb1 from 127\.0\.0\.\d+")
    assert wrong not in node.log_text()


async def test_certificate_naming_neither_domain_nor_target_is_refused(
        fixed, workdir, make_node, dns, bridges):
    ca = CA(workdir)
    # a too-broad wildcard and a partial one must not pass for the names
    node, = start_nodes(make_node, ca, 1, sans_of=lambda host: [
        "elsewhere.test", "*.test", "node*.example.test"])
    secret = await node.aadd_callbridge("cb1")
    publish(dns, 1)
    bridge = Bridge(workdir, secret, *bridge_args(ca, "--once"))
    bridges.append(bridge)
    assert await bridge.await_exit() == 1
    text = bridge.log_text()
    assert re.search(r"certificate of node1\.example\.test not accepted: "
                     r".*elsewhere\.test", text), text
    assert "failed to connect to node1.example.test due to certificate error" in text, text
    assert 'failure reason: "certificate error"' in text, text
    # refused during TLS: the handshake (and so the secret) never went out
    assert not re.search(r"call bridge cb1 connected", node.log_text())
    bridge.check()


async def test_certificate_from_another_ca_is_refused(fixed, workdir, make_node, dns, bridges):
    ca = CA(workdir)
    other_dir = os.path.join(workdir, "other")
    os.mkdir(other_dir)
    other = CA(other_dir, name="some other CA")
    node, = start_nodes(make_node, other, 1)
    secret = await node.aadd_callbridge("cb1")
    publish(dns, 1)
    bridge = Bridge(workdir, secret, *bridge_args(ca, "--once"))
    bridges.append(bridge)
    assert await bridge.await_exit() == 1
    text = bridge.log_text()
    assert "certificate of node1.example.test not accepted" in text, text
    assert "failed to connect to node1.example.test due to certificate error" in text, text
    bridge.check()


async def test_wildcard_certificate_names_the_target(fixed, workdir, make_node, dns, bridges):
    """A certificate for *.example.test does not name the domain itself, but
    it names the SRV target node1.example.test (RFC 6125 wildcard)."""
    ca = CA(workdir)
    node, = start_nodes(make_node, ca, 1, sans_of=lambda host: ["*.example.test"])
    secret = await node.aadd_callbridge("cb1")
    publish(dns, 1)
    bridge = Bridge(workdir, secret, *bridge_args(ca, "--once"))
    bridges.append(bridge)
    assert await bridge.await_exit() == 0, bridge.log_text()
    assert "connected to node1.example.test:5223 (127.0.0.21) as cb1.example.test" in \
        bridge.log_text()
    bridge.check()


async def test_server_option_and_login_handoff(fixed, workdir, make_node, bridges):
    """--server skips DNS; the program answers the login hand-off from its
    --users file: one login accepted, one refused, no password logged."""
    ca = CA(workdir)
    host, address, _ = NODES[0]
    key, cert = ca.issue("node1", [DOMAIN, host])
    node = make_node(name="node1", address=address, domain=DOMAIN, component="direct",
                     tls_key=key, tls_cert=cert, auth="callbridge")
    secret = await node.aadd_callbridge("cb1")
    bridge = Bridge(workdir, secret, "--name", "cb1", "--domain", DOMAIN,
                    "--server", "%s:%d" % (address, xmpptest.COMPONENT_PORT), "--ca", ca.cert,
                    users={"alice": "right horse battery"})
    bridges.append(bridge)
    await bridge.await_log(r"connected to 127\.0\.0\.21:5223 \(127\.0\.0\.21\) "
                           r"as cb1\.example\.test")
    await node.await_log(r"call bridge cb1 connected from")

    alice = await login(node, "alice@example.test/desk", "right horse battery", mech="PLAIN")
    await bridge.await_log(r'login hand-off for "alice" from 127\.0\.0\.\d+:\d+: accepted')
    await alice.logout()
    try:
        await login(node, "alice@example.test/desk", "wrong staple", mech="PLAIN")
        raise AssertionError("a password the bridge refuses logged in")
    except LoginFailed as e:
        assert e.condition == "not-authorized", e
    await bridge.await_log(r'login hand-off for "alice" from .*: refused')

    await bridge.stop()
    text = bridge.log_text()
    assert "right horse" not in text and "wrong staple" not in text


def stamps(text, pattern):
    """Seconds (of the day) of the bridge's log lines matching PATTERN."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d\.\d+)Z ", line)
        if m and re.search(pattern, line):
            out.append(int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)))
    return out


async def test_refused_connection_backs_off_then_recovers(fixed, workdir, make_node, dns,
                                                          bridges):
    """Nothing listens yet: "connection refused", and the pauses between
    attempts double (0.5, 1, 2 s); once the node is up the bridge connects
    on its own."""
    ca = CA(workdir)
    publish(dns, 1)
    bridge = Bridge(workdir, SECRET, *bridge_args(ca))
    bridges.append(bridge)
    await bridge.await_log(r"failed to connect to node1\.example\.test due to connection refused")
    await bridge.await_log(r'failure reason: "connection refused"')
    await bridge.await_log(r"(?s)(connecting to node1.*){4}", timeout=TIMEOUT + 4)
    tries = stamps(bridge.log_text(), r"connecting to node1")
    gaps = [b - a for a, b in zip(tries, tries[1:])][:3]
    for gap, want in zip(gaps, (0.5, 1.0, 2.0)):
        assert want * 0.9 < gap < want + 1.0, "pauses %r, want 0.5, 1, 2 s" % gaps

    node, = start_nodes(make_node, ca, 1)
    await node.aadd_callbridge("cb1", SECRET)
    # the pause is 4 s by now, then 8 s
    await bridge.await_log(r"connected to node1\.example\.test:5223", timeout=TIMEOUT + 12)
    await bridge.stop()
