"""Remove secrets from text before it reaches a log, an error message or a repr.

What counts as a secret here is what azrun and the SDKs under it handle: SAS signatures
(``sig=``, also URL-encoded as ``sig%3D``), bearer tokens, anything shaped like a JWT, OAuth
token fields in JSON / form / repr text, the App Service ``X-IDENTITY-HEADER`` value, storage
account keys in connection strings, and client secrets. The patterns err on the side of removing
too much: a redacted log line is a nuisance, a leaked token is an incident.

:class:`RedactingFilter` applies :func:`redact` to log records (message, arguments, exception and
stack text); :func:`install_log_redaction` puts it on the handlers of the loggers azrun and the
Azure SDK write to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "MASK",
    "REDACTED",
    "ByteMasker",
    "RedactingFilter",
    "SecretFingerprints",
    "install_log_redaction",
    "redact",
    "secret_fingerprints",
]

REDACTED: Final = "REDACTED"

# Value characters: stop at whitespace, quotes and the delimiters that end a value in URLs,
# query strings, JSON, reprs and connection strings.
_VALUE = r"""[^\s&"'<>,;}\]\)]+"""

# Field names whose value is a secret wherever they appear (JSON, form bodies, headers, env
# dumps, connection strings). "secret" alone (the legacy MSI header) only counts as a JSON key.
_SECRET_KEYS = (
    "access_token|refresh_token|id_token|client_secret|client_assertion|password"
    "|x-identity-header|identity_header|msi_secret|accountkey|account_key|sharedaccesskey"
)

_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # SAS signature, plain (sig=...) or URL-encoded once (sig%3D...%26) or twice (sig%253D).
    # A letter before "sig" means another word (e.g. "xsig="); a digit may be the end of "%26".
    (re.compile(r"(?i)((?<![A-Za-z_])sig(?:=|%3D|%253D))((?:(?!%26|%2526)[^\s&\"'<>,;])+)"), rf"\g<1>{REDACTED}"),
    # Authorization header values of any scheme (Bearer, Basic for Arc, PoP).
    (
        re.compile(r"""(?i)(\bauthorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|pop)\s+)?)[^\s"',;]+"""),
        rf"\g<1>{REDACTED}",
    ),
    # "Bearer <token>" anywhere else; 16+ characters so prose such as "Bearer token" survives.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{16,}=*"), rf"\g<1>{REDACTED}"),
    # Anything shaped like a JWT: base64url header starting '{"' (eyJ), a payload, an optional
    # signature (unsigned tokens end with a bare dot).
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), f"{REDACTED}-JWT"),
    # Secret fields in JSON or Python reprs: "access_token": "..." / 'client_secret': '...'.
    (
        re.compile(rf"""(?i)(["']?(?:{_SECRET_KEYS}|secret)["']?\s*:\s*["'])[^"']*(["'])"""),
        rf"\g<1>{REDACTED}\g<2>",
    ),
    # The same fields as form / query / env / header / connection-string text: key=value, key: value.
    (re.compile(rf"(?i)(\b(?:{_SECRET_KEYS})\s*[=:]\s*)" + _VALUE), rf"\g<1>{REDACTED}"),
)


