"""A bad configuration file stops xmppd before it listens, with a message
that names the file, line, column and key."""

import os
import re
import shutil
import socket
import subprocess
import tempfile

import pytest

from xmpptest import XMPPD, allocate_address, sanitizer_env, sanitizer_lines

TEMPLATE = """\
node:
  name: node1
  data_dir: {dir}
domain: localhost
workers:
  count: 2
listeners:
  - type: c2s
    address: {address}
    port: 5222
    tls: required
logging:
  level: info
  file: {dir}/xmppd.log
limits:
  max_stanza_size: 65536
"""

# (case, 1-based line to replace, replacement, key path in the message or None)
CASES = [
    ("port not a number", 10, '    port: "abc"', "listeners[0].port"),
    ("port out of range", 10, "    port: 70000", "listeners[0].port"),
    ("no workers", 6, "  count: 0", "workers.count"),
    ("unknown tls mode", 11, "    tls: sometimes", "listeners[0].tls"),
    ("stanza limit too small", 16, "  max_stanza_size: 10", "limits.max_stanza_size"),
    ("unknown log level", 13, "  level: chatty", "logging.level"),
    ("YAML syntax error", 4, "domain: [localhost", None),
]


def no_process_with(config_path):
    """No process (a stray worker) runs with CONFIG_PATH on its command line."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if config_path.encode() in f.read():
                    return False
        except OSError:
            pass
    return True


def run_xmppd(config_path, cwd):
    try:
        proc = subprocess.run([XMPPD, "-c", config_path], capture_output=True, text=True,
                              timeout=15, cwd=cwd, env=sanitizer_env(),
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError("xmppd kept running with an invalid configuration") from None
    output = proc.stdout + proc.stderr
    assert not sanitizer_lines(output), output
    return proc.returncode, output


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="xmppd-it-conf-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("case,line,replacement,key", CASES, ids=[c[0] for c in CASES])
def test_invalid_config_is_refused(workdir, case, line, replacement, key):
    assert os.access(XMPPD, os.X_OK), "%s is not built" % XMPPD
    address = allocate_address()
    lines = TEMPLATE.format(dir=workdir, address=address).splitlines()
    lines[line - 1] = replacement
    path = os.path.join(workdir, "bad.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")

    rc, output = run_xmppd(path, workdir)
    assert rc != 0, "xmppd accepted the configuration (%s):\n%s" % (case, output)
    m = re.search(re.escape(path) + r":(\d+):(\d+):", output)
    assert m, "no %s:LINE:COL: in the message:\n%s" % (path, output)
    if key is not None:
        assert int(m.group(1)) == line, "line %s, want %d:\n%s" % (m.group(1), line, output)
        column = int(m.group(2))
        assert 1 <= column <= len(replacement) + 1, "column %d on %r" % (column, replacement)
        assert key in output, "key %s not named:\n%s" % (key, output)

    with pytest.raises(OSError):
        socket.create_connection((address, 5222), timeout=2).close()
    assert no_process_with(path), "a process with %s still runs" % path


def test_missing_config_file(workdir):
    assert os.access(XMPPD, os.X_OK), "%s is not built" % XMPPD
    path = os.path.join(workdir, "does-not-exist.yaml")
    rc, output = run_xmppd(path, workdir)
    assert rc != 0
    assert path in output, output
