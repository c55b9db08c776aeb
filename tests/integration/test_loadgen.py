"""xmpp-loadgen against a real xmppd (2 workers, STARTTLS required).

Each scenario runs for a second or two with a handful of connections: these
tests check that the generator's counts add up against a real server (every
login succeeds, every message sent is delivered once and in order, nothing
fails), not how fast anything is. The generator is the build's own
($XMPPD_BUILD/xmpp-loadgen), so the sanitizer variant checks it too.
"""

import json
import os
import re
import signal
import subprocess
import time

from xmpptest import BUILD_DIR, TIMEOUT, sanitizer_env, sanitizer_lines

LOADGEN = os.path.join(BUILD_DIR, "xmpp-loadgen")
ACCOUNTS = 10          # user1..user10, password passN
# How long a run may take beyond its own --duration and --drain: logging in,
# closing, and a slow sanitizer build on a busy machine.
RUN_SLACK = 60.0


def import_accounts(node, count=ACCOUNTS):
    lines = "".join("user%d@%s pass%d\n" % (i, node.domain, i) for i in range(1, count + 1))
    out = node.ctl("user", "import", input=lines).stdout
    assert "imported %d accounts" % count in out, out


def loadgen_command(node, args):
    assert os.access(LOADGEN, os.X_OK), "%s is not built" % LOADGEN
    return [LOADGEN, "--server", "%s:%d" % (node.address, node.port), "--domain", node.domain,
            "--timeout", "%g" % TIMEOUT, "--json", *args]


def figures(args, returncode, stdout, stderr):
    """The JSON line of a finished run, after checking it exited 0 with no
    sanitizer report."""
    what = "xmpp-loadgen %s" % " ".join(args)
    reports = sanitizer_lines(stderr)
    assert not reports, "%s: sanitizer report:\n%s" % (what, stderr)
    assert returncode == 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
        what, returncode, stdout, stderr)
    lines = stdout.splitlines()
    assert len(lines) == 1, "%s: want one line of figures, got:\n%s" % (what, stdout)
    return json.loads(lines[0])


def run_loadgen(node, *args, seconds=2.0):
    """Run one scenario to its end; SECONDS is how long it is meant to take."""
    proc = subprocess.run(loadgen_command(node, args), capture_output=True, text=True,
                          timeout=seconds + RUN_SLACK, env=sanitizer_env(),
                          stdin=subprocess.DEVNULL)
    return figures(args, proc.returncode, proc.stdout, proc.stderr)


def assert_no_errors(fig):
    kinds = {k: v for k, v in fig.items() if k.startswith("err_")}
    assert fig["errors"] == 0 and not kinds, "errors in %s" % fig


def test_idle_every_account_online(make_node):
    node = make_node()
    import_accounts(node)
    # held until SIGINT, so the server's own view can be checked meanwhile
    args = ("--accounts", str(ACCOUNTS), "--duration", "0", "idle")
    proc = subprocess.Popen(loadgen_command(node, args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=sanitizer_env(),
                            stdin=subprocess.DEVNULL)
    try:
        want = sorted("user%d@%s" % (i, node.domain) for i in range(1, ACCOUNTS + 1))
        deadline = time.monotonic() + TIMEOUT
        while True:
            online = sorted(s.jid.split("/")[0] for s in node.sessions())
            if online == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert online == want, "sessions: %s, want one each of %s" % (online, want)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=RUN_SLACK)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    fig = figures(args, proc.returncode, stdout, stderr)
    assert fig["scenario"] == "idle" and fig["interrupted"] == "yes", fig
    assert fig["accounts"] == ACCOUNTS and fig["online"] == ACCOUNTS, fig
    assert fig["failed"] == 0, fig
    assert_no_errors(fig)


def assert_chat_adds_up(fig, pairs):
    assert fig["scenario"] == "chat" and fig["pairs"] == pairs, fig
    assert fig["online"] == 2 * pairs and fig["failed"] == 0, fig
    assert fig["sent"] > 0, "nothing sent: %s" % fig
    assert fig["delivered"] == fig["sent"] and fig["lost"] == 0, json.dumps(fig)
    assert fig["out_of_order"] == 0 and fig["msg_errors"] == 0, fig
    assert_no_errors(fig)


