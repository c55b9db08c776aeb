"""Certificate reload (`xmppctl reload` and SIGHUP): a transaction that
either switches every worker to the new files or keeps the old ones."""

import os
import shutil
import signal

import pytest

from xmpptest import (Conversation, RawStream, eventually, fingerprint, login_on_worker,
                      make_cert)


class Certs:
    """Key/certificate pairs A, B, C and the live paths xmppd is configured
    with; install() swaps files under it the way an operator would."""

    def __init__(self, directory):
        self.dir = os.path.join(directory, "certs")
        os.makedirs(self.dir)
        self.pairs = {name: make_cert(self.dir, name) for name in ("a", "b", "c")}
        self.key = os.path.join(directory, "live.key.pem")
        self.cert = os.path.join(directory, "live.cert.pem")

    def fp(self, name):
        return self.pairs[name][2]

    def _put(self, src, dst):
        tmp = dst + ".tmp"
        if isinstance(src, bytes):
            with open(tmp, "wb") as f:
                f.write(src)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)

    def install(self, cert_of, key_of=None, key_bytes=None):
        """Certificate of pair CERT_OF with the key of pair KEY_OF (default:
        its own), or KEY_BYTES as the key file."""
        self._put(self.pairs[cert_of][1], self.cert)
        self._put(key_bytes if key_bytes is not None else self.pairs[key_of or cert_of][0],
                  self.key)


async def new_connection_fingerprint(node):
    raw = await RawStream.connect(node)
    await raw.open()
    await raw.starttls()
    fp = raw.peer_fingerprint()
    raw.close()
    return fp


async def fingerprints_seen(node, connections=6):
    """Certificates served to fresh connections; six land on both workers
    with high probability, and every one must match anyway."""
    return {await new_connection_fingerprint(node) for _ in range(connections)}


def session_fingerprint(client):
    return fingerprint(client.xmpp.socket.getpeercert(binary_form=True))


async def start_with_cert_a(make_node):
    node = make_node(start=False)
    certs = Certs(node.dir)
    certs.install("a")
    node.config["tls"] = {"key": certs.key, "certificate": certs.cert}
    node.start()
    alice_jid, alice_pw = await node.aadd_user("alice")
    bob_jid, bob_pw = await node.aadd_user("bob")
    alice = await login_on_worker(node, alice_jid, alice_pw, want=0)
    bob = await login_on_worker(node, bob_jid, bob_pw, want=1)
    assert await fingerprints_seen(node) == {certs.fp("a")}
    return node, certs, alice, bob


async def test_reload_switches_certificate_and_keeps_sessions(make_node):
    node, certs, alice, bob = await start_with_cert_a(make_node)
    status = await node.astatus()
    assert status["tls certificate sha256"] == certs.fp("a")
    assert status["tls certificate"] == certs.cert
    assert status["tls key"] == certs.key

    async with Conversation(alice, bob) as talk:
        certs.install("b")
        result = await node.actl("reload")
        assert "reload: ok" in result.stdout, result.stdout
        # "ok" means every worker has the new context: no grace period.
        assert await fingerprints_seen(node) == {certs.fp("b")}
        await talk.advance(3)
    assert (await node.astatus())["tls certificate sha256"] == certs.fp("b")
    # Sessions opened before the reload keep the certificate they shook hands with.
    assert session_fingerprint(alice) == certs.fp("a")
    await alice.logout()
    await bob.logout()


@pytest.mark.parametrize("bad", ["key of another certificate", "garbage key",
                                 "missing certificate"])
async def test_failed_reload_keeps_the_old_certificate(make_node, bad):
    node, certs, alice, bob = await start_with_cert_a(make_node)
    async with Conversation(alice, bob) as talk:
        if bad == "key of another certificate":
            certs.install("b", key_of="c")
        elif bad == "garbage key":
            certs.install("b", key_bytes=b"this is not a PEM key\n")
        else:
            certs.install("b")
            os.unlink(certs.cert)
        result = await node.actl("reload", expect=1)
        output = result.stdout + result.stderr
        assert "reload failed:" in output, output
        assert "reload: ok" not in output, output
        assert await fingerprints_seen(node) == {certs.fp("a")}
        assert (await node.astatus())["tls certificate sha256"] == certs.fp("a")
        await talk.advance(3)

        # Fixed files reload fine afterwards: the failure left nothing behind.
        certs.install("b")
        result = await node.actl("reload")
        assert "reload: ok" in result.stdout, result.stdout
        assert await fingerprints_seen(node) == {certs.fp("b")}
        await talk.advance(3)
    await alice.logout()
    await bob.logout()


async def test_sighup_reloads_and_logs_failures(make_node):
    node, certs, alice, bob = await start_with_cert_a(make_node)
    async with Conversation(alice, bob) as talk:
        certs.install("b", key_of="c")
        mark = node.log_size()
        node.send_signal(signal.SIGHUP)
        await node.await_log(r"reload failed", since=mark)
        assert await fingerprints_seen(node) == {certs.fp("a")}
        await talk.advance(3)

        certs.install("b")
        node.send_signal(signal.SIGHUP)

        # SIGHUP reports to nobody: watch fresh connections until every
        # one is served B.
        async def all_b():
            return await fingerprints_seen(node, 4) == {certs.fp("b")}
        await eventually(all_b, "new connections served certificate B after SIGHUP")
        assert (await node.astatus())["tls certificate sha256"] == certs.fp("b")
        await talk.advance(3)
    await alice.logout()
    await bob.logout()


async def test_reload_of_a_broken_config_keeps_the_running_one(node):
    """The YAML is part of the transaction too: a file that does not parse is
    refused with its position, the node keeps serving, and a fixed file then
    applies (here: the log level)."""
    jid, pw = await node.aadd_user("alice")
    good = open(node.config_path).read()
    with open(node.config_path, "w") as f:
        f.write(good.replace("level: info", "level: loud"))
    # xmppctl reads the same file to find the node: it reports the failure
    proc = await node.actl("reload", expect=1)
    assert proc.stdout.startswith("reload failed: %s:" % node.config_path), proc.stdout
    assert "logging.level" in proc.stdout, proc.stdout
    # SIGHUP reaches xmppd itself, which refuses the file the same way
    mark = node.log_size()
    node.send_signal(signal.SIGHUP)
    await node.await_log(r"reload failed: .*logging\.level: .*the running configuration "
                         r"stays", since=mark)
    raw = await RawStream.connect(node)
    await raw.login("alice", pw)          # still serving, same certificate
    raw.close()

    with open(node.config_path, "w") as f:
        f.write(good.replace("level: info", "level: debug"))
    proc = await node.actl("reload")
    assert proc.stdout == "reload: ok\n", proc.stdout
    # debug lines appear only once the new level is in force
    mark = node.log_size()
    raw = await RawStream.connect(node)
    await raw.login("alice", pw)
    raw.close()
    await node.await_log(r" DEBUG \[", since=mark)
