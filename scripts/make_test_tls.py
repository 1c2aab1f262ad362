#!/usr/bin/env python3
"""Generates the TEST-ONLY TLS certificates under testdata/tls/ (see its README.md).

Run once; the PEM files are committed and the tests read them: nothing runs this at test time.
Needs Python's `cryptography` package (any recent version; 48.0.0 made the committed files).

    python3 scripts/make_test_tls.py [OUT_DIR]    # default testdata/tls

Writes:
  ca.pem                       test CA (ECDSA P-256), self-signed; its key is not kept
  server.pem, server.key       leaf for 127.0.0.1 and localhost (ECDSA P-256, key in PKCS#8)
  server-sec1.key              the same key as server.key, in SEC1 (`EC PRIVATE KEY`)
  other.pem, other.key         leaf for other.invalid only (RSA 2048, key in PKCS#1 `RSA PRIVATE KEY`),
                               signed by the same CA: a certificate for another name
"""

import datetime
import ipaddress
import pathlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2075, 1, 1, tzinfo=datetime.timezone.utc)


def name(cn):
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cordon tests (TEST ONLY)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("Cordon test CA (TEST ONLY)"))
        .issuer_name(name("Cordon test CA (TEST ONLY)"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(ca_key, ca_cert, key, cn, sans, rsa_key):
    return (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=rsa_key,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "testdata/tls")
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca()
    (out / "ca.pem").write_bytes(pem_cert(ca_cert))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server = make_leaf(
        ca_key,
        ca_cert,
        server_key,
        "127.0.0.1",
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        rsa_key=False,
    )
    (out / "server.pem").write_bytes(pem_cert(server))
    (out / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (out / "server-sec1.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = make_leaf(
        ca_key,
        ca_cert,
        other_key,
        "other.invalid",
        [x509.DNSName("other.invalid")],
        rsa_key=True,
    )
    (out / "other.pem").write_bytes(pem_cert(other))
    (out / "other.key").write_bytes(
        other_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    print(f"wrote test-only TLS files to {out}")


if __name__ == "__main__":
    main()
