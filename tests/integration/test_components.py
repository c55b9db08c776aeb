"""Call bridges as XEP-0114 components, driven by slixmpp's ComponentXMPP:
the handshake with per-bridge secrets, messages both ways, refusals, a
reconnect replacing a stale stream, and what a component may not send."""

import re
import ssl

from xmpptest import (ComponentClient, RawStream, XmppClient, eventually, login, within)


def component_node(make_node, **kwargs):
    kwargs.setdefault("component", "direct")
    return make_node(**kwargs)


async def test_handshake_and_messages_both_ways(make_node):
    node = component_node(make_node)
    # added while the node runs: no restart needed
    secret = await node.aadd_callbridge("cb1")
    bridge = await ComponentClient(node, "cb1", secret).connect()
    await node.await_log(r"call bridge cb1 connected from 127\.0\.0\.\d+:\d+ as cb1\.localhost")

    jid, password = await node.aadd_user("alice")
    alice = await login(node, jid + "/desk", password)

    # client -> the bridge's address, and a JID under it
    alice.send_message("cb1.localhost", "hello bridge", mid="m1")
    alice.send_message("room1@cb1.localhost/x", "to a room", mid="m2")
    first = await bridge.next_message(what="the client's first message at the bridge")
    second = await bridge.next_message(what="the client's second message at the bridge")
    assert (first["body"], str(first["from"]), str(first["to"])) == (
        "hello bridge", alice.jid, "cb1.localhost")
    assert (second["body"], str(second["from"]), str(second["to"])) == (
        "to a room", alice.jid, "room1@cb1.localhost/x")

    # the bridge -> the client, from its address and from a JID under it
    bridge.send_message(alice.jid, "hello client")
    bridge.send_message(alice.jid, "from a room", mfrom="room1@cb1.localhost/bot")
    got = [await alice.next_message(what="a message from the bridge") for _ in range(2)]
    assert [(m["body"], str(m["from"])) for m in got] == [
        ("hello client", "cb1.localhost"), ("from a room", "room1@cb1.localhost/bot")]

    status = (await node.actl("status")).stdout
    assert "call bridges connected: 1" in status, status
    assert "call bridge: cb1 cb1.localhost from" in status, status
    await bridge.close()
    await node.await_log(r"call bridge cb1 disconnected")
    await alice.logout()
    # the secret never reaches a log
    assert secret not in node.log_text() + node.stderr_text()


async def test_wrong_or_unknown_secret_is_refused(make_node):
    node = component_node(make_node)
    secret = await node.aadd_callbridge("cb1")
    wrong = secret[:-1] + ("a" if secret[-1] != "a" else "b")
    errors = await ComponentClient(node, "cb1", wrong).refused()
    assert "not-authorized" in errors, errors
    await node.await_log(r"authentication failure for call bridge cb1 from 127\.0\.0\.\d+:\d+")

    # a name with no secret stored: the same answer, the same log line
    errors = await ComponentClient(node, "cb9", secret).refused()
    assert "not-authorized" in errors, errors
    await node.await_log(r"authentication failure for call bridge cb9 from ")

    # an address that names no bridge of this domain
    errors = await ComponentClient(node, "x", secret, address="cb1.example.org").refused()
    assert "host-unknown" in errors, errors

    # the right secret still works after the failures
    bridge = await ComponentClient(node, "cb1", secret).connect()
    await bridge.close()
    assert secret not in node.log_text() + node.stderr_text()
    assert wrong not in node.log_text() + node.stderr_text()


async def test_repeated_failures_are_slowed_down(make_node):
    node = component_node(make_node, workers=1)
    await node.aadd_callbridge("cb1")
    for _ in range(3):
        errors = await ComponentClient(node, "cb1", "not-the-secret-0000").refused()
        assert "not-authorized" in errors
    mark = node.log_size()
    errors = await ComponentClient(node, "cb1", "not-the-secret-0000").refused(timeout=30)
    assert "not-authorized" in errors
    await node.await_log(r"answering call bridge cb1 from 127\.0\.0\.\d+:\d+ in 1000 ms "
                         r"\(4 failures from this address\)", since=mark)


