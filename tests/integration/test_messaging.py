"""Message and iq routing between sessions (RFC 6121 section 8.5)."""

import asyncio

import pytest

from xmpptest import (NS_PING, NS_STREAM, TIMEOUT, RawStream, describe, error_condition, login,
                      login_on_worker, message_seq, qname, stream_error_condition)

COUNT = 1000


async def test_thousand_messages_each_way_across_workers(node):
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login(node, alice_jid + "/a", alice_pw)
    alice_worker = await node.worker_of(alice.jid)
    bob = await login_on_worker(node, bob_jid, bob_pw, avoid=alice_worker)
    assert bob.worker != alice_worker

    async def receive(dst, src, tag):
        seqs = []
        while len(seqs) < COUNT:
            msg = await dst.next_message(
                TIMEOUT, "message %d of %d from %s to %s" % (len(seqs), COUNT, src.jid,
                                                             dst.jid))
            assert msg["type"] == "chat", "unexpected %s message: %s" % (msg["type"], msg)
            assert str(msg["from"]) == src.jid, "from %s, want %s" % (msg["from"], src.jid)
            seqs.append(message_seq(msg, tag))
        return seqs

    receivers = [asyncio.ensure_future(receive(bob, alice, "a2b")),
                 asyncio.ensure_future(receive(alice, bob, "b2a"))]
    for i in range(COUNT):
        alice.send_message(bob.jid, "a2b %d" % i)
        bob.send_message(alice.jid, "b2a %d" % i)
        if i % 100 == 99:
            await asyncio.sleep(0)   # let slixmpp flush and read
    to_bob, to_alice = await asyncio.gather(*receivers)
    assert to_bob == list(range(COUNT)), "alice -> bob out of order or lost"
    assert to_alice == list(range(COUNT)), "bob -> alice out of order or lost"

    # Nothing extra (no duplicates) arrives after the last one.
    alice.send_message(bob.jid, "a2b end")
    msg = await bob.next_message()
    assert msg["body"] == "a2b end", "stray message after the run: %s" % msg
    await alice.logout()
    await bob.logout()


async def test_bare_jid_reaches_highest_priority_resource(node):
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login(node, alice_jid + "/a", alice_pw)
    high = await login(node, bob_jid + "/high", bob_pw, priority=10)
    low = await login(node, bob_jid + "/low", bob_pw, priority=1)
    # Both of bob's resources see each other: both presences are in place.
    await high.presence_from(low.jid)
    await low.presence_from(high.jid)

    alice.send_message(bob_jid, "to bare 1")
    msg = await high.next_message(what="the bare-JID message on the priority 10 resource")
    assert msg["body"] == "to bare 1" and str(msg["from"]) == alice.jid, msg

    # Priorities swap: the next bare-JID message follows them.
    high.send_presence(priority=0)
    low.send_presence(priority=20)
    await low.presence_from(high.jid)   # high's change is in effect
    await high.presence_from(low.jid)
    alice.send_message(bob_jid, "to bare 2")
    msg = await low.next_message(what="the bare-JID message on the priority 20 resource")
    assert msg["body"] == "to bare 2", msg

    for c in (alice, high, low):
        await c.logout()


async def test_negative_priority_resource_gets_no_bare_jid_messages(node):
    """RFC 6121 8.5.2.1.1: never to a negative-priority resource; with only
    such resources bob counts as unavailable: service-unavailable."""
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login(node, alice_jid + "/a", alice_pw)
    bob = await login(node, bob_jid + "/neg", bob_pw, priority=-1)
    await bob.ping()   # bob's presence was processed before this answer

    mid = alice.send_message(bob_jid, "to bare")
    err = await alice.next_message(what="an error for the bare-JID message")
    assert err["id"] == mid and error_condition(err) == "service-unavailable", err

    # A message to the full JID still goes through; had the bare-JID one
    # been delivered, it would have arrived first (same sender, same path).
    alice.send_message(bob.jid, "to full")
    msg = await bob.next_message()
    assert msg["body"] == "to full", "negative-priority resource got %r" % msg["body"]
    await alice.logout()
    await bob.logout()


async def test_unknown_and_offline_recipients_get_service_unavailable(node):
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, _ = await node.aadd_user("bob")           # exists, never logs in
    alice = await login(node, alice_jid + "/a", alice_pw)
    for to in ("nosuchuser@" + node.domain, bob_jid, bob_jid + "/gone"):
        mid = alice.send_message(to, "hello?")
        err = await alice.next_message(what="an error for the message to %s" % to)
        assert err["type"] == "error", "message to %s: got %s" % (to, err)
        assert err["id"] == mid, err
        assert error_condition(err) == "service-unavailable", err
        assert str(err["from"]) == to, "error from %s, want %s" % (err["from"], to)
    await alice.logout()


@pytest.mark.parametrize("to", ["nosuchuser@localhost/x", "bob@localhost/gone"])
async def test_iq_to_absent_full_jid_gets_service_unavailable(node, to):
    from slixmpp.exceptions import IqError
    alice_jid, alice_pw = await node.aadd_user("alice")
    await node.aadd_user("bob")
    alice = await login(node, alice_jid + "/a", alice_pw)
    with pytest.raises(IqError) as info:
        await alice.ping(to)
    assert info.value.iq["error"]["condition"] == "service-unavailable", info.value.iq
    await alice.logout()


async def test_iq_between_resources_is_routed(node):
    """An iq to another user's full JID reaches it, and its answer comes back."""
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login(node, alice_jid + "/a", alice_pw)
    bob = await login_on_worker(node, bob_jid, bob_pw, avoid=await node.worker_of(alice.jid))
    # slixmpp answers pings itself: the result comes from bob's client.
    result = await alice.ping(bob.jid)
    assert result["type"] == "result" and str(result["from"]) == bob.jid, result
    await alice.logout()
    await bob.logout()


async def test_forged_from_is_never_delivered(node):
    """RFC 6120 8.1.2.1: the server stamps 'from' with the sender's full
    JID, or rejects the stanza (<invalid-from/>); a forged 'from' never
    reaches the recipient."""
    await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    await node.aadd_user("mallory", "mallory-pw")
    bob = await login(node, bob_jid + "/b", bob_pw)
    raw = await RawStream.connect(node)
    mallory = await raw.login("mallory", "mallory-pw", resource="m")
    await raw.send("<message from='alice@%s/desk' to='%s' type='chat' id='forged'>"
                   "<body>trust me</body></message>" % (node.domain, bob.jid))
    await raw.send("<iq type='get' id='after' to='%s'><ping xmlns='%s'/></iq>" % (
        node.domain, NS_PING))
    answer = await raw.recv()
    if not isinstance(answer, str) and answer.tag == qname(NS_STREAM, "error"):
        assert stream_error_condition(answer) == "invalid-from", describe(answer)
    else:
        # Accepted and stamped: bob sees mallory, not alice.
        msg = await bob.next_message()
        assert msg["body"] == "trust me" and str(msg["from"]) == mallory, msg
    raw.close()
    await bob.logout()
