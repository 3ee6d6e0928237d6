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

import logging
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["REDACTED", "RedactingFilter", "install_log_redaction", "redact"]

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
