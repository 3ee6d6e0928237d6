"""The report as one self-contained HTML page: the template (CSS and JS inline, no network) with the
report's data embedded as JSON. Every text reaches the page through ``textContent``, never as
markup, so a script's output cannot inject anything into the page.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from importlib import resources

from azrun.report._data import ReportData

__all__ = ["render_html"]

_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("azrun.report").joinpath("template.html").read_text(encoding="utf-8")


def embed_json(value: object) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.translate(_JSON_ESCAPES)


def render_html(data: ReportData) -> str:
    """The whole page for ``data``."""
    page = _template()
    return page.replace("__TITLE__", html.escape(data.run_id)).replace("__DATA__", embed_json(data.to_json()))