async def test_failures_are_counted_across_workers(make_node):
    # SO_REUSEPORT spreads one address's handshakes over the workers: the
    # count is one for the node, so a guesser gains nothing from many
    # workers. Retry until two workers have refused at least once (the
    # kernel's hash of the source port decides; each attempt after the
    # third waits longer). Four workers: seven attempts all land on one with
    # probability 4/4^7 (1/4096); with two it was 1/64, and it happened.
    node = component_node(make_node, workers=4)
    await node.aadd_callbridge("cb1")
    seen = []   # (count, worker) in log order
    pattern = re.compile(r"authentication failure for call bridge cb1 from \S+ "
                         r"\((\d+) from this address within a minute; worker (\d+)\)")
    for attempt in range(7):
        errors = await ComponentClient(node, "cb1", "not-the-secret-0000").refused(timeout=40)
        assert "not-authorized" in errors
        await node.await_log(r"\(%d from this address within a minute; worker \d+\)"
                             % (attempt + 1))
        seen = [(int(n), int(w)) for n, w in pattern.findall(node.log_text())]
        if len({w for _, w in seen}) >= 2:
            break
    counts = [n for n, _ in seen]
    assert counts == list(range(1, len(counts) + 1)), seen
    assert len({w for _, w in seen}) >= 2, "every attempt went to one worker: %r" % seen


async def test_reconnect_replaces_a_stale_stream(make_node):
    node = component_node(make_node)
    secret = await node.aadd_callbridge("cb1")
    old = await ComponentClient(node, "cb1", secret).connect()
    # the old stream still looks alive; the bridge connects again
    new = await ComponentClient(node, "cb1", secret).connect()
    await within(old.disconnected.wait(), "the old stream to be closed")
    assert "conflict" in old.stream_errors, old.stream_errors
    await node.await_log(r"call bridge cb1 connected again: closing its older stream")

    jid, password = await node.aadd_user("bob")
    bob = await login(node, jid + "/desk", password)
    bob.send_message("cb1.localhost", "after the reconnect")
    msg = await new.next_message(what="a message at the new stream")
    assert msg["body"] == "after the reconnect"
    assert old.messages.empty()
    status = (await node.actl("status")).stdout
    assert "call bridges connected: 1" in status, status
    await new.close()
    await bob.logout()


async def test_component_may_only_send_from_its_address(make_node):
    node = component_node(make_node)
    secret = await node.aadd_callbridge("cb1")
    jid, password = await node.aadd_user("carol")
    carol = await login(node, jid + "/desk", password)
    bridge = await ComponentClient(node, "cb1", secret).connect()
    bridge.send_message(carol.jid, "forged", mfrom="cb2.localhost")
    await within(bridge.disconnected.wait(), "the bridge's stream to be closed")
    assert "invalid-from" in bridge.stream_errors, bridge.stream_errors
    assert carol.messages.empty(), "a forged message was delivered"
    await carol.logout()


async def test_message_to_an_absent_bridge_bounces(make_node):
    node = component_node(make_node)
    jid, password = await node.aadd_user("dave")
    dave = await login(node, jid + "/desk", password)
    dave.send_message("cb1.localhost", "anyone?", mid="q1")
    err = await dave.next_message(what="an error for a message to an absent bridge")
    assert err["type"] == "error" and err["id"] == "q1"
    assert err["error"]["condition"] == "service-unavailable", err
    await dave.logout()


async def test_plaintext_component_listener(make_node):
    """tls: none on the listener: the handshake in the clear (trusted
    networks only), same rules otherwise."""
    node = component_node(make_node, component="none")
    secret = await node.aadd_callbridge("cb1")
    bridge = await ComponentClient(node, "cb1", secret, tls=False).connect()
    await node.await_log(r"call bridge cb1 connected from .* as cb1\.localhost on worker \d+$")
    await bridge.close()


async def test_direct_tls_listener_refuses_plaintext(make_node):
    node = component_node(make_node)
    secret = await node.aadd_callbridge("cb1")
    errors = await ComponentClient(node, "cb1", secret, tls=False).refused()
    assert "not-authorized" not in errors
    # the node lives on and takes the bridge over TLS
    bridge = await ComponentClient(node, "cb1", secret).connect()
    await bridge.close()
