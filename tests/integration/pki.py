"""Test certificates: a CA of the test's own and certificates it issues,
made with the openssl CLI (EC P-256), so tests can present what operators
present: a chain, SANs of their choosing, a key that does not match."""

import os
import subprocess


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_key(directory, name):
    """A fresh EC P-256 private key (PEM). Returns its path."""
    key = os.path.join(directory, name + ".key.pem")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    return key


class CA:
    """A self-signed CA in DIRECTORY: .key, .cert (the trust bundle to give
    clients), and issue() for leaf certificates."""

    def __init__(self, directory, name="xmppd test CA", days=30):
        self.dir = directory
        self.key = make_key(directory, "ca")
        self.cert = os.path.join(directory, "ca.cert.pem")
        _openssl("req", "-x509", "-new", "-key", self.key, "-out", self.cert, "-days", str(days),
                 "-subj", "/CN=" + name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._serial = 1

    def issue(self, name, sans, days=30, key=None):
        """A certificate for SANS (DNS names, or IP:addr entries) signed by
        this CA. KEY: an existing key path to certify (default: a new one).
        Returns (key_path, cert_path)."""
        key = key or make_key(self.dir, name)
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".cert.pem")
        ext = os.path.join(self.dir, name + ".ext")
        alt = ",".join(s if s.startswith("IP:") else "DNS:" + s for s in sans)
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    "subjectAltName=%s\n" % alt)
        _openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/CN=" + sans[0])
        self._serial += 1
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-set_serial", str(self._serial), "-out", cert, "-days", str(days),
                 "-extfile", ext)
        return key, cert
