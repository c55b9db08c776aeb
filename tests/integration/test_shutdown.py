"""Graceful stop: every client sees its stream closed, xmppd exits 0, and
nothing keeps listening."""

import asyncio
import signal

import pytest

from xmpptest import (END, STOP_TIMEOUT, RawStream, login_on_worker, within)


async def assert_not_listening(node):
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection(node.address, node.port)
        writer.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_closes_streams_and_exits_zero(node, sig):
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login_on_worker(node, alice_jid, alice_pw, want=0)
    bob = await login_on_worker(node, bob_jid, bob_pw, want=1)
    raw = await RawStream.connect(node)
    await raw.login("alice", alice_pw, resource="raw")
    idle = await RawStream.connect(node)      # stream open, not logged in
    await idle.open()

    mark = node.log_size()
    node.send_signal(sig)
    for client in (alice, bob):
        await within(client.disconnected.wait(), "%s seeing the server close" % client.jid)
    for stream, who in ((raw, "the logged-in raw client"), (idle, "the unauthenticated client")):
        _, how = await stream.wait_closed()
        assert how == END, "%s: connection ended without </stream:stream>" % who
    assert await node.await_exit(STOP_TIMEOUT) == 0, "xmppd exit status %r" % node.returncode
    assert "stopping" in node.log_text(mark)
    await assert_not_listening(node)


async def test_xmppctl_stop(node):
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.login("alice", password, resource="raw")
    await node.actl("stop")
    _, how = await raw.wait_closed()
    assert how == END
    assert await node.await_exit(STOP_TIMEOUT) == 0, "xmppd exit status %r" % node.returncode
    await assert_not_listening(node)
