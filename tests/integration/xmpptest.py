"""Harness for the xmppd integration tests.

A test gets real xmppd processes and real clients:

  Node          one xmppd on its own 127.0.0.X:5222, a fresh directory for data,
                log, stderr and config; start / stop / signals, log tailing,
                xmppctl, and at teardown the checks every test shares (sanitizer
                reports, unexpected crashes, a clean exit on SIGTERM, no worker
                outliving the supervisor).
  XmppClient    a slixmpp session wrapped so a test reads as "log in, send,
                expect": every wait has a deadline and fails with a sentence.
  RawStream     a hand-driven stream (asyncio + XMLPullParser) for what a
                well-behaved library never sends: malformed XML, PLAIN before
                TLS, wrong passwords, oversized stanzas.

Everything waits on events with a deadline (a log line appearing, a stanza
arriving, a process exiting); the only fixed waits are the few places where
a test must show that something does NOT happen, and those are named.
"""

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.path.join(REPO_ROOT, os.environ.get("XMPPD_BUILD", "build"))
XMPPD = os.path.join(BUILD_DIR, "xmppd")
XMPPCTL = os.path.join(BUILD_DIR, "xmppctl")
STROPHE_CLIENT = os.path.join(BUILD_DIR, "tests", "strophe_client")
SANITIZED = "san" in os.path.basename(os.path.normpath(BUILD_DIR))

DOMAIN = "localhost"
PORT = 5222
COMPONENT_PORT = 5223
# 127.0.0.20-29 are for tests that need fixed addresses (DNS records naming
# nodes): allocate_address() never hands them out, and fixed_addresses()
# keeps two concurrent runs from using them at once.
FIXED_RANGE = range(20, 30)

# One deadline for "this should happen now": generous, because a stanza that
# arrives does so in milliseconds and only a broken server waits this long.
# The sanitizer build runs a few times slower.
TIMEOUT = float(os.environ.get("XMPPD_TEST_TIMEOUT", "10")) * (2 if SANITIZED else 1)
START_TIMEOUT = 30.0 if SANITIZED else 20.0
STOP_TIMEOUT = 20.0
# How long a test watches for something that must NOT happen (a stream
# header while the listener is disabled, a stray stanza).
ABSENCE_WAIT = 1.5

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_PING = "urn:xmpp:ping"

# Text that fails a test wherever it shows up in xmppd's log or stderr (or
# in xmppctl's output).
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "runtime error:",
    "UndefinedBehaviorSanitizer",
    "LeakSanitizer",
)
ASSERTION_RE = re.compile(r"Assertion .* failed")
# A process of xmppd's that died: any respawn, an abnormal exit while
# stopping, a worker that could not start.
CRASH_RE = re.compile(r"killed by signal|; respawning|while stopping|could not start")


def qname(ns, name):
    return "{%s}%s" % (ns, name)


def sanitizer_lines(text):
    """The lines of TEXT that carry a sanitizer report or a failed assert()."""
    return [line for line in text.splitlines()
            if any(p in line for p in SANITIZER_PATTERNS) or ASSERTION_RE.search(line)]


def tail(path, lines=80):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except FileNotFoundError:
        return "(%s does not exist)\n" % path


def sanitizer_env():
    """Our environment plus sanitizer options that make reports useful,
    unless the caller chose their own."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


# ---------------------------------------------------------------------------
# Addresses

_address_counter = itertools.count()


def _address_free(address, port=PORT):
    """True when nothing is bound to ADDRESS:PORT. Without SO_REUSEPORT on
    our probe, bind fails even against a server's reuseport sockets, which
    is what keeps two test runs from sharing an address."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def allocate_address():
    """A loopback address 127.0.0.10-250 of our own. The pid spreads parallel
    runs (release and sanitizer variants) apart; the probe settles the rest."""
    for _ in range(241):
        x = 10 + (os.getpid() * 37 + next(_address_counter)) % 241
        if x in FIXED_RANGE:
            continue
        address = "127.0.0.%d" % x
        if _address_free(address):
            return address
    raise RuntimeError("no free loopback address in 127.0.0.10-250")


@contextlib.contextmanager
def fixed_addresses():
    """Hold the right to use 127.0.0.20-29 (a lock file shared by every
    run on this machine) for the duration of the block."""
    with open("/tmp/xmppd-it-fixed-addresses.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# Certificates


def make_cert(directory, name, cn="localhost"):
    """An EC P-256 key and a self-signed certificate with SAN DNS:localhost,
    made by the openssl CLI. Returns (key_path, cert_path, sha256 fingerprint
    as "AB:CD:...")."""
    key = os.path.join(directory, name + ".key.pem")
    cert = os.path.join(directory, name + ".cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=30)
    return key, cert, cert_file_fingerprint(cert)


def fingerprint(der):
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def cert_file_fingerprint(path):
    with open(path) as f:
        return fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))


