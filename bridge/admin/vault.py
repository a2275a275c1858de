"""Encryption at rest for what users entrust to the bridge (IRC passwords, CertFP keys).

Why: the database is backed up, copied and read by more people than the bridge's admin, so a
password stored with `!storepass` must not be readable in it. Secrets are sealed with Fernet
(AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key that lives in its own file
(`[provisioning] key_file`, made by `ircbridge generate-key`), never in the database or in
config.ini. Losing the key file only loses the stored secrets: users store them again.

Thread: any thread (the key is read once, Fernet keeps no state): the admin lanes seal, the
admin startup thread opens what it loads, and `ircbridge generate-key` runs on the CLI's main
thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ..config.secretfile import readable_by_others, write_private

log = logging.getLogger(__name__)

PREFIX = "fernet1:"


class VaultError(Exception):
    """No usable key, or a sealed value that this key cannot open."""


def generate_key_file(path: Path, *, force: bool = False) -> Path:
    """Write a new random key to `path`, mode 0600 from its first byte; refuses to replace
    anything at `path` (a file, a symlink) unless `force`."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not force:
        raise VaultError(f"{path} already exists; replacing it would make every stored "
                         "password unreadable (use --force if that is what you want)")
    try:
        return write_private(path, Fernet.generate_key() + b"\n", replace=force)
    except FileExistsError as e:
        raise VaultError(f"{path} appeared while the key was written; not replaced") from e


def key_file_problem(path: Path) -> str | None:
    """Why the key file must not be used (readable by group or others), or None."""
    try:
        loose = readable_by_others(path)
    except OSError:
        return None  # reading it reports the problem
    if loose:
        return (f"the key file {path} is readable by group or other users; "
                f"run `chmod 600 {path}`")
    return None


class Vault:
    """Seals and opens short secrets with one Fernet key. Thread: any."""

    def __init__(self, key: bytes):
        try:
            self._fernet = Fernet(key.strip())
        except (ValueError, TypeError) as e:
            raise VaultError("the key file does not hold a Fernet key "
                             "(make one with `ircbridge generate-key`)") from e

    @classmethod
    def from_file(cls, path: Path) -> Vault:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise VaultError(f"cannot read the key file {path}: {e.strerror or e}") from e
        problem = key_file_problem(path)
        if problem:
            raise VaultError(problem)
        return cls(data)

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise VaultError("not a sealed value")
        try:
            return self._fernet.decrypt(sealed[len(PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as e:
            raise VaultError("a stored secret cannot be opened with this key file "
                             "(was the key replaced?)") from e


def load_vault(key_file: Path | None) -> Vault | None:
    """The vault for `[provisioning] key_file`, or None when no key file is configured."""
    if key_file is None:
        return None
    return Vault.from_file(key_file)


def make_client_certificate(common_name: str) -> tuple[str, str]:
    """A self-signed TLS client certificate for CertFP: (certificate PEM, private key PEM).

    RSA 2048 because every IRC daemon and services package accepts it; valid ten years,
    since NickServ only remembers the fingerprint.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "ircbridge")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return cert_pem, key_pem


def fingerprints(cert_pem: str) -> dict[str, str]:
    """SHA-256 and SHA-512 fingerprints (hex, lower case) of a PEM certificate's DER form."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    return {
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "sha512": cert.fingerprint(hashes.SHA512()).hex(),
    }
