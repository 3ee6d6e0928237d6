"""``azrun auth``: which environment, identity, tenant and subscriptions azrun sees here.

It fetches a management token through the same process credential every client uses, so a
green ``azrun auth`` means runs can authenticate. The token itself is never printed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

import typer

from azrun.cli._format import OutputFormat, camel_keys, emit
from azrun.cli._globals import current, with_global_options

if TYPE_CHECKING:
    from azrun.auth import ProcessCredential, SubscriptionInfo
    from azrun.cloud import Cloud

AUTH_EXAMPLES = """
Examples:

  azrun auth                      # environment, identity, tenant, token expiry, subscriptions
  azrun auth -o json              # the same as JSON (never the token)
  azrun auth --query tenantId -o tsv
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


AsJsonOpt = Annotated[bool, typer.Option("--json", hidden=True, help="Same as -o json.")]
AuthModeOpt = Annotated[str | None, typer.Option("--auth", help="auto | msi | cli | device | interactive | env")]
ClientIdOpt = Annotated[str | None, typer.Option("--client-id", help="User-assigned identity client id.")]
ObjectIdOpt = Annotated[str | None, typer.Option("--object-id", help="User-assigned identity object id.")]
ResourceIdOpt = Annotated[
    str | None, typer.Option("--identity-resource-id", help="User-assigned identity ARM resource id.")
]


def register(app: typer.Typer) -> None:
    """``azrun auth`` and its spelled-out form ``azrun auth check`` (the form error hints name)."""
    group = typer.Typer(help="Show the identity, tenant and subscriptions azrun sees here.", epilog=AUTH_EXAMPLES)
    group.callback(invoke_without_command=True, epilog=AUTH_EXAMPLES)(with_global_options(auth_default))
    group.command("check", epilog=AUTH_EXAMPLES)(with_global_options(auth_command))
    app.add_typer(group, name="auth")


def auth_default(
    ctx: typer.Context,
    as_json: AsJsonOpt = False,
    auth: AuthModeOpt = None,
    client_id: ClientIdOpt = None,
    object_id: ObjectIdOpt = None,
    identity_resource_id: ResourceIdOpt = None,
) -> None:
    """Show the environment, identity, tenant, token expiry and visible subscriptions."""
    if ctx.invoked_subcommand is None:
        auth_command(as_json, auth, client_id, object_id, identity_resource_id)


def auth_command(
    as_json: AsJsonOpt = False,
    auth: AuthModeOpt = None,
    client_id: ClientIdOpt = None,
    object_id: ObjectIdOpt = None,
    identity_resource_id: ResourceIdOpt = None,
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
    options = current()
    fmt = OutputFormat.JSON if as_json and not options.output.machine_readable else options.output
    rows = info.rows()
    width = max(len(label) for label, _ in rows)
    emit(camel_keys(info.to_dict()), fmt, sys.stdout, query=options.query, color=not options.colors_off,
         table=lambda _: "\n".join(f"{label:<{width}}  {value}" for label, value in rows))