def client_tls_context(minimum=None, maximum=None):
    """Accepts any certificate: the tests compare fingerprints instead."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TLS 1.1, on purpose
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    return ctx


# ---------------------------------------------------------------------------
# xmppctl output


class Status:
    """`xmppctl status`, parsed. fields: key -> value (the last one for
    repeated keys); workers: index -> dict(pid, state, connections);
    listeners: the values of the "listener" lines."""

    WORKER_RE = re.compile(r"worker (\d+)$")

    def __init__(self, text):
        self.text = text
        self.fields = {}
        self.workers = {}
        self.listeners = []
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                continue
            key, value = key.strip(), value.strip()
            m = self.WORKER_RE.match(key)
            if m:
                words = value.split()
                info = dict(zip(words[0::2], words[1::2]))
                for k in ("pid", "connections"):
                    if k in info:
                        info[k] = int(info[k])
                self.workers[int(m.group(1))] = info
            elif key == "listener":
                self.listeners.append(value)
            else:
                self.fields[key] = value

    def __getitem__(self, key):
        assert key in self.fields, "xmppctl status has no %r line:\n%s" % (key, self.text)
        return self.fields[key]

    def worker_pid(self, index):
        assert index in self.workers, "xmppctl status lists no worker %d:\n%s" % (index, self.text)
        return self.workers[index]["pid"]


class Session:
    def __init__(self, jid, worker, address, tls):
        self.jid = jid
        self.worker = worker
        self.address = address
        self.tls = tls

    def __repr__(self):
        return "Session(%s on worker %d from %s tls=%s)" % (self.jid, self.worker, self.address,
                                                             self.tls)


def parse_sessions(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and lines[0].split() == ["JID", "WORKER", "ADDRESS", "TLS"], \
        "xmppctl sessions: unexpected header:\n" + text
    sessions = []
    for line in lines[1:]:
        words = line.split()
        assert len(words) == 4, "xmppctl sessions: unexpected line %r" % line
        assert words[3] in ("yes", "no"), "xmppctl sessions: TLS column %r" % line
        sessions.append(Session(words[0], int(words[1]), words[2], words[3] == "yes"))
    return sessions


# ---------------------------------------------------------------------------
# Node


class StartError(AssertionError):
    pass


class Node:
    """One xmppd: its directory, config, process and checks.

    Create through the conftest fixtures (they stop it and run the checks at
    teardown); change settings with the constructor's keywords or by editing
    .config before start()."""

    def __init__(self, *, workers=2, tls="required", tls_key=None, tls_cert=None,
                 tls_bundle=None, limits=None, log_level=None, drain_timeout_ms=3000,
                 name="node1", address=None, domain=DOMAIN, component=None, auth=None,
                 callbridges=None):
        """COMPONENT: None, or the tls mode ("direct" or "none") of a component
        listener on the node's address, port 5223. AUTH: "internal" or
        "callbridge". CALLBRIDGES: the YAML callbridges section (dict)."""
        self.address = address or allocate_address()
        self.port = PORT
        self.component_port = COMPONENT_PORT
        self.domain = domain
        self.dir = tempfile.mkdtemp(prefix="xmppd-it-")
        self.config_path = os.path.join(self.dir, "xmppd.yaml")
        self.log_path = os.path.join(self.dir, "xmppd.log")
        self.stderr_path = os.path.join(self.dir, "xmppd.stderr")
        self.proc = None
        self.returncode = None
        self.expected_crashes = []   # regexes a "killed by signal" line may match
        self.config = {
            "node": {"name": name, "data_dir": self.dir},
            "domain": self.domain,
            "workers": {"count": workers},
            "listeners": [{"type": "c2s", "address": self.address, "port": self.port,
                           "tls": tls}],
            "logging": {"level": log_level or os.environ.get("XMPPD_TEST_LOG_LEVEL", "info"),
                        "file": self.log_path},
            "shutdown": {"drain_timeout_ms": drain_timeout_ms},
        }
        if component:
            self.config["listeners"].append({"type": "component", "address": self.address,
                                             "port": self.component_port, "tls": component})
        if tls_key or tls_cert:
            self.config["tls"] = {"key": tls_key, "certificate": tls_cert}
            if tls_bundle:
                self.config["tls"]["bundle"] = tls_bundle
        if auth:
            self.config["auth"] = auth
        if callbridges:
            self.config["callbridges"] = dict(callbridges)
        if limits:
            self.config["limits"] = dict(limits)
        self.write_config()

    def __repr__(self):
        return "Node(%s:%d, %s)" % (self.address, self.port, self.dir)

    def write_config(self):
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config, f, sort_keys=False)

    # -- process ----------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=START_TIMEOUT):
        """Start xmppd and wait for its "xmppd ready" log line."""
        assert os.access(XMPPD, os.X_OK), "%s is not built (ninja %s)" % (
            XMPPD, os.path.relpath(XMPPD, REPO_ROOT))
        self.write_config()
        mark = self.log_size()
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [XMPPD, "-c", self.config_path], cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=err, stderr=subprocess.STDOUT, env=sanitizer_env(),
                start_new_session=True)
        self.returncode = None
        deadline = time.monotonic() + timeout
        while True:
            if "xmppd ready" in self.log_text(mark):
                return self
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise StartError("xmppd exited with %d before it was ready\n%s" % (
                    rc, self.diagnostics()))
            if time.monotonic() > deadline:
                raise StartError("xmppd not ready after %.0f s\n%s" % (timeout,
                                                                      self.diagnostics()))
            time.sleep(0.02)

    def send_signal(self, sig):
        assert self.running(), "xmppd is not running"
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """The exit status, or None if xmppd still runs after TIMEOUT."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    async def await_exit(self, timeout=STOP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        self.returncode = self.proc.returncode
        return self.returncode

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; returns a list of problems (empty when xmppd exited 0 in
        time). Kills by pid what does not stop. Safe to call twice."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                problems.append("xmppd (pid %d) still running %.0f s after SIGTERM; killed"
                                % (self.proc.pid, timeout))
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.returncode = self.proc.returncode
        if self.returncode != 0 and not problems:
            problems.append("xmppd exited with status %d (want 0)" % self.returncode)
        problems.extend(self._reap_orphans())
        return problems

    def _reap_orphans(self):
        """Workers must exit with their supervisor: kill (by pid) and report
        any process of ours that outlived it."""
        problems = []
        deadline = time.monotonic() + 5
        for pid in self.worker_pids_from_log():
            while self._is_ours(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._is_ours(pid):
                problems.append("process %d outlived the supervisor; killed" % pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return problems

    def _is_ours(self, pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmdline = f.read()
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return state != "Z" and self.config_path.encode() in cmdline

    def worker_pids_from_log(self):
        """Every child the log says started (workers, election worker)."""
        return [int(p) for p in re.findall(r"started \(pid (\d+)\)", self.log_text())]

    # -- logs ------------------------------------------------------------

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def log_text(self, since=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_search(self, pattern, since):
        return re.compile(pattern).search(self.log_text(since))

    def wait_log(self, pattern, since=0, timeout=TIMEOUT):
        """The first match of regex PATTERN in the log after byte offset
        SINCE (see log_size()), waiting up to TIMEOUT for it."""
        deadline = time.monotonic() + timeout
        while True:
            m = self._log_search(pattern, since)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("no log line matching %r within %.0f s\n%s" % (
                    pattern, timeout, self.diagnostics()))
            time.sleep(0.02)

    async def await_log(self, pattern, since=0, timeout=TIMEOUT):
        """wait_log() for async tests: the event loop keeps running."""
        deadline = time.monotonic() + timeout
        while True:
            m = self._log_search(pattern, since)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("no log line matching %r within %.0f s\n%s" % (
                    pattern, timeout, self.diagnostics()))
            await asyncio.sleep(0.02)

    def expect_crash(self, worker, pid, sig):
        """Declare that the test itself kills worker WORKER (PID) with SIG."""
        self.expected_crashes.append(re.compile(
            r"worker %d \(pid %d\) killed by signal %d\b" % (worker, pid, sig)))

    def problems(self):
        """Sanitizer reports, failed assertions and unexpected crashes in the
        log and stderr."""
        found = []
        for origin, text in (("log", self.log_text()), ("stderr", self.stderr_text())):
            for line in sanitizer_lines(text):
                found.append("%s: %s" % (origin, line))
            for line in text.splitlines():
                if CRASH_RE.search(line) and not any(r.search(line)
                                                     for r in self.expected_crashes):
                    found.append("%s: unexpected process death: %s" % (origin, line))
        return found

    def diagnostics(self, lines=80):
        return "--- %s: last lines of %s ---\n%s--- last lines of %s ---\n%s" % (
            self, self.log_path, tail(self.log_path, lines), self.stderr_path,
            tail(self.stderr_path, lines))

    # -- xmppctl -----------------------------------------------------------

    def ctl(self, *args, input=None, expect=0, timeout=30):
        """Run `xmppctl -c CONFIG ARGS...`; assert its exit status is EXPECT
        (None: any). Returns the CompletedProcess (text)."""
        assert os.access(XMPPCTL, os.X_OK), "%s is not built" % XMPPCTL
        proc = subprocess.run([XMPPCTL, "-c", self.config_path, *args], input=input,
                              capture_output=True, text=True, timeout=timeout,
                              cwd=self.dir, env=sanitizer_env(),
                              stdin=None if input is not None else subprocess.DEVNULL)
        reports = sanitizer_lines(proc.stdout + proc.stderr)
        assert not reports, "xmppctl %s: sanitizer report:\n%s" % (" ".join(args),
                                                                 proc.stderr)
        if expect is not None:
            assert proc.returncode == expect, (
                "xmppctl %s exited %d (want %d)\nstdout:\n%s\nstderr:\n%s" % (
                    " ".join(args), proc.returncode, expect, proc.stdout, proc.stderr))
        return proc

    async def actl(self, *args, **kwargs):
        """ctl() in a thread, so clients in the event loop stay served."""
        return await asyncio.to_thread(self.ctl, *args, **kwargs)

    def status(self):
        return Status(self.ctl("status").stdout)

    async def astatus(self):
        return Status((await self.actl("status")).stdout)

    def sessions(self):
        return parse_sessions(self.ctl("sessions").stdout)

    async def asessions(self):
        return parse_sessions((await self.actl("sessions")).stdout)

    def add_user(self, local, password=None):
        """Create LOCAL@DOMAIN with PASSWORD (a random one by default).
        Returns (bare JID, password)."""
        if password is None:
            password = "pw-" + secrets.token_hex(6)
        jid = "%s@%s" % (local, self.domain)
        self.ctl("user", "add", jid, input=password + "\n")
        return jid, password

    async def aadd_user(self, local, password=None):
        return await asyncio.to_thread(self.add_user, local, password)

    def add_callbridge(self, name, secret=None):
        """Store call bridge NAME's secret (generated by `callbridge add`
        unless SECRET is given, then `callbridge add-secret`). Returns it."""
        if secret is None:
            out = self.ctl("callbridge", "add", name).stdout
            found = re.findall(r"\b[A-Za-z0-9]{19,}\b", out)
            assert found, "callbridge add printed no secret: %r" % out
            return found[-1]
        self.ctl("callbridge", "add-secret", name, input=secret + "\n")
        return secret

    async def aadd_callbridge(self, name, secret=None):
        return await asyncio.to_thread(self.add_callbridge, name, secret)

    async def worker_of(self, full_jid):
        """The worker index `xmppctl sessions` shows for FULL_JID."""
        sessions = await self.asessions()
        for s in sessions:
            if s.jid == full_jid:
                return s.worker
        raise AssertionError("xmppctl sessions does not list %s: %r" % (full_jid, sessions))

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Waiting


async def within(awaitable, what, timeout=TIMEOUT):
    """Await AWAITABLE; on timeout fail with "WHAT did not happen within N s"."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise AssertionError("%s did not happen within %.0f s" % (what, timeout)) from None


async def eventually(predicate, what, timeout=TIMEOUT, interval=0.05):
    """Poll async PREDICATE (returns a true value when done) until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s did not happen within %.0f s" % (what, timeout))
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------
# slixmpp clients


def _import_slixmpp():
    import logging
    import slixmpp
    # slixmpp logs every failed connection attempt at ERROR; the tests
    # report failures themselves.
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
    return slixmpp


class LoginFailed(AssertionError):
    def __init__(self, jid, reason, condition=None):
        super().__init__("%s could not log in: %s" % (jid, reason))
        self.condition = condition


class XmppClient:
    """One slixmpp session on a Node.

    MECH forces the SASL mechanism (slixmpp's sasl_mech). Every stanza
    received lands in .messages / .presences (asyncio queues) in arrival
    order; .disconnected is set when the connection ends. Create and use it
    inside the test's event loop."""

    def __init__(self, node, jid, password, *, mech="SCRAM-SHA-256", tls=True,
                 plugins=("xep_0030", "xep_0199")):
        slixmpp = _import_slixmpp()
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import StanzaPath

        self.node = node
        self.requested_jid = jid
        self.tls = tls
        self.xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech=mech)
        for plugin in plugins:
            self.xmpp.register_plugin(plugin)
        ctx = self.xmpp.ssl_context
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self._no_channel_binding()

        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.mechanism = None      # the SASL mechanism that succeeded
        self.stream_errors = []
        self._session = asyncio.get_running_loop().create_future()

        x = self.xmpp
        x.register_handler(Callback("test messages", StanzaPath("message"),
                                    self.messages.put_nowait))
        x.register_handler(Callback("test presence", StanzaPath("presence"),
                                    self.presences.put_nowait))
        x.add_event_handler("auth_success", self._on_auth_success)
        x.add_event_handler("session_start", self._on_session_start)
        x.add_event_handler("failed_auth", self._on_failed_auth)
        x.add_event_handler("failed_all_auth",
                            lambda _: self._fail("no SASL mechanism succeeded"))
        x.add_event_handler("no_auth", lambda _: self._fail(
            "the server offers none of the mechanisms asked for (%s)" % mech))
        x.add_event_handler("connection_failed", self._on_connection_failed)
        x.add_event_handler("stream_error", self._on_stream_error)
        x.add_event_handler("disconnected", self._on_disconnected)

    def _no_channel_binding(self):
        """slixmpp offers tls-unique channel binding ("y" or "p=tls-unique")
        when its socket is TLS; xmppd binds tls-exporter, and a server that
        advertises -PLUS must refuse "y" (RFC 5802 section 6, downgrade
        protection). Claim no channel-binding support ("n") instead."""
        mechs = self.xmpp["feature_mechanisms"]
        default = mechs.sasl_callback

        def credentials(required, optional):
            result = default(required, optional)
            result.pop("channel_binding", None)
            return result
        mechs.sasl_callback = credentials

    # -- events

    def _fail(self, reason, condition=None):
        if not self._session.done():
            self._session.set_exception(LoginFailed(self.requested_jid, reason, condition))

    def _on_auth_success(self, _):
        self.mechanism = self.xmpp["feature_mechanisms"].mech.name

    def _on_session_start(self, _):
        if not self._session.done():
            self._session.set_result(True)

    def _on_failed_auth(self, failure):
        self._fail("SASL failure <%s/>" % failure["condition"], failure["condition"])

    def _on_connection_failed(self, error):
        self.xmpp.cancel_connection_attempt()   # slixmpp would retry forever
        self._fail("connection failed: %s" % (error,))

    def _on_stream_error(self, error):
        self.stream_errors.append(error["condition"])

    def _on_disconnected(self, _):
        self._forget()
        self.disconnected.set()
        self._fail("disconnected (stream errors: %r)" % (self.stream_errors,))

    # -- session

    async def login(self, *, presence=True, priority=None, timeout=TIMEOUT):
        """Connect, authenticate, bind; then send initial presence unless
        PRESENCE is false. Raises LoginFailed (an AssertionError)."""
        if self._session.done():
            self._session = asyncio.get_running_loop().create_future()
        self.disconnected.clear()
        self.xmpp.connect((self.node.address, self.node.port),
                          force_starttls=self.tls, disable_starttls=not self.tls)
        try:
            await asyncio.wait_for(asyncio.shield(self._session), timeout)
        except asyncio.TimeoutError:
            self.abort()
            raise LoginFailed(self.requested_jid, "no session within %.0f s" % timeout) from None
        except LoginFailed:
            self.abort()
            raise
        if presence:
            self.send_presence(priority)
        return self

    @property
    def jid(self):
        """The full JID the server bound."""
        return str(self.xmpp.boundjid)

    @property
    def bare(self):
        return self.xmpp.boundjid.bare

    def local_address(self):
        """"ip:port" of our end of the TCP connection."""
        transport = self.xmpp.transport
        assert transport is not None, "%s is not connected" % self.requested_jid
        ip, port = transport.get_extra_info("sockname")[:2]
        return "%s:%d" % (ip, port)

    def send_presence(self, priority=None, ptype=None):
        kwargs = {}
        if priority is not None:
            kwargs["ppriority"] = priority
        if ptype is not None:
            kwargs["ptype"] = ptype
        self.xmpp.send_presence(**kwargs)

    def send_message(self, to, body, mtype="chat", mid=None):
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype=mtype)
        msg["id"] = mid or secrets.token_hex(6)
        msg.send()
        return msg["id"]

    async def next_message(self, timeout=TIMEOUT, what=None):
        return await within(self.messages.get(),
                            what or "a message for %s" % self.requested_jid, timeout)

    async def next_presence(self, timeout=TIMEOUT, what=None):
        return await within(self.presences.get(),
                            what or "a presence for %s" % self.requested_jid, timeout)

    async def presence_from(self, jid, ptype="available", timeout=TIMEOUT):
        """Skip presences until one from JID of type PTYPE ("available" is
        slixmpp's name for no type) arrives."""
        async def wait():
            while True:
                p = await self.presences.get()
                if str(p["from"]) == jid and p["type"] == ptype:
                    return p
        return await within(wait(), "%s presence from %s to %s" % (ptype, jid, self.jid),
                            timeout)

    async def ping(self, to=None, timeout=TIMEOUT):
        """XEP-0199 ping; returns the result iq (raises IqError/IqTimeout)."""
        return await self.xmpp["xep_0199"].send_ping(to or self.node.domain, timeout=timeout)

    async def logout(self, timeout=TIMEOUT):
        """Close the stream politely and wait for the connection to end."""
        if self.xmpp.transport is not None:
            self.xmpp.disconnect(wait=timeout)
            await within(self.disconnected.wait(), "%s disconnecting" % self.requested_jid,
                         timeout + 1)
        self._forget()

    def _forget(self):
        """Cancel slixmpp's send task of a finished connection, which would
        otherwise be garbage-collected while pending (a noisy warning)."""
        task = getattr(self.xmpp, "_run_out_filters", None)
        if task is not None and not task.done():
            task.cancel()

    def abort(self):
        """Drop the TCP connection without closing the stream. (Not
        slixmpp's abort(): it closes, then aborts a TLS transport that
        close() already detached, and raises.)"""
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            self.xmpp.transport.abort()


async def login(node, jid, password, **kwargs):
    """XmppClient(...).login(...): one line in a test."""
    login_kwargs = {k: kwargs.pop(k) for k in ("presence", "priority", "timeout")
                    if k in kwargs}
    return await XmppClient(node, jid, password, **kwargs).login(**login_kwargs)


async def login_on_worker(node, bare, password, *, want=None, avoid=None, tries=30,
                          resource="w", **kwargs):
    """Log BARE in with fresh resources until `xmppctl sessions` shows the
    session on worker WANT (or on any worker but AVOID). Connections land on
    workers by the kernel's SO_REUSEPORT hash of the source port, so a few
    tries suffice. Returns the client; .worker holds its worker index."""
    assert want is not None or avoid is not None
    for i in range(tries):
        client = await login(node, "%s/%s%d" % (bare, resource, i), password, **kwargs)
        worker = await node.worker_of(client.jid)
        if (want is None or worker == want) and (avoid is None or worker != avoid):
            client.worker = worker
            return client
        await client.logout()
    raise AssertionError("%d logins of %s never landed on worker %s (avoiding %s)" % (
        tries, bare, want, avoid))


def message_seq(msg, tag):
    """The sequence number in a body "TAG N", or fail."""
    body = msg["body"]
    m = re.fullmatch(re.escape(tag) + r" (\d+)", body)
    assert m, "unexpected message body %r (type %s, from %s)" % (body, msg["type"], msg["from"])
    return int(m.group(1))


def error_condition(stanza):
    """The defined condition of a slixmpp error stanza ("" if none)."""
    return stanza["error"]["condition"] if stanza["type"] == "error" else ""


class Conversation:
    """Two clients trading messages in the background, one round trip at a
    time, so a test can show that traffic keeps flowing while it does
    something else (kills a worker, sends garbage, reloads certificates).

        async with Conversation(a, b) as talk:
            ...
            await talk.advance(5)    # five more round trips, or fail
    """

    def __init__(self, a, b, tag=None, timeout=TIMEOUT):
        self.a, self.b = a, b
        self.tag = tag or "talk-" + secrets.token_hex(4)
        self.timeout = timeout
        self.rounds = 0
        self.error = None
        self._progress = asyncio.Event()
        self._task = None

    async def _run(self):
        try:
            for i in itertools.count():
                if self._stop:
                    return
                for src, dst in ((self.a, self.b), (self.b, self.a)):
                    src.send_message(dst.jid, "%s %d" % (self.tag, i))
                    msg = await dst.next_message(
                        self.timeout, "round %d of %s -> %s" % (i, src.jid, dst.jid))
                    assert str(msg["from"]) == src.jid, "message from %s, want %s" % (
                        msg["from"], src.jid)
                    assert message_seq(msg, self.tag) == i
                self.rounds += 1
                self._progress.set()
        except asyncio.CancelledError:
            raise
        except BaseException as e:   # reported by advance() and __aexit__
            self.error = e
            self._progress.set()

    async def __aenter__(self):
        self._stop = False
        self._task = asyncio.ensure_future(self._run())
        await self.advance(1)
        return self

    async def advance(self, n=1):
        """Wait until N more round trips completed."""
        target = self.rounds + n
        deadline = time.monotonic() + self.timeout * (n + 1)
        while self.rounds < target:
            if self.error:
                raise AssertionError("conversation %s <-> %s stopped after %d rounds: %s" % (
                    self.a.jid, self.b.jid, self.rounds, self.error)) from self.error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("conversation %s <-> %s: %d rounds, want %d" % (
                    self.a.jid, self.b.jid, self.rounds, target))
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is None:
            await self.advance(1)
        # Stop at a round boundary, so no message of ours is left in flight
        # for later assertions on these clients to trip over.
        self._stop = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 2 * self.timeout + 1)
        except (asyncio.TimeoutError, Exception):
            self._task.cancel()
        if exc_type is None and self.error:
            raise AssertionError("conversation %s <-> %s failed after %d rounds: %s" % (
                self.a.jid, self.b.jid, self.rounds, self.error)) from self.error
        return False


# ---------------------------------------------------------------------------
# Raw streams

END = "</stream:stream>"   # recv() result: the server closed the stream
EOF = "EOF"                # recv() result: the TCP connection ended


class ScramClient:
    """The client side of SCRAM (RFC 5802) without channel binding: GS2
    header "n,," (or "y,,": "I could bind, but you don't seem to")."""

    HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}

    def __init__(self, mechanism, username, password, gs2_header=b"n,,"):
        self.hash = self.HASHES[mechanism]
        self.username = username.replace("=", "=3D").replace(",", "=2C")
        self.password = password.encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.gs2_header = gs2_header
        self.client_first_bare = ("n=%s,r=%s" % (self.username, self.nonce)).encode()
        self.server_signature = None

    def _hmac(self, key, msg):
        return hmac.new(key, msg, self.hash).digest()

    def first(self):
        return self.gs2_header + self.client_first_bare

    def final(self, server_first):
        attrs = dict(item.split(b"=", 1) for item in server_first.split(b","))
        nonce = attrs[b"r"]
        assert nonce.startswith(self.nonce.encode()) and len(nonce) > len(self.nonce), \
            "server nonce %r does not extend ours" % nonce
        salt = base64.b64decode(attrs[b"s"])
        iterations = int(attrs[b"i"])
        assert iterations >= 4096, "SCRAM iteration count %d below RFC 7677's 4096" % iterations
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, salt, iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = b"c=" + base64.b64encode(self.gs2_header) + b",r=" + nonce
        auth_message = self.client_first_bare + b"," + server_first + b"," + without_proof
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(x ^ y for x, y in zip(client_key, signature))
        self.server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return without_proof + b",p=" + base64.b64encode(proof)

    def verify(self, server_final):
        attrs = dict(item.split(b"=", 1) for item in server_final.split(b","))
        assert b"e" not in attrs, "SCRAM server-final error %r" % attrs[b"e"]
        assert base64.b64decode(attrs[b"v"]) == self.server_signature, \
            "SCRAM server signature does not verify"


