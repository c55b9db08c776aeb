"""xmppctl user import-scram: accounts migrated as SCRAM-SHA-256 keys (salt,
iteration count, StoredKey, ServerKey) log in with SCRAM-SHA-256 and PLAIN
without the server ever seeing the password; SCRAM-SHA-1 has no keys for
them and fails like a wrong password; bad lines are refused."""

import base64
import hashlib
import hmac

import pytest

from xmpptest import LoginFailed, login


def scram_line(jid, password, salt, iterations=4096):
    """What another server keeps for JID (RFC 5802 / RFC 7677)."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()
    return "%s %s %d %s %s\n" % (jid, b64(salt), iterations,
                                 b64(hashlib.sha256(client_key).digest()), b64(server_key))


async def test_imported_keys_log_in(node):
    grace = "grace@" + node.domain
    heidi = "heidi@" + node.domain
    lines = scram_line(grace, "migrated-pw", b"0123456789abcdef") + \
        "\n" + scram_line(heidi, "other-pw", bytes(range(16)), 10000)
    result = await node.actl("user", "import-scram", input=lines)
    assert "imported 2 accounts" in result.stdout
    listed = (await node.actl("user", "list")).stdout.split()
    assert grace in listed and heidi in listed

    client = await login(node, grace + "/a", "migrated-pw", mech="SCRAM-SHA-256")
    assert client.mechanism == "SCRAM-SHA-256"
    await client.logout()
    client = await login(node, heidi + "/a", "other-pw", mech="SCRAM-SHA-256")
    await client.logout()
    # PLAIN (inside TLS) checks the password against the same SHA-256 keys
    client = await login(node, grace + "/b", "migrated-pw", mech="PLAIN")
    await client.logout()

    with pytest.raises(LoginFailed) as info:
        await login(node, grace + "/c", "wrong-pw", mech="SCRAM-SHA-256")
    assert info.value.condition == "not-authorized", info.value
    # no SHA-1 keys can be made from SHA-256 ones: SCRAM-SHA-1 fails
    with pytest.raises(LoginFailed) as info:
        await login(node, grace + "/d", "migrated-pw", mech="SCRAM-SHA-1")
    assert info.value.condition == "not-authorized", info.value

    # a new password gives the account both key sets again
    await node.actl("user", "passwd", grace, input="fresh-pw\n")
    client = await login(node, grace + "/e", "fresh-pw", mech="SCRAM-SHA-1")
    await client.logout()


async def test_import_scram_refuses_bad_lines(node):
    ivan = "ivan@" + node.domain
    good = scram_line(ivan, "pw", b"0123456789abcdef")
    jid, salt, it, stored, server = good.split()
    bad = [
        "%s %s %s %s\n" % (jid, salt, it, stored),                  # a field missing
        "%s %s %s %s %s\n" % (jid, base64.b64encode(b"short").decode(), it, stored, server),
        "%s %s 1000 %s %s\n" % (jid, salt, stored, server),          # below 4096
        "%s %s %s %s %s\n" % (jid, salt, it, stored[:-4], server),   # a short key
        "%s %s %s %s %s\n" % (jid, salt, it, "!" + stored[1:], server),
        "%s %s %s %s %s x\n" % (jid, salt, it, stored, server),     # a field too many
    ]
    for line in bad:
        result = await node.actl("user", "import-scram", input=line, expect=1)
        assert "line 1" in result.stderr, (line, result.stderr)
    assert ivan not in (await node.actl("user", "list")).stdout.split()
    # a bad line stops the import; the batch before it is not committed
    await node.actl("user", "import-scram", input=good + bad[0], expect=1)
    assert ivan not in (await node.actl("user", "list")).stdout.split()
    await node.actl("user", "import-scram", input=good)
    client = await login(node, ivan + "/a", "pw", mech="SCRAM-SHA-256")
    await client.logout()
