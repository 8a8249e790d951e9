"""A private CA and one certificate for the services' gRPC TLS (docker-compose.tls.yml, deploy/k8s/overlays/tls).

    python deploy/gen_tls.py [--out deploy/secrets/tls] [--namespace default] [--name NAME ...] [--days 365]

Writes ca.crt and ca.key (the CA: keep ca.key off the servers), tls.crt and tls.key (the services' certificate,
valid for serving and as a client certificate under mutual TLS). The certificate names every address the platform's
clients dial: the compose and Kubernetes service names, the model worker pods by their namespaced names, localhost
and 127.0.0.1 (compose's model workers register under container IDs, which it cannot name: their callers check
`model-worker` instead, their `*_WORKER_TLS_SERVER_NAME`). For a real deployment, issue the certificates from the
operator's PKI or cert-manager instead (same file names: a cert-manager Certificate's Secret has exactly tls.crt,
tls.key and ca.crt). An existing tls.key is never replaced.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

NAMES = ("model-worker", "model-worker-pro", "jobs", "agent", "localhost")


def pod_names(namespace: str) -> list[str]:
    """Each model worker pod by a namespaced name (a StatefulSet pod under its headless Service, an LWS leader under
    its group's): gRPC matches a wildcard only where a dot follows the label it stands for, so
    `*.model-worker-headless` would never match `model-worker-0.model-worker-headless`. A worker serving TLS must
    advertise such a name to the registry."""
    return [f"*.model-worker-headless.{namespace}.svc", f"*.model-worker-pro.{namespace}"]


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def issue(out: Path, names: list[str], days: int) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = {"not_valid_before": now - datetime.timedelta(minutes=5),
                "not_valid_after": now + datetime.timedelta(days=days)}

    def builder(subject: str, issuer: str, public_key) -> x509.CertificateBuilder:
        return x509.CertificateBuilder(
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]),
            issuer_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]),
            public_key=public_key, serial_number=x509.random_serial_number(), **validity)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (builder("dsv4 services CA", "dsv4 services CA", ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (builder(names[0], "dsv4 services CA", key.public_key())
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write(out / "ca.key", _pem_key(ca_key), 0o600)
    _write(out / "ca.crt", ca.public_bytes(pem), 0o644)
    # 0644 inside a 0700 directory: docker compose mounts the single file for the containers' non-root user.
    _write(out / "tls.key", _pem_key(key), 0o644)
    _write(out / "tls.crt", cert.public_bytes(pem), 0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gen_tls.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("deploy/secrets/tls"))
    parser.add_argument("--name", action="append", default=[], help="one more DNS name the certificate is valid for "
                        "(repeatable; e.g. the cluster's FQDNs, jobs.NAMESPACE.svc)")
    parser.add_argument("--namespace", default="default", help="the Kubernetes namespace of the deployment")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    if (args.out / "tls.key").exists():
        print(f"{args.out}/tls.key exists: not replaced (move it away to issue a new certificate)", file=sys.stderr)
        return 1
    issue(args.out, [*NAMES, *pod_names(args.namespace), *args.name], args.days)
    print(f"{args.out}: ca.crt, ca.key, tls.crt, tls.key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
