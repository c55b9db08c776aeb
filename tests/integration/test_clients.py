"""Other real clients: libstrophe (tests/clients/strophe_client.c) and
go-sendxmpp, each delivering a message to a slixmpp receiver."""

import asyncio
import os
import secrets
import shutil

import pytest

from xmpptest import STROPHE_CLIENT, TIMEOUT, login, sanitizer_env, sanitizer_lines


async def run(args, stdin=None, env=None, timeout=TIMEOUT * 3):
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("%s still running after %.0f s" % (args[0], timeout)) from None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def receiver(node):
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    bob = await login(node, bob_jid + "/inbox", bob_pw)
    return alice_jid, alice_pw, bob


async def test_libstrophe_client_sends_a_message(node):
    assert os.access(STROPHE_CLIENT, os.X_OK), "%s is not built (ninja)" % STROPHE_CLIENT
    alice_jid, alice_pw, bob = await receiver(node)
    body = "from libstrophe " + secrets.token_hex(4)
    rc, out, err = await run([STROPHE_CLIENT, alice_jid + "/strophe", alice_pw, node.address,
                              str(node.port), bob.jid, body], env=sanitizer_env())
    assert not sanitizer_lines(out + err), err
    assert rc == 0, "strophe_client exited %d\nstdout:\n%s\nstderr:\n%s" % (rc, out, err)
    msg = await bob.next_message(what="the libstrophe message")
    assert msg["body"] == body, msg
    assert msg["from"].bare == alice_jid, msg
    await bob.logout()


async def test_libstrophe_client_wrong_password_fails(node):
    assert os.access(STROPHE_CLIENT, os.X_OK), "%s is not built (ninja)" % STROPHE_CLIENT
    alice_jid, alice_pw, bob = await receiver(node)
    rc, out, err = await run([STROPHE_CLIENT, alice_jid, alice_pw + "x", node.address,
                              str(node.port), bob.jid, "never"], env=sanitizer_env())
    assert not sanitizer_lines(out + err), err
    assert rc != 0, "strophe_client logged in with a wrong password:\n%s%s" % (out, err)
    await bob.ping()
    assert bob.messages.empty()
    await bob.logout()


async def test_go_sendxmpp_sends_a_message(node, tmp_path):
    go_sendxmpp = shutil.which("go-sendxmpp")
    if go_sendxmpp is None:
        pytest.fail("go-sendxmpp is not installed (Debian package go-sendxmpp)")
    alice_jid, alice_pw, bob = await receiver(node)
    body = "from go-sendxmpp " + secrets.token_hex(4)
    env = dict(os.environ, HOME=str(tmp_path))   # no ~/.config/go-sendxmpp from the host
    rc, out, err = await run([go_sendxmpp, "-n", "--timeout", "10", "-u", alice_jid,
                              "-p", alice_pw, "-j", "%s:%d" % (node.address, node.port),
                              bob.bare], stdin=(body + "\n").encode(), env=env)
    assert rc == 0, "go-sendxmpp exited %d\nstdout:\n%s\nstderr:\n%s" % (rc, out, err)
    msg = await bob.next_message(what="the go-sendxmpp message")
    assert msg["body"].strip() == body, msg
    assert msg["from"].bare == alice_jid, msg
    await bob.logout()
