"""Presence between the resources of one account (RFC 6121 4.2, 4.5)."""

from xmpptest import login


async def test_initial_presence_and_unavailable_on_logout(node):
    jid, password = await node.aadd_user("alice")
    b = await login(node, jid + "/b", password)
    a = await login(node, jid + "/a", password, presence=False)
    a.xmpp.send_presence(pstatus="here", ppriority=5)

    p = await b.presence_from(a.jid)
    assert p["status"] == "here" and p["priority"] == 5, p

    await a.logout()
    await b.presence_from(a.jid, "unavailable")
    await b.logout()


async def test_unavailable_when_connection_drops(node):
    jid, password = await node.aadd_user("alice")
    b = await login(node, jid + "/b", password)
    a = await login(node, jid + "/a", password)
    await b.presence_from(a.jid)
    a.abort()   # no </stream:stream>, no unavailable presence from the client
    await b.presence_from(a.jid, "unavailable")
    await b.logout()


async def test_explicit_unavailable_is_broadcast(node):
    jid, password = await node.aadd_user("alice")
    b = await login(node, jid + "/b", password)
    a = await login(node, jid + "/a", password)
    await b.presence_from(a.jid)
    a.send_presence(ptype="unavailable")
    await b.presence_from(a.jid, "unavailable")
    # a is still connected and can come back.
    a.send_presence(priority=1)
    await b.presence_from(a.jid)
    await a.logout()
    await b.logout()


async def test_no_presence_for_resources_without_initial_presence(node):
    """Broadcast goes to available resources only: a connected resource
    that never sent presence gets none."""
    jid, password = await node.aadd_user("alice")
    quiet = await login(node, jid + "/quiet", password, presence=False)
    b = await login(node, jid + "/b", password)
    a = await login(node, jid + "/a", password)
    await b.presence_from(a.jid)
    # Same sender, same path: had a's or b's presence been sent to quiet, it
    # would arrive before that sender's message.
    for sender in (a, b):
        sender.send_message(quiet.jid, "after presence")
        msg = await quiet.next_message()
        assert msg["body"] == "after presence", msg
    assert quiet.presences.empty(), "quiet resource got %s" % quiet.presences.get_nowait()
    for c in (a, b, quiet):
        await c.logout()
