"""A real DNS server for the tests: dnsmasq (Debian's dnsmasq-base) on a
loopback address and port of the test's own, serving only the records the
test gives it (no upstream, no /etc/hosts).

    dns = DnsServer(directory)
    dns.srv("_xmpp-component._tcp.example.test", "node1.example.test", 5223, priority=10)
    dns.host("node1.example.test", "127.0.0.21")
    dns.start()            # returns once it answers queries
    ... dns.server  ->  "127.0.0.X:PORT", for --dns-server options
    dns.stop()

dnsmasq reads SRV and host records only at start: change records with
restart().
"""

import os
import random
import signal
import socket
import struct
import subprocess
import time

DNSMASQ = "/usr/sbin/dnsmasq"
PORT = 10053
READY_NAME = "ready.xmppd-test"


def _query_packet(name, qtype=1):
    qid = random.randrange(65536)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return qid, header + qname + struct.pack("!HH", qtype, 1)


def answers(address, port, name, timeout=0.5):
    """True when the server at ADDRESS:PORT answers an A query for NAME with
    at least one record."""
    qid, packet = _query_packet(name)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(packet, (address, port))
        data, _ = s.recvfrom(4096)
    except OSError:
        return False
    finally:
        s.close()
    if len(data) < 12:
        return False
    rid, _flags, _qd, an = struct.unpack("!HHHH", data[:8])
    return rid == qid and an > 0


class DnsServer:
    def __init__(self, directory, address, port=PORT):
        self.dir = directory
        self.address = address
        self.port = port
        self.conf = os.path.join(directory, "dnsmasq.conf")
        self.log = os.path.join(directory, "dnsmasq.log")
        self.records = ["host-record=%s,127.0.0.1" % READY_NAME]
        self.proc = None

    @property
    def server(self):
        return "%s:%d" % (self.address, self.port)

    def srv(self, name, target, port, priority=0, weight=0):
        self.records.append("srv-host=%s,%s,%d,%d,%d" % (name, target, port, priority, weight))

    def host(self, name, ip):
        self.records.append("host-record=%s,%s" % (name, ip))

    def clear(self):
        self.records = self.records[:1]

    def start(self, timeout=10.0):
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "port=%d" % self.port, "listen-address=%s" % self.address,
                "bind-interfaces", "no-resolv", "no-hosts", "no-poll", "user=root",
                "pid-file=", "log-queries", "log-facility=%s" % self.log,
                # answer only from the records below, never forward
                "local=/#/",
            ] + self.records) + "\n")
        self.proc = subprocess.Popen([DNSMASQ, "--keep-in-foreground", "--conf-file=" + self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log + ".stderr", "ab"),
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while not answers(self.address, self.port, READY_NAME):
            if self.proc.poll() is not None:
                raise AssertionError("dnsmasq exited with %d: %s" % (
                    self.proc.returncode, open(self.log + ".stderr").read()[-2000:]))
            if time.monotonic() > deadline:
                raise AssertionError("dnsmasq does not answer on %s" % self.server)
            time.sleep(0.02)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()
