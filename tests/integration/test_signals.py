"""QUIT, USR1, the crash-loop cap, and what the log must never contain."""

import base64
import os
import signal

from xmpptest import RawStream, eventually, login, within


async def test_sigquit_stops_at_once(node):
    jid, pw = await node.aadd_user("alice")
    client = await login(node, jid, pw)
    node.send_signal(signal.SIGQUIT)
    # no drain: the workers are killed, so the client sees the connection
    # drop without a closing stream, and xmppd exits 0 well before the
    # drain timeout would have passed
    assert await node.await_exit(2.5) == 0, "xmppd still running or failed after SIGQUIT"
    await within(client.disconnected.wait(), "the client seeing the connection drop")
    assert "SIGQUIT: stopping at once" in node.log_text()


async def test_sigusr1_reopens_the_log_file(node):
    jid, pw = await node.aadd_user("alice")
    rotated = node.log_path + ".1"
    os.rename(node.log_path, rotated)
    node.send_signal(signal.SIGUSR1)
    # the supervisor writes to the new file...
    async def reopened():
        return os.path.exists(node.log_path) and "log file reopened" in node.log_text()
    await eventually(reopened, "a new log file")
    # ...and so do the workers: a login makes one of them write a line
    await login(node, jid, pw)
    await node.await_log(r"\[worker \d\] authenticated alice@localhost")
    # keep the rotated file's lines in view for the teardown checks
    with open(rotated) as old, open(node.log_path) as new:
        text = old.read() + new.read()
    with open(node.log_path, "w") as f:
        f.write(text)


async def test_repeated_crashes_are_backed_off(node):
    cap = 5  # CRASH_LIMIT in supervisor/supervisor.c
    for _ in range(cap + 1):
        status = await node.astatus()
        pid = status.worker_pid(0)
        node.expect_crash(0, pid, signal.SIGKILL)
        mark = node.log_size()
        os.kill(pid, signal.SIGKILL)
        await node.await_log(r"worker 0 \(pid %d\) killed by signal 9" % pid, since=mark)
        if _ < cap:
            await node.await_log(r"worker 0 started \(pid \d+\)", since=mark)
    await node.await_log(r"worker 0 is crash-looping \(6 deaths in 30 s\): next respawn in 1000 ms")
    # backed off, not given up: the slot comes back
    await node.await_log(r"worker 0 started \(pid \d+\)", since=mark)
    async def running():
        return (await node.astatus()).workers[0].get("state") == "running"
    await eventually(running, "worker 0 running again")


async def test_no_password_or_secret_in_the_log(make_node):
    node = make_node(log_level="debug")
    good = "Correct-Horse-7429"
    bad = "Wrong-Battery-5813"
    jid, _ = await node.aadd_user("alice", good)
    for mechanism, password in (("PLAIN", bad), ("PLAIN", good), ("SCRAM-SHA-256", bad),
                                ("SCRAM-SHA-1", good)):
        raw = await RawStream.connect(node)
        try:
            await raw.login("alice", password, mechanism=mechanism)
        except AssertionError:
            pass  # the wrong password fails, as it should
        raw.close()
    await node.await_log(r"authentication failure for alice from")
    await node.await_log(r"authenticated alice@localhost from .* \(SCRAM-SHA-1\)")
    text = node.log_text() + node.stderr_text()
    for secret in (good, bad):
        assert secret not in text, "a password reached the log"
    # the SASL payloads carry them base64-encoded: not those either
    for secret in (good, bad):
        assert base64.b64encode(("\0alice\0" + secret).encode()).decode() not in text
    with open(os.path.join(node.dir, "sasl-secret"), "rb") as f:
        assert f.read().hex() not in text
    assert oct(os.stat(os.path.join(node.dir, "sasl-secret")).st_mode & 0o777) == "0o600"