def redact(text: str) -> str:
    """Return ``text`` with every secret azrun knows the shape of replaced by ``REDACTED``."""
    if not text:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record in place and never drops one.

    The message is rendered with its arguments first, so a secret passed as an ``%s`` argument
    is caught too; exception and stack text are rendered and redacted the same way.
    """

    _formatter: Final = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` and let it through."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, redacted
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_DEFAULT_LOGGERS: Final = ("", "azure", "azrun", "msal", "urllib3")


def install_log_redaction(logger_names: Iterable[str] = _DEFAULT_LOGGERS) -> RedactingFilter:
    """Add one :class:`RedactingFilter` to every handler of the named loggers (root is ``""``).

    A filter on a logger only sees records made by that exact logger, while a handler's filter
    sees everything the handler emits, including records propagated from ``azure.*``; hence the
    handlers. Call it after logging is configured; calling it again adds nothing twice.
    """
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(_FILTER)
    return _FILTER


_FILTER: Final = RedactingFilter()  # stateless, so one instance serves every handler


# -- secrets a script echoes ---------------------------------------------------------------------
#: What replaces a protected value in output, live (the fleet's Scrubber) and in ``azrun logs``.
MASK: Final = "***"
#: Values shorter than this are not masked (nor by the live Scrubber): "1" or "ok" would mask
#: half the output and hide nothing.
MIN_SECRET_LEN: Final = 3


@dataclass(frozen=True, slots=True)
class SecretFingerprints:
    """Salted SHA-256 fingerprints of a run's protected values, so output read back later
    (``azrun logs``, ``--download``) is masked like the live stream without storing a secret.

    The ledger keeps ``{"salt", "sha256": [[byte length, hex digest], ...]}`` (:meth:`to_dict`),
    never a value. A random 16-byte salt per run defeats precomputed tables, but a fingerprint
    still lets whoever holds the ledger test guesses offline, as any password hash does: a
    random token is safe, a dictionary word is not. Each value's byte length is stored too
    (the masker needs it). ``repr`` shows only how many there are.
    """

    salt: bytes = field(repr=False)
    entries: frozenset[tuple[int, str]] = field(repr=False)

    def __repr__(self) -> str:
        return f"SecretFingerprints({len(self.entries)} values)"

    @classmethod
    def of(cls, values: Iterable[str | None], *, salt: bytes | None = None) -> SecretFingerprints:
        salt = salt if salt is not None else os.urandom(16)
        encoded = {v.encode("utf-8") for v in values if v and len(v) >= MIN_SECRET_LEN}
        return cls(salt, frozenset((len(b), _digest(salt, b)) for b in encoded))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {"salt": self.salt.hex(), "sha256": sorted([n, h] for n, h in self.entries)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SecretFingerprints:
        """The fingerprints a ledger record holds (none when ``data`` is empty or malformed)."""
        try:
            salt = bytes.fromhex(str((data or {})["salt"]))
            entries = frozenset((int(n), str(h)) for n, h in (data or {})["sha256"])
        except (KeyError, TypeError, ValueError):
            return cls(b"", frozenset())
        return cls(salt, entries)

    def masker(self) -> ByteMasker:
        return ByteMasker(self)


def _digest(salt: bytes, value: bytes) -> str:
    return hashlib.sha256(salt + value).hexdigest()


class ByteMasker:
    """Replaces every byte string whose fingerprint matches with :data:`MASK`, in a stream of
    chunks (a value split across two chunks is still found).

    Every window of each fingerprinted length is hashed, so the cost is one SHA-256 per byte
    and distinct length (a few seconds per MB and value length in CPython); a run without
    protected values costs nothing.
    """

    def __init__(self, fingerprints: SecretFingerprints) -> None:
        self._salted = hashlib.sha256(fingerprints.salt)
        self._digests = {bytes.fromhex(h) for _, h in fingerprints.entries}
        self._lengths = sorted({n for n, _ in fingerprints.entries}, reverse=True)  # longest first
        self._carry = b""
        self.masked = 0  # values replaced so far

    def __repr__(self) -> str:
        return f"ByteMasker(lengths={len(self._lengths)}, masked={self.masked})"

    def feed(self, data: bytes) -> bytes:
        """Masked bytes of ``carry + data`` that no later chunk can change; keeps the rest."""
        if not self._lengths:
            return data
        buffer = self._carry + data
        out, done = self._scan(buffer, len(buffer) - (self._lengths[0] - 1))
        self._carry = buffer[done:]
        return out

    def flush(self) -> bytes:
        """The end of the stream: mask and return what is held back."""
        if not self._lengths:
            return b""
        out, done = self._scan(self._carry, len(self._carry))
        rest, self._carry = self._carry[done:], b""
        return out + rest

    def _scan(self, buffer: bytes, stop: int) -> tuple[bytes, int]:
        out = bytearray()
        i, start = 0, 0
        end = len(buffer)
        mask = MASK.encode()
        while i < stop:
            for n in self._lengths:
                if i + n <= end:
                    h = self._salted.copy()
                    h.update(buffer[i : i + n])
                    if h.digest() in self._digests:
                        out += buffer[start:i]
                        out += mask
                        self.masked += 1
                        i += n
                        start = i
                        break
            else:
                i += 1
        if start < min(i, end):
            out += buffer[start : min(i, end)]
            start = min(i, end)
        return bytes(out), start


#: The key of a run's fingerprints in its ledger record's options.
FINGERPRINTS_KEY: Final = "secret_fingerprints"


def secret_fingerprints(spec: Any) -> dict[str, Any]:
    """``{FINGERPRINTS_KEY: ...}`` for a RunSpec's protected values and run-as password, to store
    with the run (``{}`` when it has none)."""
    values = [v for _, v in getattr(spec, "protected_parameters", ())]
    values.append(getattr(spec, "run_as_password", None))
    found = SecretFingerprints.of(values)
    return {FINGERPRINTS_KEY: found.to_dict()} if found else {}
