"""xmppctl callbridge add / add-secret / list / del: output, exit codes, the
store's files, no echo on a terminal, and no secret in any log."""

import os
import re
import select
import signal
import subprocess
import termios
import time

from xmpptest import TIMEOUT, XMPPCTL, sanitizer_env, sanitizer_lines

SECRET_RE = re.compile(r"[A-Za-z0-9]{24}")


def block(name, domain, secret):
    """One bridge in `callbridge list`, as the meeting appliance prints it."""
    return ("***\n"
            "Callbridge : %s\n"
            "Domain     : %s\n"
            "Secret     : %s\n" % (name, domain, secret))


def add(node, name):
    """`callbridge add NAME`: the generated secret, checked."""
    result = node.ctl("callbridge", "add", name)
    m = re.fullmatch(r"added call bridge (\S+)\nsecret: (\S+)\n", result.stdout)
    assert m, "unexpected output of callbridge add: %r" % result.stdout
    assert m.group(1) == name.lower()
    assert SECRET_RE.fullmatch(m.group(2)), "generated secret %r" % m.group(2)
    return m.group(2), result


def listing(node):
    return node.ctl("callbridge", "list").stdout


def test_add_list_add_secret_del(make_node):
    node = make_node(log_level="debug")
    runs = []

    secret1, result = add(node, "cb1")
    runs.append(result)
    assert listing(node) == block("cb1", node.domain, secret1)
    secret_again, result = add(node, "cb-west")
    runs.append(result)
    assert secret_again != secret1

    # a secret for another node's bridge, given on stdin (not a terminal)
    result = node.ctl("callbridge", "add-secret", "cb2", input="kvgP1SRzWVabhiPVAb1\n")
    assert result.stdout == "added call bridge cb2\n"
    runs.append(result)
    assert listing(node) == (block("cb-west", node.domain, secret_again)
                             + block("cb1", node.domain, secret1)
                             + block("cb2", node.domain, "kvgP1SRzWVabhiPVAb1"))

    # add-secret replaces; pasted blanks and a CRLF line end do not count
    result = node.ctl("callbridge", "add-secret", "CB2", input="  n3w-Secret!x \r\n")
    assert result.stdout == "new secret for call bridge cb2\n"
    runs.append(result)
    assert block("cb2", node.domain, "n3w-Secret!x") in listing(node)

    for name in ("cb1", "cb-west"):
        result = node.ctl("callbridge", "del", name)
        assert result.stdout == "deleted call bridge %s\n" % name
        runs.append(result)
    assert listing(node) == block("cb2", node.domain, "n3w-Secret!x")
    node.ctl("callbridge", "del", "cb2")
    assert listing(node) == "no call bridges\n"

    assert node.running()
    secrets = (secret1, secret_again, "kvgP1SRzWVabhiPVAb1", "n3w-Secret!x")
    for secret in secrets:
        assert secret not in node.log_text(), "a call-bridge secret is in the xmppd log"
        assert secret not in node.stderr_text(), "a call-bridge secret is on xmppd's stderr"
        for run in runs:
            assert secret not in run.stderr, "xmppctl printed a secret on stderr"


