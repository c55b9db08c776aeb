"""auth: callbridge: a client's SASL PLAIN login decided by a connected call
bridge over the login hand-off (docs/callbridge.md)."""

from xmpptest import ComponentClient, LoginFailed, RawStream, XmppClient, login, mechanisms


def handoff_node(make_node, **kwargs):
    return make_node(component="direct", auth="callbridge", **kwargs)


async def test_bridge_accepts_and_refuses_logins(make_node):
    node = handoff_node(make_node)
    secret = await node.aadd_callbridge("cb1")
    bridge = await ComponentClient(node, "cb1", secret,
                                   handoff={"alice": "right horse"}).connect()

    status = (await node.actl("status")).stdout
    assert "authentication: callbridge" in status, status
    assert "authentication service: registered (cb1) for " in status, status

    # only PLAIN, and only inside TLS
    raw = await RawStream.connect(node)
    features = await raw.open()
    assert mechanisms(features) == []
    features = await raw.starttls()
    assert mechanisms(features) == ["PLAIN"]
    raw.close()

    alice = await login(node, "alice@localhost/desk", "right horse", mech="PLAIN")
    assert alice.bare == "alice@localhost"
    assert bridge.handoff_requests[-1][0] == "alice"
    assert bridge.handoff_requests[-1][1] == alice.local_address()
    await node.await_log(r"authenticated alice@localhost from .* \(PLAIN via call bridge\)")

    try:
        await login(node, "mallory@localhost/desk", "guess", mech="PLAIN")
        raise AssertionError("the bridge refused mallory, yet the login succeeded")
    except LoginFailed as e:
        assert e.condition == "not-authorized", e
    await node.await_log(r"authentication failure for mallory from .* "
                         r"\(PLAIN via call bridge: not-authorized\)")
    # a logged-in user is a user: messages reach her
    bridge.send_message(alice.jid, "welcome")
    msg = await alice.next_message()
    assert msg["body"] == "welcome"
    await alice.logout()
    await bridge.close()
    log = node.log_text() + node.stderr_text()
    assert "right horse" not in log and "guess" not in log


async def test_no_bridge_connected(make_node):
    node = handoff_node(make_node)
    await node.aadd_callbridge("cb1")
    status = (await node.actl("status")).stdout
    assert "authentication service: no authentication components found" in status, status
    try:
        await login(node, "alice@localhost/desk", "pw", mech="PLAIN")
        raise AssertionError("logged in with no authentication service")
    except LoginFailed as e:
        assert e.condition == "temporary-auth-failure", e
    await node.await_log(r"no authentication service")


async def asked_but_failed(make_node, timeout_ms, handoff):
    """A node whose bridge (HANDOFF: see ComponentClient) is asked about
    alice's login, which then fails with temporary-auth-failure."""
    node = handoff_node(make_node, callbridges={"auth_timeout_ms": timeout_ms})
    secret = await node.aadd_callbridge("cb1")
    bridge = await ComponentClient(node, "cb1", secret, handoff=handoff).connect()
    try:
        await login(node, "alice@localhost/desk", "pw", mech="PLAIN")
        raise AssertionError("logged in although the bridge never said yes")
    except LoginFailed as e:
        assert e.condition == "temporary-auth-failure", e
    assert [u for u, _ in bridge.handoff_requests] == ["alice"]
    return node, bridge


async def test_bridge_that_does_not_answer(make_node):
    node, bridge = await asked_but_failed(make_node, 500, None)
    await node.await_log(r"authentication service did not answer within 500 ms for alice")
    await bridge.close()


async def test_bridge_that_goes_away_before_answering(make_node):
    # the attempt fails when the bridge's stream ends, not at the (here one
    # minute) deadline: login() would give up long before that
    node, _ = await asked_but_failed(make_node, 60000, "vanish")
    await node.await_log(r"call bridge cb1\.localhost went away before answering for alice")
    assert "did not answer within" not in node.log_text()
