"""Test certificates (made with ``cryptography``) and Kubernetes-style certificate directories."""

from __future__ import annotations

import atexit
import datetime as _dt
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CA", "Issued", "KubeSecretDir", "client_context", "served_serial"]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, in PEM."""

    cert_pem: bytes
    key_pem: bytes
    serial: int

    def files(self) -> tuple[str, str]:
        """The certificate and key as files (``ssl`` loads chains from files), written once."""
        if self.serial not in _WRITTEN:
            d = Path(tempfile.mkdtemp(prefix="mixerd-test-cert-"))
            atexit.register(shutil.rmtree, d, True)
            (d / "cert.pem").write_bytes(self.cert_pem)
            (d / "key.pem").write_bytes(self.key_pem)
            _WRITTEN[self.serial] = (str(d / "cert.pem"), str(d / "key.pem"))
        return _WRITTEN[self.serial]


_WRITTEN: dict[int, tuple[str, str]] = {}


def client_context(trust: bytes, cert: Issued | None = None, *, tls12: bool = False) -> ssl.SSLContext:
    """A client context trusting the PEM CAs ``trust``, presenting ``cert`` when given."""
    ctx = ssl.create_default_context(cadata=trust.decode())
    if cert is not None:
        ctx.load_cert_chain(*cert.files())
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # a gRPC listener speaks h2
    return ctx


def served_serial(port: int, ctx: ssl.SSLContext, server_name: str = "127.0.0.1") -> int:
    """The serial number of the certificate served on ``127.0.0.1:port`` (after a complete
    handshake; blocking)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=15) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        cert = tls.getpeercert()
        assert cert is not None
        return int(str(cert["serialNumber"]), 16)


class CA:
    """A self-signed certificate authority issuing leaf certificates (ECDSA P-256: fast to make)."""

    def __init__(self, name: str = "mixerd test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial)

    def server(self, name: str = "mixerd") -> Issued:
        """A server certificate for 127.0.0.1 and localhost."""
        return self.issue(name, dns=("localhost",), ips=("127.0.0.1",))


class KubeSecretDir:
    """A directory laid out as the kubelet mounts a Secret: each file is a symlink through
    ``..data``, a symlink to a timestamped directory; :meth:`write` makes a new directory and
    swaps ``..data`` in one rename (Kubernetes' AtomicWriter)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._version = 0

    def path(self, name: str) -> str:
        return str(self.root / name)

    def write(self, files: dict[str, bytes]) -> None:
        self._version += 1
        version = self.root / f"..v{self._version}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
        data_link = self.root / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(version.name, tmp)
        os.rename(tmp, data_link)
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        if old is not None:
            for f in (self.root / old).iterdir():
                f.unlink()
            (self.root / old).rmdir()


GOOD = "spiffe://cluster.local/ns/default/sa/good"
BAD = "spiffe://cluster.local/ns/default/sa/bad"

CALLER_POLICY = f"""
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: deny, namespace: istio-system}}
spec:
  compiledAdapter: denier
  params: {{status: {{code: 7, message: "caller not allowed"}}}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: nothing, namespace: istio-system}}
spec: {{compiledTemplate: checknothing}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: deny-bad-caller, namespace: istio-system}}
spec:
  match: mixerd.caller.principal == "{BAD}"
  actions: [{{handler: deny, instances: [nothing]}}]
"""
"""A policy denying the caller whose client certificate names :data:`BAD`."""
