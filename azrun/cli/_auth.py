"""``azrun auth``: which environment, identity, tenant and subscriptions azrun sees here.

It fetches a management token through the same process credential every client uses, so a
green ``azrun auth`` means runs can authenticate. The token itself is never printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

import typer

from azrun.cli import app
from azrun.cli._options import OutputFormat, OutputOpt

if TYPE_CHECKING:
    from azrun.auth import ProcessCredential, SubscriptionInfo
    from azrun.cloud import Cloud

AUTH_EXAMPLES = """
Examples:

  azrun auth                      # environment, identity, tenant, token expiry, subscriptions
  azrun auth --json               # the same as JSON (never the token)
  azrun auth --auth cli           # force the Azure CLI login at a terminal
  azrun auth --client-id <guid>   # a user-assigned managed identity
"""


def _list_subscriptions(credential: ProcessCredential, cloud: Cloud) -> Iterable[SubscriptionInfo]:
    from azrun.auth import SubscriptionInfo
    from azrun.azerrors import map_azure_errors
    from azrun.clients import ClientFactory

    client = ClientFactory(cloud=cloud, throttle=None).subscriptions(credential)
    with map_azure_errors("listing subscriptions"):
        return [
            SubscriptionInfo(
                subscription_id=str(s.subscription_id),
                display_name=s.display_name,
                state=str(s.state) if s.state else None,
                tenant_id=getattr(s, "tenant_id", None),
            )
            for s in client.subscriptions.list()
        ]


@app.command("auth", epilog=AUTH_EXAMPLES)
def auth_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (never the token).")] = False,
    output: OutputOpt = OutputFormat.TABLE,
    auth: Annotated[
        str | None, typer.Option("--auth", help="auto | msi | cli | device | interactive | env")
    ] = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="User-assigned identity client id.")] = None,
    object_id: Annotated[str | None, typer.Option("--object-id", help="User-assigned identity object id.")] = None,
    identity_resource_id: Annotated[
        str | None, typer.Option("--identity-resource-id", help="User-assigned identity ARM resource id.")
    ] = None,
) -> None:
    """Show the environment, identity, tenant, token expiry and visible subscriptions."""
    from azrun import auth as auth_mod
    from azrun.cloud import Cloud
    from azrun.config import Settings

    settings = Settings.load(
        flags={
            "auth": auth,
            "client_id": client_id,
            "object_id": object_id,
            "identity_resource_id": identity_resource_id,
        }
    )
    selector = auth_mod.IdentitySelector(
        client_id=settings.get("client_id") or None,
        object_id=settings.get("object_id") or None,
        resource_id=settings.get("identity_resource_id") or None,
    )
    credential = auth_mod.get_credential(
        None if selector.is_system_assigned else selector,
        cloud=Cloud.from_env(os.environ),
        mode=str(settings.get("auth") or "auto"),  # type: ignore[arg-type]
    )
    info = auth_mod.describe(credential, list_subscriptions=_list_subscriptions)
    if as_json or output is not OutputFormat.TABLE:
        typer.echo(info.to_json())
        return
    width = max(len(label) for label, _ in info.rows())
    for label, value in info.rows():
        typer.echo(f"{label:<{width}}  {value}")
