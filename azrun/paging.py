"""Raw ARM paging through an SDK client's pipeline: the REST JSON of each page, following
``nextLink``.

The SDK glue (:class:`azrun.clients.ClientFactory`) gives the clients; this reads a listing
through one of them with ``send_request`` (the SDKs' documented escape hatch), so every page goes
through the client's credential, throttle, retries and CA, and comes back as plain JSON rather
than SDK models: their deserialisation costs milliseconds per VM, which dominated selecting from
a few thousand machines, and azrun reads REST shapes anyway. Errors leave as azure-core
exceptions (401 -> ``ClientAuthenticationError``, other non-200 -> ``HttpResponseError`` with ARM's
error parsed); callers translate them with :mod:`azrun.azerrors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Listing", "PageReader", "read_pages"]


@dataclass(frozen=True, slots=True)
class Listing:
    """One paged ARM GET: which client's pipeline, the first page's path and query, error context."""

    client: Any  # an aio management client from ClientFactory (its pipeline: auth, throttle, retry, CA)
    path: str
    params: dict[str, str]
    what: str
    subscription: str | None
    action: str


#: Reads one paged listing: yields each page's items (one request per page).
PageReader = Callable[["Listing"], AsyncIterator[list[dict[str, Any]]]]


async def read_pages(listing: Listing) -> AsyncIterator[list[dict[str, Any]]]:
    """Follow ``nextLink`` through the client's pipeline, yielding each page's ``value`` as JSON.

    The list is read as plain JSON through ``send_request`` (the SDKs' documented escape hatch)
    rather than the operation groups: their model deserialisation costs milliseconds per VM,
    which dominated selecting from a few thousand machines, and azrun reads REST shapes anyway.
    """
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.exceptions import ARMErrorFormat

    url: str | None = listing.path
    params: dict[str, str] | None = listing.params
    while url:
        response = await listing.client.send_request(HttpRequest("GET", url, params=params))
        if response.status_code != 200:
            error = ClientAuthenticationError if response.status_code == 401 else HttpResponseError
            raise error(response=response, error_format=ARMErrorFormat)
        body = response.json()
        yield [item for item in body.get("value") or () if isinstance(item, dict)]
        url, params = body.get("nextLink") or None, None

