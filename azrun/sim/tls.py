"""TLS for the local Azure: one throw-away CA per start, one server certificate for loopback.

ARM and Azurite must speak HTTPS (bearer tokens over plain HTTP are refused by azure-core and
by Azurite's ``--oauth basic``), so the simulator mints a CA with trustme at start and writes:

- ``ca.pem``   the CA certificate: what clients trust (``AZRUN_CA_BUNDLE``, ``connection_verify``);
- ``cert.pem`` the server certificate (for 127.0.0.1, localhost and ::1) followed by its chain;
- ``key.pem``  its private key (0600).

A fresh CA each start means nothing long-lived can be trusted by accident.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of the CA bundle and the server certificate/key written by ``make_tls``."""

    ca_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for aiohttp servers."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts only the local CA (for the simulator's own HTTP calls)."""
        return ssl.create_default_context(cafile=str(self.ca_path))


def make_tls(directory: Path) -> TlsFiles:
    """Generate a CA and a loopback server certificate under ``directory``."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="azrun local Azure")
    cert = ca.issue_cert(*SERVER_NAMES)
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca_path))
    with open(files.cert_path, "wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())
    fd = os.open(files.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(cert.private_key_pem.bytes())
    return files
