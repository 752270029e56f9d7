"""The mesh's own certificate authority and per-service identities, for mTLS between
proxies (`canaryctl mesh ca init | issue`).

A service's identity is the URI `spiffe://canaryctl.mesh/service/<name>` in its
certificate's subjectAltName (the convention SPIFFE made common), plus the DNS name
`<name>` so ordinary hostname verification checks it on the client side. Keys are
ECDSA P-256; private keys are written owner-only.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from mesh.config import ListenerTLS, MeshConfig, MeshConfigError, UpstreamTLS

TRUST_DOMAIN = "canaryctl.mesh"


class IdentityError(Exception):
    """One line for users: which file or name, and what was expected."""


def identity_uri(service: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/service/{service}"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def init_ca(directory: str | Path, *, name: str = "canaryctl mesh CA", days: int = 3650,
            force: bool = False) -> tuple[Path, Path]:
    """Creates `ca.crt` and `ca.key` in `directory`; refuses to overwrite unless `force`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = d / "ca.crt", d / "ca.key"
    if not force and (cert_path.exists() or key_path.exists()):
        raise IdentityError(f"{d}: a CA exists already (ca.crt/ca.key); --force replaces it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue(directory: str | Path, service: str, *, out: str | Path | None = None,
          days: int = 90) -> tuple[Path, Path]:
    """Signs a certificate for `service` with the CA in `directory`; writes
    `<service>.crt` (leaf then CA) and `<service>.key` to `out` (default: directory)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    try:
        ca_cert = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    except OSError as exc:
        raise IdentityError(f"{d}: no CA here ({exc.strerror}); run `mesh ca init` first") \
            from None
    except ValueError as exc:
        raise IdentityError(f"{d}: ca.crt/ca.key: not a PEM certificate and key: {exc}") \
            from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{d}/ca.key: expected an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(identity_uri(service)), x509.DNSName(service),
        ]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([
            ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    o = Path(out) if out is not None else d
    o.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = o / f"{service}.crt", o / f"{service}.key"
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                          + ca_cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# -- TLS contexts of the data plane (stdlib ssl only: no cryptography import here) -----


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """A listener's context: our identity, and client certificates required and checked
    against the mesh CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """An upstream's context: our identity as client certificate; the upstream's
    certificate checked against the mesh CA and, by hostname, its service name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_service(peercert: object) -> str | None:
    """The service name in a verified peer certificate (ssl's `getpeercert()` dict)."""
    if not isinstance(peercert, dict):
        return None
    prefix = identity_uri("")
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and isinstance(value, str) and value.startswith(prefix):
            return value[len(prefix):]
    return None


class TlsContexts:
    """Contexts built once per distinct TLS block (certificate files are read then),
    shared by every route that uses the block."""

    def __init__(self) -> None:
        self._client: dict[UpstreamTLS, ssl.SSLContext] = {}

    def client(self, tls: UpstreamTLS) -> ssl.SSLContext:
        ctx = self._client.get(tls)
        if ctx is None:
            ctx = self._client[tls] = client_context(tls.cert, tls.key, tls.ca)
        return ctx

    @staticmethod
    def server(tls: ListenerTLS) -> ssl.SSLContext:
        return server_context(tls.cert, tls.key, tls.ca)


def check_tls(config: MeshConfig, source: str) -> None:
    """Loads every certificate, key and CA the config names, so a bad file is refused
    with the config (a one-line MeshConfigError) instead of failing a connection."""
    for i, lc in enumerate(config.listeners):
        if lc.tls is not None:
            _try(server_context, lc.tls.cert, lc.tls.key, lc.tls.ca,
                 f"{source}: listeners.{i}.tls")
        for j, svc in enumerate(lc.services):
            for k, v in enumerate(svc.versions):
                if v.tls is not None:
                    _try(client_context, v.tls.cert, v.tls.key, v.tls.ca,
                         f"{source}: listeners.{i}.services.{j}.versions.{k}.tls")


def _try(build: Callable[[str, str, str], object], cert: str, key: str, ca: str,
         where: str) -> None:
    try:
        build(cert, key, ca)
    except (OSError, ssl.SSLError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise MeshConfigError(f"{where}: cannot load certificate, key or CA: {detail}") \
            from None