def test_errors_and_exit_status(make_node):
    node = make_node(start=False)   # the commands need no running xmppd
    secret, _ = add(node, "cb1")

    result = node.ctl("callbridge", "add", "CB1", expect=1)
    assert "cb1 exists already" in result.stderr, result.stderr
    assert listing(node) == block("cb1", node.domain, secret)   # unchanged

    result = node.ctl("callbridge", "del", "cb9", expect=1)
    assert "no such call bridge: cb9" in result.stderr, result.stderr

    for bad in ("-cb", "cb-", "cb_1", "cb.1", "c" * 64, ""):
        result = node.ctl("callbridge", "add", bad, expect=1)
        assert "is not a call bridge name" in result.stderr, result.stderr
        node.ctl("callbridge", "add-secret", bad, input="good-secret\n", expect=1)
        node.ctl("callbridge", "del", bad, expect=1)
    add(node, "c" * 63)   # the longest name

    for bad in ("short\n", "has a space\n", "", "\n", "x" * 128 + "\n"):
        result = node.ctl("callbridge", "add-secret", "cb3", input=bad, expect=1)
        assert "secret" in result.stderr, result.stderr
    node.ctl("callbridge", "add-secret", "cb3", input="x" * 127)   # the longest, no newline

    for args in (["callbridge"], ["callbridge", "list", "cb1"], ["callbridge", "add"],
                 ["callbridge", "del", "cb1", "cb3"], ["callbridge", "remove", "cb1"]):
        node.ctl(*args, expect=2)
    names = re.findall(r"^Callbridge : (\S+)$", listing(node), re.M)
    assert names == ["cb1", "cb3", "c" * 63], names   # name (byte) order

    # made while xmppd was down, still there once it runs
    node.start()
    assert block("cb1", node.domain, secret) in listing(node)


def test_store_files_are_private(make_node):
    node = make_node(start=False)
    add(node, "cb1")
    for name in ("xmppd.mdb", "xmppd.mdb-lock"):
        mode = os.stat(os.path.join(node.dir, name)).st_mode & 0o7777
        assert mode == 0o600, "%s has mode %o" % (name, mode)


def read_until(fd, needle, deadline):
    """Bytes from FD until NEEDLE shows up (or EOF, or the deadline)."""
    data = b""
    while needle not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def test_add_secret_on_a_terminal_does_not_echo(make_node):
    node = make_node(start=False)
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([XMPPCTL, "-c", node.config_path, "callbridge", "add-secret",
                                 "cb1"], stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=node.dir, env=sanitizer_env())
        try:
            # typed only once the prompt shows: xmppctl has turned echo off by then
            prompt = read_until(proc.stderr.fileno(), b"secret for call bridge cb1: ",
                                time.monotonic() + TIMEOUT)
            assert b"secret for call bridge cb1: " in prompt, "no prompt: %r" % prompt
            os.write(master, b"typed-Secret-42\n")
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = prompt + err
        assert not sanitizer_lines((out + err).decode(errors="replace")), err
        assert proc.returncode == 0, "exit %d\n%s" % (proc.returncode, err.decode())
        assert out == b"added call bridge cb1\n", out

        echoed = b""
        while select.select([master], [], [], 0.2)[0]:
            chunk = os.read(master, 4096)
            if not chunk:
                break
            echoed += chunk
        assert b"typed-Secret-42" not in echoed, "the secret was echoed: %r" % echoed
        assert b"typed-Secret-42" not in err
        assert termios.tcgetattr(slave)[3] & termios.ECHO, "echo not restored"
    finally:
        os.close(master)
        os.close(slave)
    assert listing(node) == block("cb1", node.domain, "typed-Secret-42")


def test_interrupted_add_secret_restores_echo(make_node):
    """Ctrl-C at the prompt: xmppctl dies of the signal, as the shell
    expects, but not before the terminal has its echo back."""
    node = make_node(start=False)
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([XMPPCTL, "-c", node.config_path, "callbridge", "add-secret",
                                 "cb1"], stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=node.dir, env=sanitizer_env())
        try:
            prompt = read_until(proc.stderr.fileno(), b"secret for call bridge cb1: ",
                                time.monotonic() + TIMEOUT)
            assert b"secret for call bridge cb1: " in prompt, "no prompt: %r" % prompt
            assert not termios.tcgetattr(slave)[3] & termios.ECHO, "echo on at the prompt"
            os.write(master, b"half-typed")
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGINT, "exit status %d" % proc.returncode
        assert termios.tcgetattr(slave)[3] & termios.ECHO, "echo not restored"
    finally:
        os.close(master)
        os.close(slave)
    assert listing(node) == "no call bridges\n"
