"""xmppctl: accounts, status, sessions, enable/disable, cluster status,
exit codes."""

import asyncio
import datetime
import os
import re

import pytest

from xmpptest import (ABSENCE_WAIT, Conversation, LoginFailed, RawStream, eventually, login,
                      login_on_worker, parse_sessions)


async def test_user_add_list_passwd_del(node):
    jid = "carol@" + node.domain
    await node.actl("user", "add", jid, input="first-pw\n")
    assert jid in (await node.actl("user", "list")).stdout.split()
    client = await login(node, jid + "/1", "first-pw")
    await client.logout()

    # A new password counts from the next login, without a restart.
    await node.actl("user", "passwd", jid, input="second-pw\n")
    with pytest.raises(LoginFailed) as info:
        await login(node, jid + "/2", "first-pw")
    assert info.value.condition == "not-authorized", info.value
    client = await login(node, jid + "/3", "second-pw")
    await client.logout()

    await node.actl("user", "del", jid)
    assert jid not in (await node.actl("user", "list")).stdout.split()
    with pytest.raises(LoginFailed) as info:
        await login(node, jid + "/4", "second-pw")
    assert info.value.condition == "not-authorized", info.value


async def test_user_add_generates_a_password(node):
    jid = "erin@" + node.domain
    result = await node.actl("user", "add", jid, input="")
    m = re.search(r"^password: (\S+)$", result.stdout, re.M)
    assert m, "no generated password in %r" % result.stdout
    password = m.group(1)
    assert len(password) >= 12, "generated password %r is short" % password
    client = await login(node, jid + "/gen", password)
    await client.logout()


async def test_user_errors(node):
    jid = "dave@" + node.domain
    await node.actl("user", "add", jid, input="pw-1\n")
    await node.actl("user", "add", jid, input="pw-2\n", expect=1)     # exists already
    client = await login(node, jid + "/x", "pw-1")                    # unchanged
    await client.logout()
    await node.actl("user", "del", "nobody@" + node.domain, expect=1)
    await node.actl("user", "passwd", "nobody@" + node.domain, input="pw\n", expect=1)


def test_user_commands_without_server(make_node):
    node = make_node(start=False)
    jid, password = node.add_user("frank", "offline-pw")
    assert node.ctl("user", "list").stdout.split() == [jid]
    node.start()

    async def check():
        client = await login(node, jid + "/x", password)
        await client.logout()
    asyncio.run(check())


async def test_status_fields(node):
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login(node, alice_jid + "/a", alice_pw)
    bob = await login(node, bob_jid + "/b", bob_pw)
    status = await node.astatus()

    assert status["version"], status.text
    assert re.fullmatch(r"\d+ s", status["uptime"]), status["uptime"]
    assert status["domain"] == node.domain
    assert status["cluster role"] == "STANDALONE"
    assert status["accepting"] == "yes"
    assert status["sessions"] == "2", status.text

    assert sorted(status.workers) == [0, 1], status.text
    pids = set()
    for index, worker in status.workers.items():
        pid = worker["pid"]
        assert worker.get("state") == "running", status.text
        assert isinstance(worker.get("connections"), int), status.text
        with open("/proc/%d/stat" % pid) as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        assert ppid == node.pid, "worker %d (pid %d) is not a child of xmppd" % (index, pid)
        pids.add(pid)
    assert len(pids) == 2
    assert sum(w["connections"] for w in status.workers.values()) >= 2, status.text

    assert "c2s %s:%d tls=required" % (node.address, node.port) in status.listeners, \
        status.listeners
    # Self-signed material made at first start, in the data directory.
    assert status["tls key"] == os.path.join(node.dir, "tls", "key.pem")
    assert status["tls certificate"] == os.path.join(node.dir, "tls", "cert.pem")
    assert os.stat(status["tls key"]).st_mode & 0o077 == 0, "key file readable by others"
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T\d\d:\d\d:\d\dZ", status["tls certificate expires"])
    assert m, status["tls certificate expires"]
    expires = datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    assert expires > datetime.date.today() + datetime.timedelta(days=9 * 365), expires

    raw = await RawStream.connect(node)
    await raw.open()
    await raw.starttls()
    assert status["tls certificate sha256"] == raw.peer_fingerprint()
    raw.close()

    result = await node.actl("cluster", "status")
    assert re.search(r"role: STANDALONE", result.stdout), result.stdout
    await alice.logout()
    await bob.logout()


async def test_sessions_lists_logged_in_clients(node):
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login(node, alice_jid + "/one", alice_pw)
    bob = await login(node, bob_jid + "/two", bob_pw)
    raw = await RawStream.connect(node)       # connected, not logged in: no session
    await raw.open()

    sessions = {s.jid: s for s in await node.asessions()}
    assert set(sessions) == {alice.jid, bob.jid}, sessions
    for client in (alice, bob):
        s = sessions[client.jid]
        assert s.tls and s.worker in (0, 1), s
        assert s.address == client.local_address(), s

    await alice.logout()

    async def gone():
        return alice.jid not in {s.jid for s in await node.asessions()}
    await eventually(gone, "alice leaving xmppctl sessions")
    raw.close()
    await bob.logout()

    async def empty():
        return parse_sessions((await node.actl("sessions")).stdout) == []
    await eventually(empty, "xmppctl sessions listing nobody")


async def unserved(node):
    """A new connection that gets no stream header (or is refused/closed)."""
    try:
        raw = await RawStream.connect(node)
    except (AssertionError, OSError):
        return True
    try:
        await raw.send(raw.stream_header())
    except ConnectionError:
        return True
    data = await raw.bytes_within(ABSENCE_WAIT)
    raw.close()
    return data is None or data == b""


async def test_disable_and_enable(node):
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login_on_worker(node, alice_jid, alice_pw, want=0)
    bob = await login_on_worker(node, bob_jid, bob_pw, want=1)
    async with Conversation(alice, bob) as talk:
        await node.actl("disable")
        assert (await node.astatus())["accepting"] == "no"
        # Several at once, so both workers' sockets are tried in one wait.
        results = await asyncio.gather(*(unserved(node) for _ in range(4)))
        assert all(results), "a new connection was served while disabled"
        await talk.advance(3)

        await node.actl("enable")
        assert (await node.astatus())["accepting"] == "yes"
        for i in range(4):
            raw = await RawStream.connect(node)
            await raw.login("alice", alice_pw, resource="enabled%d" % i)
            raw.close()
        await talk.advance(2)
    await alice.logout()
    await bob.logout()


def test_exit_codes(make_node):
    node = make_node(start=False)
    result = node.ctl("status", expect=3)
    assert result.stderr.strip(), "no message when the server is not reachable"
    node.ctl("reload", expect=3)
    node.ctl("frobnicate", expect=2)
    node.ctl(expect=2)
    node.start()
    node.ctl("status")
    assert node.stop() == []
    node.ctl("status", expect=3)
