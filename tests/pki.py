"""Certificates for TLS tests, made on the spot: a test CA, a server certificate for 127.0.0.1, a client certificate,
and a self-signed stranger the CA never signed."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def issue(name: str, issuer=None, ca: bool = False, ip: str | None = None):
    """A certificate and its key; signed by `issuer` (a (certificate, key) pair), else self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def write(directory: Path, name: str, cert, key) -> tuple[str, str]:
    """The PEM files of a certificate and its key: (certificate path, key path)."""
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def make_pki(directory: Path) -> dict:
    """{"ca": CA path, "server" / "client" / "stranger": (certificate path, key path)}."""
    ca = issue("test CA", ca=True)
    return {"ca": write(directory, "ca", *ca)[0],
            "server": write(directory, "server", *issue("server", ca, ip="127.0.0.1")),
            "client": write(directory, "client", *issue("client", ca)),
            "stranger": write(directory, "stranger", *issue("stranger", ip="127.0.0.1"))}
