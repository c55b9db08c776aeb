"""c2s authentication: STARTTLS, SASL mechanisms, wrong passwords, TLS versions."""

import ssl
import warnings

import pytest

from xmpptest import (NS_CLIENT, NS_PING, NS_SASL, NS_TLS, RawStream, child,
                      client_tls_context, condition_of, describe, login, mechanisms, qname,
                      within)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
async def test_scram_login_over_starttls(node, mech):
    jid, password = await node.aadd_user("alice")
    client = await login(node, jid + "/desk", password, mech=mech)
    assert client.mechanism == mech
    assert client.bare == jid
    sessions = await node.asessions()
    mine = [s for s in sessions if s.jid == client.jid]
    assert mine, "xmppctl sessions does not list %s: %r" % (client.jid, sessions)
    assert mine[0].tls, "session listed without TLS: %r" % mine[0]
    assert mine[0].address == client.local_address()
    await client.ping()
    await client.logout()


async def test_features_before_and_after_starttls(node):
    """Required STARTTLS is announced as required; after TLS the SCRAM
    family and PLAIN are offered."""
    raw = await RawStream.connect(node)
    features = await raw.open()
    starttls = child(features, NS_TLS, "starttls")
    assert starttls is not None, "no STARTTLS in %s" % describe(features)
    assert child(starttls, NS_TLS, "required") is not None, \
        "STARTTLS not marked required on a tls: required listener: %s" % describe(features)
    assert "PLAIN" not in mechanisms(features)
    features = await raw.starttls()
    offered = mechanisms(features)
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "PLAIN"):
        assert mech in offered, "%s not offered after TLS: %r" % (mech, offered)
    assert child(features, NS_TLS, "starttls") is None, "STARTTLS offered twice"
    raw.close()


async def test_plain_refused_before_tls(make_node):
    node = make_node(tls="optional")
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    features = await raw.open()
    assert child(features, NS_TLS, "starttls") is not None, "STARTTLS not offered"
    offered = mechanisms(features)
    assert "PLAIN" not in offered, "PLAIN offered without TLS: %r" % offered
    assert "SCRAM-SHA-256" in offered, "plaintext listener offers no SCRAM: %r" % offered

    el = await raw.auth_plain("alice", password)
    assert not isinstance(el, str) and el.tag == qname(NS_SASL, "failure"), \
        "PLAIN without TLS answered with %s" % describe(el)
    assert condition_of(el, NS_SASL) in ("encryption-required", "mechanism-too-weak"), \
        describe(el)

    # The refusal is about PLAIN, not about plaintext: on this listener SCRAM
    # without TLS works, on the same stream.
    el = await raw.auth_scram("SCRAM-SHA-256", "alice", password)
    assert not isinstance(el, str) and el.tag == qname(NS_SASL, "success"), describe(el)
    full = await raw.bind("plain-text")
    sessions = {s.jid: s for s in await node.asessions()}
    assert full in sessions and not sessions[full].tls, sessions
    raw.close()


async def test_wrong_password_then_retry_on_same_stream(node):
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.open()
    await raw.starttls()

    el = await raw.auth_scram("SCRAM-SHA-256", "alice", password + "x")
    assert not isinstance(el, str) and el.tag == qname(NS_SASL, "failure"), describe(el)
    assert condition_of(el, NS_SASL) == "not-authorized", describe(el)

    el = await raw.auth_scram("SCRAM-SHA-256", "alice", password)   # verifies the server too
    assert not isinstance(el, str) and el.tag == qname(NS_SASL, "success"), describe(el)
    full = await raw.bind("retry")
    assert full.startswith(jid + "/"), full

    await raw.send("<iq type='get' id='ping-1' to='%s'><ping xmlns='%s'/></iq>"
                   % (node.domain, NS_PING))
    iq = await raw.expect(NS_CLIENT, "iq")
    assert iq.get("type") == "result" and iq.get("id") == "ping-1", describe(iq)
    raw.close()


async def test_scram_downgrade_flag_is_refused(node):
    """RFC 5802 section 6: a client saying "y" (it supports channel binding
    but thinks the server does not) to a server that offers -PLUS is
    being downgraded; the server must fail it."""
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.open()
    features = await raw.starttls()
    assert "SCRAM-SHA-256-PLUS" in mechanisms(features), mechanisms(features)
    el = await raw.auth_scram("SCRAM-SHA-256", "alice", password, gs2_header=b"y,,")
    assert not isinstance(el, str) and el.tag == qname(NS_SASL, "failure"), describe(el)
    raw.close()


