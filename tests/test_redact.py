"""redact(): every secret shape azrun handles disappears; ordinary text survives."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest

from azrun.auth import clear_process_cache
from azrun.redact import RedactingFilter, install_log_redaction, redact


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_ENDPOINT")):
            monkeypatch.delenv(key, raising=False)
    clear_process_cache()

JWT = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tIn0."
SIGNED_JWT = JWT + "c2lnbmF0dXJlLXBhcnQ"
SIG = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA%3D%3D"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"https://acct.blob.core.windows.net/c/b.log?sv=2025-11-05&sr=b&sp=racw&sig={SIG}&se=2030", SIG),
        (f"PUT /c/b?comp=appendblock&sig={SIG}", SIG),
        (f"url=https%3A%2F%2Facct%2Fc%2Fb%3Fsv%3D1%26sig%3D{SIG}%26se%3D2030", SIG),
        (f"double%253Fsv%253D1%2526sig%253D{SIG}%2526se", SIG),
        (f"'outputBlobUri': 'https://a/c/b?sig={SIG}'", SIG),
        (f"Authorization: Bearer {SIGNED_JWT}", SIGNED_JWT),
        ("authorization: Bearer opaque-token-value-1234567890", "opaque-token-value-1234567890"),
        ("Authorization: Basic c2VjcmV0LWtleS1maWxlLWNvbnRlbnQ=", "c2VjcmV0LWtleS1maWxlLWNvbnRlbnQ="),
        (f"sent bearer {JWT} to ARM", JWT),
        (f"token {JWT} in prose", JWT),
        (f"token {SIGNED_JWT}", SIGNED_JWT),
        ('{"access_token": "opaque-secret-123", "expires_in": "3599"}', "opaque-secret-123"),
        ("{'access_token': 'opaque-secret-123', 'expires_in': 3599}", "opaque-secret-123"),
        ('{"refresh_token":"rt-secret-999"}', "rt-secret-999"),
        ("grant_type=client_credentials&client_secret=s3cr3t-Value~x&scope=a", "s3cr3t-Value~x"),
        ("access_token=opaque-secret-123&token_type=Bearer", "opaque-secret-123"),
        ("X-IDENTITY-HEADER: hdr-Secret-Value-42", "hdr-Secret-Value-42"),
        ("{'X-IDENTITY-HEADER': 'hdr-Secret-Value-42', 'Metadata': 'true'}", "hdr-Secret-Value-42"),
        ("IDENTITY_HEADER=hdr-Secret-Value-42", "hdr-Secret-Value-42"),
        ('{"secret": "msi-secret-value"}', "msi-secret-value"),
        (
            "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFl/K1SZFPTOtr/KBHBeksoGMGw==;"
            "BlobEndpoint=https://127.0.0.1:10000/devstoreaccount1;",
            "Eby8vdM02xNOcqFl/K1SZFPTOtr/KBHBeksoGMGw==",
        ),
        ("Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=abcDEF123+/=;", "abcDEF123+/="),
        ("SharedAccessSignature=sv=2025&sig=abc123def&se=1", "abc123def"),
    ],
)
def test_secret_is_removed(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "REDACTED" in out


def test_sas_keeps_the_rest_of_the_url() -> None:
    out = redact(f"https://a.blob.core.windows.net/c/b?sv=2025-11-05&sp=racw&sig={SIG}&se=2030-01-01")
    assert out == "https://a.blob.core.windows.net/c/b?sv=2025-11-05&sp=racw&sig=REDACTED&se=2030-01-01"
    encoded = redact(f"x%3Fsv%3D1%26sig%3D{SIG}%26se%3D2030")
    assert encoded == "x%3Fsv%3D1%26sig%3DREDACTED%26se%3D2030"


def test_json_shape_is_kept() -> None:
    assert redact('{"access_token": "abc", "expires_in": "3599"}') == '{"access_token": "REDACTED", "expires_in": "3599"}'


@pytest.mark.parametrize(
    "text",
    [
        "IMDS answered 400 (invalid_request: Identity not found) after 1 attempt",
        "the Bearer token policy refreshes early",
        "config=1 design=2 signal=3",
        "https://management.azure.com/subscriptions/0000/resourceGroups/rg?api-version=2024-11-01",
        "",
    ],
)
def test_ordinary_text_survives(text: str) -> None:
    assert redact(text) == text


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("azure.test_redact")
    parent = logging.getLogger("azure")
    parent.addHandler(handler)
    old = parent.level
    parent.setLevel(logging.DEBUG)
    try:
        yield logger, stream
    finally:
        parent.removeHandler(handler)
        parent.setLevel(old)


def test_install_puts_the_filter_on_handlers_and_catches_propagated_records(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    install_log_redaction()
    install_log_redaction()  # idempotent
    (handler,) = [h for h in logging.getLogger("azure").handlers if isinstance(h, logging.StreamHandler)
                  and h.stream is stream]
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    logger.debug("Request URL: %s", f"https://a/c/b?sig={SIG}")
    logger.debug("headers %r", {"Authorization": f"Bearer {SIGNED_JWT}", "X-IDENTITY-HEADER": "hdr-Secret-Value-42"})
    try:
        raise ValueError(f"token was {JWT}")
    except ValueError:
        logger.exception("failed with %s", "access_token=opaque-secret-123")
    text = stream.getvalue()
    for secret in (SIG, SIGNED_JWT, JWT, "hdr-Secret-Value-42", "opaque-secret-123"):
        assert secret not in text
    assert "Request URL: https://a/c/b?sig=REDACTED" in text
    assert "ValueError" in text  # the traceback is kept, redacted


def test_filter_survives_a_broken_format_string() -> None:
    record = logging.LogRecord("azure", logging.DEBUG, __file__, 1, "bad %d", ("access_token=zzz",), None)
    assert RedactingFilter().filter(record)
    assert "zzz" not in record.getMessage()
