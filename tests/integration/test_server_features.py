"""What the server itself answers: XEP-0199 ping, XEP-0030 disco#info,
the roster, unknown iq payloads."""

import pytest

from xmpptest import NS_CLIENT, NS_PING, RawStream, describe, login, stanza_error_condition


async def test_ping_server(node):
    jid, password = await node.aadd_user("alice")
    alice = await login(node, jid + "/a", password)
    result = await alice.ping(node.domain)
    assert result["type"] == "result", result
    assert str(result["from"]) == node.domain, result
    await alice.logout()


async def test_ping_without_to_is_answered_for_the_account(node):
    """RFC 6120 10.3.3: no 'to' means the user's account; the server answers."""
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.login("alice", password, resource="r")
    await raw.send("<iq type='get' id='p-none'><ping xmlns='%s'/></iq>" % NS_PING)
    iq = await raw.expect(NS_CLIENT, "iq")
    assert iq.get("type") == "result" and iq.get("id") == "p-none", describe(iq)
    raw.close()


async def test_disco_info_of_the_domain(node):
    jid, password = await node.aadd_user("alice")
    alice = await login(node, jid + "/a", password)
    info = await alice.xmpp["xep_0030"].get_info(jid=node.domain, local=False, cached=False)
    disco = info["disco_info"]
    categories = {(i[0], i[1]) for i in disco["identities"]}
    assert any(cat == "server" for cat, _ in categories), categories
    features = set(disco["features"])
    assert "urn:xmpp:ping" in features, features
    assert "http://jabber.org/protocol/disco#info" in features, features
    await alice.logout()


async def test_roster_is_empty(node):
    jid, password = await node.aadd_user("alice")
    alice = await login(node, jid + "/a", password)
    roster = await alice.xmpp.get_roster(timeout=10)
    assert roster["type"] == "result", roster
    assert len(roster["roster"]["items"]) == 0, roster
    await alice.logout()


@pytest.mark.parametrize("iq_type,payload", [
    ("get", "<query xmlns='urn:example:nothing'/>"),
    ("set", "<thing xmlns='urn:example:unknown'><x>1</x></thing>"),
], ids=["get", "set"])
async def test_unknown_iq_to_server_gets_an_error(node, iq_type, payload):
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.login("alice", password, resource="r")
    await raw.send("<iq type='%s' id='u1' to='%s'>%s</iq>" % (iq_type, node.domain, payload))
    iq = await raw.expect(NS_CLIENT, "iq")
    assert iq.get("type") == "error" and iq.get("id") == "u1", describe(iq)
    assert stanza_error_condition(iq) in ("service-unavailable", "feature-not-implemented"), \
        describe(iq)
    # The stream lives on.
    await raw.send("<iq type='get' id='p2' to='%s'><ping xmlns='%s'/></iq>" % (node.domain,
                                                                             NS_PING))
    iq = await raw.expect(NS_CLIENT, "iq")
    assert iq.get("type") == "result" and iq.get("id") == "p2", describe(iq)
    raw.close()
