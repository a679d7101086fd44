"""TLS for listeners and clients: contexts, self-signed certificates, peer names."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from mxflow.mail import TlsInfo


def generate_self_signed(
    cert: Path, key: Path, hostname: str, *, ips: tuple[str, ...] = ()
) -> None:
    """Write a self-signed certificate for `hostname` (and `ips`) with its key (mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(hostname)]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    key_tmp = key.with_name(f".{key.name}.{os.getpid()}.tmp")
    cert_tmp = cert.with_name(f".{cert.name}.{os.getpid()}.tmp")
    fd = os.open(key_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_tmp.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    # key first, then cert: a reader that finds the cert finds its key
    os.replace(key_tmp, key)
    os.replace(cert_tmp, cert)


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context; with `client_ca`, clients are asked (not forced) for a certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def tls_info(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsInfo | None:
    """Version, cipher and verified peer certificate names of an established TLS session."""
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    names: list[str] = []
    try:
        peer = ssl_object.getpeercert()
    except ValueError:
        peer = None
    if peer:
        for alt in peer.get("subjectAltName", ()):
            if alt[0] == "DNS" and isinstance(alt[1], str):
                names.append(alt[1].lower())
        for rdn in peer.get("subject", ()):
            for pair in rdn:
                if pair[0] == "commonName" and isinstance(pair[1], str):
                    names.append(pair[1].lower())
    return TlsInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        bits=cipher[2] if cipher else 0,
        peer_cert_names=tuple(dict.fromkeys(names)),
    )
