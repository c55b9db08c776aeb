"""Bad input closes only the stream that sent it, with the right stream
error, while other sessions on the same server keep talking."""

import socket

import pytest

from xmpptest import (END, NS_CLIENT, NS_PING, NS_STREAM, Conversation, RawStream, describe,
                      login, login_on_worker, qname, stream_error_condition)

MAX_STANZA = 4096


async def talkers(node):
    """Alice on one worker and bob on the other, so whichever worker a bad
    client lands on, one side of the conversation shares it."""
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login_on_worker(node, alice_jid, alice_pw, want=0)
    bob = await login_on_worker(node, bob_jid, bob_pw, want=1)
    return alice, bob


async def expect_stream_error(raw, conditions):
    elements, how = await raw.wait_closed()
    errors = [e for e in elements if e.tag == qname(NS_STREAM, "error")]
    assert errors, "stream closed (%s) without a stream error; got %s" % (
        how, [describe(e) for e in elements])
    condition = stream_error_condition(errors[0])
    assert condition in conditions, describe(errors[0])
    assert how == END, "the server dropped the connection without </stream:stream>"
    return condition


async def test_malformed_xml_before_auth(node):
    alice, bob = await talkers(node)
    async with Conversation(alice, bob) as talk:
        raw = await RawStream.connect(node)
        await raw.open()
        await raw.send("<message><body>x</bdy></message>")
        await expect_stream_error(raw, ("not-well-formed",))
        await talk.advance(3)


async def test_malformed_xml_in_session(node):
    alice, bob = await talkers(node)
    await node.aadd_user("mallory", "mallory-pw")
    async with Conversation(alice, bob) as talk:
        raw = await RawStream.connect(node)
        jid = await raw.login("mallory", "mallory-pw", resource="bad")
        assert jid in {s.jid for s in await node.asessions()}
        await raw.send("<message to='%s'><body>a < b</body></message>" % alice.bare)
        await expect_stream_error(raw, ("not-well-formed",))
        await talk.advance(3)
        # The session is gone from the directory.
        assert jid not in {s.jid for s in await node.asessions()}


async def test_oversized_stanza_is_a_policy_violation(make_node):
    node = make_node(limits={"max_stanza_size": MAX_STANZA})
    alice, bob = await talkers(node)
    await node.aadd_user("mallory", "mallory-pw")
    async with Conversation(alice, bob) as talk:
        raw = await RawStream.connect(node)
        await raw.login("mallory", "mallory-pw", resource="big")
        # A stanza just under the limit is fine...
        body = "x" * (MAX_STANZA - 200)
        await raw.send("<iq type='get' id='small' to='%s'><ping xmlns='%s'/></iq>" % (
            node.domain, NS_PING))
        await raw.send("<message to='nobody@%s' id='m1'><body>%s</body></message>" % (
            node.domain, body))
        iq = await raw.expect(NS_CLIENT, "iq")
        assert iq.get("id") == "small", describe(iq)
        # ... twice the limit is not.
        body = "y" * (2 * MAX_STANZA)
        try:
            await raw.send("<message to='%s' id='m2'><body>%s</body></message>" % (
                alice.bare, body))
        except ConnectionError:
            pass   # the server may stop reading once the limit is passed
        await expect_stream_error(raw, ("policy-violation",))
        # Had the oversized message reached alice, the conversation would
        # have failed on its unexpected body.
        await talk.advance(3)


async def test_too_deep_nesting_is_a_policy_violation(make_node):
    node = make_node(limits={"max_depth": 8})
    alice, bob = await talkers(node)
    await node.aadd_user("mallory", "mallory-pw")
    async with Conversation(alice, bob) as talk:
        raw = await RawStream.connect(node)
        await raw.login("mallory", "mallory-pw", resource="deep")
        depth = 20
        await raw.send("<message to='%s'>%s%s</message>" % (
            alice.bare, "<x xmlns='urn:example:x'>" * depth, "</x>" * depth))
        await expect_stream_error(raw, ("policy-violation",))
        await talk.advance(3)


@pytest.mark.parametrize("what,data", [
    ("comment", "<!-- a comment -->"),
    ("processing instruction", "<?evil data?>"),
    ("entity declaration", None),
], ids=["comment", "pi", "dtd"])
async def test_restricted_xml_closes_the_stream(node, what, data):
    """RFC 6120 11.1: no comments, PIs, DTDs or entity declarations."""
    alice, bob = await talkers(node)
    async with Conversation(alice, bob) as talk:
        raw = await RawStream.connect(node)
        if data is None:
            # A DTD before the root element: the billion-laughs shape.
            await raw.send("<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>"
                           "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>")
            await raw.send(raw.stream_header().replace("<?xml version='1.0'?>", ""))
            await raw.send("<message><body>&lol2;</body></message>")
        else:
            await raw.open()
            await raw.send(data)
        await expect_stream_error(raw, ("restricted-xml", "not-well-formed"))
        await talk.advance(3)


async def test_stanza_split_into_single_bytes(node):
    """A stanza that trickles in one byte per TLS record parses normally."""
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    raw.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await raw.login("alice", password, resource="slow")
    stanza = "<iq type='get' id='trickle' to='%s'><ping xmlns='%s'/></iq>" % (node.domain,
                                                                           NS_PING)
    for byte in stanza:
        await raw.send(byte)
    iq = await raw.expect(NS_CLIENT, "iq")
    assert iq.get("type") == "result" and iq.get("id") == "trickle", describe(iq)
    raw.close()


async def test_pipelined_stanzas_in_one_write(node):
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.login("alice", password, resource="batch")
    await raw.send("".join("<iq type='get' id='b%d' to='%s'><ping xmlns='%s'/></iq>" % (
        i, node.domain, NS_PING) for i in range(50)))
    for i in range(50):
        iq = await raw.expect(NS_CLIENT, "iq")
        assert iq.get("type") == "result" and iq.get("id") == "b%d" % i, describe(iq)
    raw.close()


async def test_abrupt_disconnects_leave_the_server_serving(node):
    """Connections dropped at every step of the handshake: the server
    cleans up and keeps serving everyone else."""
    alice, bob = await talkers(node)
    async with Conversation(alice, bob) as talk:
        for i in range(21):
            raw = await RawStream.connect(node)
            if i % 3 >= 1:
                await raw.open()
            if i % 3 == 2:
                await raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                await raw.recv()   # <proceed/>; drop before the TLS handshake
            raw.writer.transport.abort()
        await talk.advance(3)
    raw = await RawStream.connect(node)
    await raw.login("alice", alice.xmpp.password, resource="after")
    raw.close()
