"""The outlet's certificate authority: TLS on the outlet LAN.

``provision`` creates one CA per outlet and issues from it the server
certificates for Mosquitto's TLS listener (8883) and the gateway's HTTPS.
Devices, handhelds and the gateway trust that CA alone (never the system
store), so a certificate from any other CA is refused even if it names the
right host.

Keys are EC P-256 (mbedTLS on the ESP32 and the unix port verifies ECDSA
P-256 in a fraction of the time RSA-2048 takes, and the handshake's key
exchange is ECDHE on the same curve). Every key file is written 0600 before
it holds a byte of key. The CA's key stays with ``provision`` (root, 0600):
no service reads it. Re-running keeps an existing CA and server certificates
that still cover the configured names, so devices already carrying the CA
keep working.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS = 20  # an outlet box outlives a short-lived CA; the key never leaves it
LEAF_DAYS = 825  # the longest server lifetime clients commonly accept


@dataclass(frozen=True)
class ServerCert:
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    # Created 0600, so the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    path.chmod(0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Valid from 2000: a device whose clock reset after a power loss (an RTC at
# 2000-01-01) takes its trusted time from the gateway over this very TLS
# connection, so a certificate "not yet valid" on its clock would lock it
# out for good. Only provisioning ever signs with the outlet CA, so an early
# start costs nothing; the end of validity still expires old certificates.
NOT_BEFORE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def ensure_ca(directory: Path, outlet: str) -> tuple[Path, Path]:
    """The outlet CA's (cert, key) in ``directory``: kept if present, else made."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "postedge"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"postedge outlet CA {outlet}")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _san(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _covers(cert_path: Path, ca_cert: x509.Certificate, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    have = set(san)
    return (cert.issuer == ca_cert.subject and set(_san(names)) <= have
            and cert.not_valid_after_utc > _now() + dt.timedelta(days=30))


def issue_server(ca_cert_path: Path, ca_key_path: Path, cert_path: Path, key_path: Path,
                 names: list[str]) -> ServerCert:
    """A server certificate for ``names`` (host names or IP addresses; the
    first is the common name), signed by the outlet CA. Kept when the one
    already there is from this CA, covers every name and is not about to
    expire."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    if key_path.exists() and _covers(cert_path, ca_cert, names):
        return ServerCert(cert_path, key_path)
    ca_key = _load_key(ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(key_path, key)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ServerCert(cert_path, key_path)


@dataclass(frozen=True)
class OutletPki:
    """What a test or the simulator needs for a TLS outlet broker."""

    ca: Path
    ca_key: Path
    server: ServerCert

    @property
    def ca_pem(self) -> str:
        return self.ca.read_text()


def make_outlet_pki(directory: Path, outlet: str = "o1",
                    names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> OutletPki:
    """A CA and one server certificate in ``directory`` (tests, bench, simulator)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = ensure_ca(d, outlet)
    return OutletPki(ca, ca_key, issue_server(ca, ca_key, d / "server.pem", d / "server.key", list(names)))