def sasl_b64(el):
    """The payload of a SASL element ("=" means empty)."""
    text = (el.text or "").strip()
    return b"" if text in ("", "=") else base64.b64decode(text)


def child(el, ns, name):
    return el.find(qname(ns, name))


def condition_of(el, ns):
    """Local name of EL's first child in namespace NS (a defined condition)."""
    for c in el:
        if c.tag.startswith("{%s}" % ns) and c.tag != qname(ns, "text"):
            return c.tag.split("}", 1)[1]
    return None


def stream_error_condition(el):
    assert el.tag == qname(NS_STREAM, "error"), "not a stream error: %s" % ET.tostring(el)
    return condition_of(el, NS_STREAM_ERRORS)


def stanza_error_condition(el):
    err = child(el, NS_CLIENT, "error")
    assert err is not None, "no <error/> in %s" % ET.tostring(el)
    return condition_of(err, NS_STANZA_ERRORS)


class ComponentClient:
    """A call bridge as slixmpp's ComponentXMPP (XEP-0114) on NODE's component
    listener: TLS from the first byte unless TLS=False. Messages and iqs it
    receives land in .messages / .iqs; HANDOFF, when given, answers the login
    hand-off (docs/callbridge.md): a dict username -> password it accepts;
    None never answers, "vanish" drops the connection on the request (a
    bridge that crashes while deciding)."""

    NS_HANDOFF = "urn:xmppd:callbridge-auth:1"

    def __init__(self, node, name, secret, *, address=None, tls=True, handoff=None):
        slixmpp = _import_slixmpp()
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import StanzaPath, MatchXPath

        self.node = node
        self.name = name
        self.address = address or "%s.%s" % (name, node.domain)
        self.tls = tls
        self.handoff = handoff
        self.handoff_requests = []     # (username, address) asked about
        self.xmpp = slixmpp.ComponentXMPP(self.address, secret, node.address,
                                          node.component_port)
        ctx = self.xmpp.ssl_context
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.messages = asyncio.Queue()
        self.stream_errors = []
        self.disconnected = asyncio.Event()
        self._ready = asyncio.get_running_loop().create_future()
        x = self.xmpp
        x.register_handler(Callback("test messages", StanzaPath("message"),
                                    self.messages.put_nowait))
        x.register_handler(Callback("handoff", MatchXPath(
            "{%s}iq/{%s}authenticate" % (x.default_ns, self.NS_HANDOFF)), self._on_handoff))
        x.add_event_handler("session_start", self._on_session_start)
        x.add_event_handler("stream_error", self._on_stream_error)
        x.add_event_handler("disconnected", self._on_disconnected)
        x.add_event_handler("connection_failed", self._on_disconnected)

    def _on_session_start(self, _):
        if not self._ready.done():
            self._ready.set_result(True)

    def _on_stream_error(self, error):
        self.stream_errors.append(error["condition"])

    def _on_disconnected(self, _):
        self.disconnected.set()
        if not self._ready.done():
            self._ready.set_exception(AssertionError(
                "component %s was not accepted: stream errors %r" % (self.address,
                                                                    self.stream_errors)))

    def _on_handoff(self, iq):
        auth = iq.xml.find("{%s}authenticate" % self.NS_HANDOFF)
        user = auth.findtext("{%s}username" % self.NS_HANDOFF)
        password = auth.findtext("{%s}password" % self.NS_HANDOFF)
        self.handoff_requests.append((user, auth.findtext("{%s}address" % self.NS_HANDOFF)))
        if self.handoff is None:
            return   # never answers: the server's timeout decides
        if self.handoff == "vanish":
            self.xmpp.abort()   # the TCP connection ends, no stream close
            return
        if self.handoff.get(user) == password:
            iq.reply().send()
        else:
            reply = iq.reply()
            reply["type"] = "error"
            reply["error"]["type"] = "auth"
            reply["error"]["condition"] = "not-authorized"
            reply.send()

    async def connect(self, timeout=TIMEOUT):
        """Connect and complete the handshake (AssertionError if refused)."""
        self.xmpp.connect(use_ssl=self.tls)
        await within(self._ready, "handshake of component %s" % self.address, timeout)
        return self

    async def refused(self, timeout=TIMEOUT):
        """Connect expecting the handshake to be refused; returns the stream
        error conditions seen."""
        self.xmpp.connect(use_ssl=self.tls)
        try:
            await within(self._ready, "refusal of component %s" % self.address, timeout)
        except AssertionError as e:
            if "was not accepted" in str(e):
                self.xmpp.disconnect()
                return self.stream_errors
            raise
        raise AssertionError("component %s was accepted" % self.address)

    def send_message(self, to, body, mfrom=None, mtype="chat"):
        self.xmpp.send_message(mto=to, mbody=body, mtype=mtype, mfrom=mfrom or self.address)

    async def next_message(self, timeout=TIMEOUT, what=None):
        return await within(self.messages.get(), what or "a message to %s" % self.address,
                            timeout)

    async def close(self, timeout=TIMEOUT):
        if not self.disconnected.is_set():
            self.xmpp.disconnect()
            await within(self.disconnected.wait(), "disconnect of %s" % self.address, timeout)