def test_chat_closed_and_open_loop(make_node):
    node = make_node()
    import_accounts(node)
    pairs = ACCOUNTS // 2
    fig = run_loadgen(node, "--pairs", str(pairs), "--window", "2", "--duration", "1",
                      "chat", seconds=6)
    assert fig["offered_rate"] == 0, fig
    assert_chat_adds_up(fig, pairs)
    # open loop: a fixed offered rate, whatever the server does
    fig = run_loadgen(node, "--pairs", str(pairs), "--rate", "200", "--size", "200",
                      "--duration", "1", "chat", seconds=6)
    assert fig["offered_rate"] == 200 and fig["size"] == 200, fig
    assert_chat_adds_up(fig, pairs)


def test_component_both_ways(make_node, tmp_path):
    """One XEP-0114 component (TLS from the first byte, xmppd's default for
    the listener) and ACCOUNTS clients: every message each way arrives, in
    order, and the counts of both directions add up."""
    node = make_node(component="direct")
    import_accounts(node)
    secret_file = tmp_path / "secret"
    secret_file.write_text(node.add_callbridge("cb1") + "\n")
    comp = ("--component", "cb1." + node.domain, "--component-secret-file", str(secret_file),
            "--component-server", "%s:%d" % (node.address, node.component_port),
            "--accounts", str(ACCOUNTS))
    for extra in (("--window", "2"), ("--rate", "200")):
        fig = run_loadgen(node, *comp, *extra, "--duration", "1", "component", seconds=6)
        assert fig["scenario"] == "component" and fig["clients"] == ACCOUNTS, fig
        # the component is online too
        assert fig["online"] == ACCOUNTS + 1 and fig["failed"] == 0, fig
        assert fig["to_component_sent"] > 0 and fig["from_component_sent"] > 0, fig
        assert fig["to_component_sent"] + fig["from_component_sent"] == fig["sent"], fig
        assert fig["to_component_delivered"] == fig["to_component_sent"], fig
        assert fig["from_component_delivered"] == fig["from_component_sent"], fig
        assert fig["delivered"] == fig["sent"] and fig["lost"] == 0, fig
        assert fig["out_of_order"] == 0 and fig["msg_errors"] == 0, fig
        assert_no_errors(fig)
    # a wrong secret: the component is refused, the run says why
    secret_file.write_text("not-the-secret\n")
    fig = run_loadgen(node, *comp, "--duration", "0.5", "component", seconds=4)
    assert fig.get("err_auth") == 1 and fig["online"] == ACCOUNTS, fig


AUTHENTICATED_RE = r"authenticated user\d+@localhost from \S+ \(%s\)"


def count_logins(node, mech, since):
    return len(re.findall(AUTHENTICATED_RE % re.escape(mech), node.log_text(since)))


def test_login_scram_and_plus(make_node):
    # the "authenticated" lines are at info level
    node = make_node(log_level="info")
    import_accounts(node)
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"):
        mark = node.log_size()
        # two threads: both run SCRAM at once, each with its own key cache
        fig = run_loadgen(node, "--mech", mech, "--tls", "starttls", "--accounts",
                          str(ACCOUNTS), "--concurrency", "4", "--threads", "2",
                          "--duration", "1", "login")
        assert fig["scenario"] == "login" and fig["mech"] == mech and fig["threads"] == 2, fig
        assert fig["logins"] > 0 and fig["failed"] == 0, fig
        assert_no_errors(fig)
        # the server's word for which mechanism was used; it also counts
        # logins finished after the measured window
        assert count_logins(node, mech, mark) >= fig["logins"], (
            "%d logins with %s but %d such lines in the log" % (
                fig["logins"], mech, count_logins(node, mech, mark)))
        other = "SCRAM-SHA-256" if mech.endswith("-PLUS") else "SCRAM-SHA-256-PLUS"
        assert count_logins(node, other, mark) == 0, "%s logins in the %s run" % (other, mech)


def test_connect(make_node):
    node = make_node()
    fig = run_loadgen(node, "--accounts", str(ACCOUNTS), "--concurrency", "4", "--duration",
                      "1", "connect")
    assert fig["scenario"] == "connect" and fig["tls"] == "starttls", fig
    assert fig["connects"] > 0 and fig["failed"] == 0, fig
    assert_no_errors(fig)


def test_plus_needs_tls():
    proc = subprocess.run([LOADGEN, "--mech", "SCRAM-SHA-256-PLUS", "--tls", "none", "login"],
                          capture_output=True, text=True, timeout=30, env=sanitizer_env(),
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "--tls none" in proc.stderr, proc.stderr
    assert proc.stdout == ""