@pytest.mark.parametrize("step", ["starttls", "auth"])
async def test_whitespace_after_restart_trigger(node, step):
    """go-xmpp (go-sendxmpp) writes "<starttls .../>\n" and "</auth>\n" in
    one write. The newline belongs to the old stream; the new stream starts
    with an XML declaration, which must still be accepted."""
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.open()
    await raw.starttls(trailer="\n" if step == "starttls" else "")
    el = await raw.auth_plain("alice", password, trailer="\n" if step == "auth" else "")
    assert not isinstance(el, str) and el.tag == qname(NS_SASL, "success"), describe(el)
    await raw.bind("ws")      # restarts with "<?xml version='1.0'?><stream:stream ..."
    await raw.send("<iq type='get' id='ws-ping' to='%s'><ping xmlns='%s'/></iq>" % (
        node.domain, NS_PING))
    iq = await raw.expect(NS_CLIENT, "iq")
    assert iq.get("type") == "result" and iq.get("id") == "ws-ping", describe(iq)
    raw.close()


async def test_unknown_user_is_not_authorized(node):
    """No user enumeration: an unknown account fails like a wrong password."""
    await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.open()
    await raw.starttls()
    for mech in ("SCRAM-SHA-256", "PLAIN"):
        if mech == "PLAIN":
            el = await raw.auth_plain("nosuchuser", "whatever")
        else:
            el = await raw.auth_scram(mech, "nosuchuser", "whatever")
        assert not isinstance(el, str) and el.tag == qname(NS_SASL, "failure"), describe(el)
        assert condition_of(el, NS_SASL) == "not-authorized", describe(el)
    raw.close()


async def test_stream_closed_after_auth_attempts(make_node):
    node = make_node(limits={"auth_attempts": 3})
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.open()
    await raw.starttls()
    for attempt in (1, 2):
        el = await raw.auth_plain("alice", "wrong-%d" % attempt)
        assert not isinstance(el, str) and el.tag == qname(NS_SASL, "failure"), \
            "attempt %d: %s" % (attempt, describe(el))
        assert condition_of(el, NS_SASL) == "not-authorized", describe(el)

    # The third failure uses up the attempts: the server answers (a SASL
    # failure and/or a stream error) and closes the stream.
    el = await raw.auth_plain("alice", "wrong-3")
    elements = [] if isinstance(el, str) else [el]
    if not isinstance(el, str):
        more, how = await raw.wait_closed()
        elements += more
    assert all(e.tag != qname(NS_SASL, "success") for e in elements), \
        [describe(e) for e in elements]
    assert raw.closed is not None

    # The limit is per stream, not an account lockout.
    raw = await RawStream.connect(node)
    full = await raw.login("alice", password, mechanism="PLAIN", resource="after")
    assert full == jid + "/after" or full.startswith(jid + "/"), full
    raw.close()


async def test_auth_before_starttls_on_required_listener_fails(node):
    """With tls: required no SASL exchange succeeds in plaintext."""
    await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    await raw.open()
    el = await raw.auth_scram("SCRAM-SHA-256", "alice", "irrelevant")
    assert isinstance(el, str) or el.tag != qname(NS_SASL, "success"), describe(el)
    raw.close()


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
async def test_tls_versions_accepted(node, version):
    jid, password = await node.aadd_user("alice")
    v = getattr(ssl.TLSVersion, version)
    raw = await RawStream.connect(node)
    await raw.open()
    features = await raw.starttls(client_tls_context(minimum=v, maximum=v))
    assert raw.tls.version() == version.replace("_", "."), raw.tls.version()
    assert "SCRAM-SHA-256" in mechanisms(features)
    raw.close()


async def test_tls_1_1_refused(node):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        v1_1 = ssl.TLSVersion.TLSv1_1
    ctx = client_tls_context(minimum=v1_1, maximum=v1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")   # let our side offer TLS 1.1 at all
    raw = await RawStream.connect(node)
    await raw.open()
    with pytest.raises((ssl.SSLError, ConnectionError)) as info:
        await raw.starttls(ctx)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(info.value), \
        "the client could not offer TLS 1.1, the test proves nothing: %s" % info.value
    raw.close()


async def test_bind_server_generated_resource(node):
    """An empty <bind/> gets a resource from the server."""
    jid, password = await node.aadd_user("alice")
    raw = await RawStream.connect(node)
    full = await raw.login("alice", password)
    local, _, resource = full.partition("/")
    assert local == jid and resource, full
    raw.close()


async def test_second_bind_of_same_full_jid_kicks_the_old_session(node):
    jid, password = await node.aadd_user("alice")
    old = await login(node, jid + "/same", password)
    new = await login(node, jid + "/same", password)
    await within(old.disconnected.wait(), "the old session being closed")
    assert "conflict" in old.stream_errors, old.stream_errors
    assert new.jid == jid + "/same"
    await new.ping()
    sessions = [s for s in await node.asessions() if s.jid == jid + "/same"]
    assert len(sessions) == 1, sessions
    assert sessions[0].address == new.local_address(), sessions
    await new.logout()