class RawStream:
    """An XMPP client stream driven by hand, for tests that must say what no
    library says. recv() returns the next top-level element (an
    ElementTree.Element with namespaced tags), END when the server closed
    its stream, or EOF when the connection ended."""

    def __init__(self, reader, writer, domain):
        self.reader = reader
        self.writer = writer
        self.domain = domain
        self.stream_attrs = None
        self.closed = None          # END or EOF once seen
        self.received = []          # every element, for diagnostics
        self.raw = bytearray()      # every byte received (after TLS: plaintext)
        self._ready = []
        self._reset_parser()

    @classmethod
    async def connect(cls, node, timeout=TIMEOUT):
        reader, writer = await within(asyncio.open_connection(node.address, node.port),
                                      "TCP connection to %s:%d" % (node.address, node.port),
                                      timeout)
        return cls(reader, writer, node.domain)

    def _reset_parser(self):
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0

    def stream_header(self):
        return ("<?xml version='1.0'?><stream:stream to='%s' version='1.0' xml:lang='en' "
                "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                % self.domain)

    async def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.writer.write(data)
        await self.writer.drain()

    def _feed(self, data):
        self.raw += data
        self._parser.feed(data)
        for event, el in self._parser.read_events():
            if event == "start":
                if self._depth == 0:
                    self.stream_attrs = dict(el.attrib)
                    self._ready.append(("header", el))
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 1:
                    self.received.append(el)
                    self._ready.append(("element", el))
                elif self._depth == 0:
                    self._ready.append(("end", END))

    async def _next(self, timeout):
        while not self._ready:
            if self.closed == EOF:
                return ("eof", EOF)
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = EOF
                return ("eof", EOF)
            self._feed(data)
        return self._ready.pop(0)

    async def recv(self, timeout=TIMEOUT, what="a stanza from the server"):
        """The next element, END or EOF (stream headers are skipped)."""
        async def wait():
            while True:
                kind, value = await self._next(timeout + 1)
                if kind == "header":
                    continue
                if kind == "end":
                    self.closed = END
                return value
        return await within(wait(), what, timeout)

    async def expect(self, ns, name, timeout=TIMEOUT):
        el = await self.recv(timeout, "<%s xmlns='%s'/>" % (name, ns))
        assert not isinstance(el, str) and el.tag == qname(ns, name), \
            "expected <%s xmlns='%s'/>, got %s" % (name, ns, describe(el))
        return el

    async def open(self, timeout=TIMEOUT):
        """Send a stream header; wait for the server's and its features."""
        await self.send(self.stream_header())
        kind, _ = await within(self._next(timeout + 1), "a stream header from the server",
                               timeout)
        assert kind == "header", "expected a stream header, got %s\n%r" % (kind, bytes(self.raw))
        return await self.expect(NS_STREAM, "features", timeout)

    async def starttls(self, context=None, timeout=TIMEOUT, trailer=""):
        """STARTTLS and the stream restart; returns the new features.
        TRAILER is sent in the same write right after <starttls/>."""
        await self.send("<starttls xmlns='%s'/>%s" % (NS_TLS, trailer))
        await self.expect(NS_TLS, "proceed", timeout)
        await within(self.writer.start_tls(context or client_tls_context(),
                                           server_hostname=self.domain),
                     "TLS handshake", timeout)
        self._reset_parser()
        return await self.open(timeout)

    @property
    def tls(self):
        return self.writer.get_extra_info("ssl_object")

    def peer_fingerprint(self):
        return fingerprint(self.tls.getpeercert(binary_form=True))

    async def auth_plain(self, username, password, timeout=TIMEOUT, trailer=""):
        """One PLAIN attempt: the <success/> or <failure/> element. TRAILER
        is sent in the same write right after </auth>."""
        payload = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode())
        await self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>%s" % (
            NS_SASL, payload.decode(), trailer))
        return await self.recv(timeout, "an answer to SASL PLAIN")

    async def auth_scram(self, mechanism, username, password, timeout=TIMEOUT,
                         gs2_header=b"n,,"):
        """One SCRAM attempt: <success/> (its signature verified) or <failure/>."""
        scram = ScramClient(mechanism, username, password, gs2_header)
        await self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (
            NS_SASL, mechanism, base64.b64encode(scram.first()).decode()))
        el = await self.recv(timeout, "the SCRAM server-first message")
        if isinstance(el, str) or el.tag != qname(NS_SASL, "challenge"):
            return el
        await self.send("<response xmlns='%s'>%s</response>" % (
            NS_SASL, base64.b64encode(scram.final(sasl_b64(el))).decode()))
        el = await self.recv(timeout, "the SCRAM outcome")
        if not isinstance(el, str) and el.tag == qname(NS_SASL, "success"):
            scram.verify(sasl_b64(el))
        return el

    async def bind(self, resource=None, timeout=TIMEOUT):
        """Stream restart after SASL success, then resource binding: the JID."""
        self._reset_parser()
        features = await self.open(timeout)
        assert child(features, NS_BIND, "bind") is not None, "no <bind/> in %s" % describe(
            features)
        res = "<resource>%s</resource>" % resource if resource else ""
        await self.send("<iq type='set' id='bind-1'><bind xmlns='%s'>%s</bind></iq>"
                        % (NS_BIND, res))
        iq = await self.expect(NS_CLIENT, "iq", timeout)
        assert iq.get("type") == "result" and iq.get("id") == "bind-1", describe(iq)
        jid = iq.find("%s/%s" % (qname(NS_BIND, "bind"), qname(NS_BIND, "jid")))
        assert jid is not None and jid.text, "bind result without a JID: %s" % describe(iq)
        self.jid = jid.text
        return self.jid

    async def login(self, username, password, mechanism="SCRAM-SHA-256", resource=None,
                    timeout=TIMEOUT):
        """STARTTLS, SASL, bind: a session ready for stanzas. Returns the JID."""
        features = await self.open(timeout)
        assert child(features, NS_TLS, "starttls") is not None, "no STARTTLS offered"
        await self.starttls(timeout=timeout)
        if mechanism == "PLAIN":
            el = await self.auth_plain(username, password, timeout)
        else:
            el = await self.auth_scram(mechanism, username, password, timeout)
        assert not isinstance(el, str) and el.tag == qname(NS_SASL, "success"), \
            "SASL %s for %s: %s" % (mechanism, username, describe(el))
        return await self.bind(resource, timeout)

    async def wait_closed(self, timeout=TIMEOUT):
        """Read until the server ends the stream or the connection. Returns
        (elements received meanwhile, END or EOF). Answers the server's
        </stream:stream> with ours, as a polite client does."""
        elements = []
        while True:
            el = await self.recv(timeout, "the server closing the stream")
            if isinstance(el, str):
                if el == END:
                    try:
                        await self.send(END)
                    except (ConnectionError, RuntimeError):
                        pass
                return elements, el
            elements.append(el)

    async def bytes_within(self, seconds):
        """What the server sends in the next SECONDS: None if nothing (a
        bounded wait for something that must not happen), b"" if it closed
        the connection, else the bytes (also fed to the parser)."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), seconds)
        except asyncio.TimeoutError:
            return None
        except ConnectionError:
            data = b""
        if data:
            self._feed(data)
        return data

    def close(self):
        try:
            self.writer.close()
        except Exception:
            pass


def describe(el):
    if isinstance(el, str):
        return el
    text = ET.tostring(el, encoding="unicode")
    return text if len(text) < 600 else text[:600] + "..."


def mechanisms(features):
    mechs = child(features, NS_SASL, "mechanisms")
    if mechs is None:
        return []
    return [m.text for m in mechs.findall(qname(NS_SASL, "mechanism"))]
