"""Certificates and keys of the local cluster, made locally with `cryptography`.

One cluster CA signs every serving and client certificate. Identities follow the Kubernetes
conventions (CN = user, O = groups), so RBAC sees the same users a kubeadm cluster would have.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class CertificateRequest:
    """What one certificate says: who it is and what it may be used for."""

    name: str  # file stem under the pki folder
    common_name: str
    organizations: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterPKI:
    """Paths of the files a running cluster reads."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def service_account_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def service_account_public_key(self) -> Path:
        return self.root / "sa.pub"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _create_ca(pki: ClusterPKI, now: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "optimodel-local-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + 10 * _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(pki.ca_key, _pem_key(key))
    pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(pki: ClusterPKI, request: CertificateRequest, now: dt.datetime) -> None:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in request.organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, request.common_name))
    usages = []
    if request.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if request.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in request.dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in request.ip_addresses]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    _write_private(pki.key(request.name), _pem_key(key))
    pki.cert(request.name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _create_service_account_keys(pki: ClusterPKI) -> None:
    # The API server signs service-account tokens with RS256 by default.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(pki.service_account_key, _pem_key(key))
    pki.service_account_public_key.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _is_current(cert_path: Path, now: dt.datetime) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.not_valid_after_utc - now > dt.timedelta(days=1)


def _says_what_is_asked(cert_path: Path, request: CertificateRequest) -> bool:
    """Whether the certificate on disk names the requested subject alternative names (a newer release of
    this code may ask for more, e.g. the API server's address on the pod bridge)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = set(names.get_values_for_type(x509.DNSName))
        ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        dns, ips = set(), set()
    return dns == set(request.dns_names) and ips == set(request.ip_addresses)


def ensure_pki(root: Path, requests: list[CertificateRequest]) -> ClusterPKI:
    """Create whatever is missing, about to expire or naming other addresses than requested; keep the rest
    (so restarts keep trust)."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    pki = ClusterPKI(root)
    now = dt.datetime.now(dt.timezone.utc)
    if not (_is_current(pki.ca_cert, now) and pki.ca_key.exists()):
        _create_ca(pki, now)
        for stale in root.glob("*.crt"):
            if stale != pki.ca_cert:
                stale.unlink()
    if not (pki.service_account_key.exists() and pki.service_account_public_key.exists()):
        _create_service_account_keys(pki)
    for request in requests:
        if not (
            _is_current(pki.cert(request.name), now)
            and pki.key(request.name).exists()
            and _says_what_is_asked(pki.cert(request.name), request)
        ):
            _issue(pki, request, now)
    return pki
