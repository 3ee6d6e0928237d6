"""Options shared by commands that pick machines (``targets``, ``run``) or print results.

Each option is an ``Annotated`` alias, so a command declares ``tag: TagOpt = None`` and every
command spells, documents and validates the selector the same way; :func:`selector_from_options`
turns the values into a :class:`azrun.targets.Selector` (raising ``ConfigError`` with a hint for
bad syntax such as ``--tag =x`` or ``--os bsd``).

``--os`` is a plain string validated by the selector rather than a click choice, so a typo
gets azrun's one-line error and hint instead of a usage dump.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from azrun.clients import ClientFactory
    from azrun.config import Settings
    from azrun.targets import Selector

SELECT = "Machine selection"


TagOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tag", metavar="KEY[=V1,V2]", rich_help_panel=SELECT,
        help="Select machines by tag (repeatable). Several keys must all match; several values of "
        "one key are alternatives: --tag env=prod,staging --tag role=web. KEY alone: any value. "
        "A tag on a scale set selects its instances.",
    ),
]
ExcludeTagOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude-tag", metavar="KEY[=V1,V2]", rich_help_panel=SELECT,
        help="Leave out machines with this tag (repeatable; same syntax as --tag).",
    ),
]
SubscriptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--subscription", "-s", metavar="NAME|ID", rich_help_panel=SELECT,
        help="Subscription to look in, by name or id (repeatable). Default: AZURE_SUBSCRIPTION_ID, the config "
        "file, or the Azure CLI's default subscription (az account set).",
    ),
]
AllSubscriptionsOpt = Annotated[
    bool,
    typer.Option(
        "--all-subscriptions", rich_help_panel=SELECT, help="Look in every subscription the identity can see."
    ),
]
ResourceGroupOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--resource-group", "-g", metavar="NAME", rich_help_panel=SELECT,
        help="Only machines in this resource group (repeatable).",
    ),
]
NameOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--name", metavar="GLOB", rich_help_panel=SELECT,
        help="Machine name glob (repeatable), matched against vm-web-01, vmss-api/3 and the scale-set name.",
    ),
]
OsOpt = Annotated[
    str | None,
    typer.Option("--os", metavar="linux|windows", rich_help_panel=SELECT, help="Only Linux or only Windows machines."),
]
IncludeStoppedOpt = Annotated[
    bool,
    typer.Option(
        "--include-stopped", rich_help_panel=SELECT,
        help="Keep stopped/deallocated machines as targets (otherwise they are reported as skipped).",
    ),
]
AllOpt = Annotated[
    bool,
    typer.Option(
        "--all", rich_help_panel=SELECT,
        help="Every machine in scope. Required when no --tag, --name or -g is given, so nothing targets "
        "a whole estate by accident.",
    ),
]
def selector_from_options(
    *,
    tag: Sequence[str] | None = None,
    exclude_tag: Sequence[str] | None = None,
    subscription: Sequence[str] | None = None,
    all_subscriptions: bool = False,
    resource_group: Sequence[str] | None = None,
    name: Sequence[str] | None = None,
    os: str | None = None,
    include_stopped: bool = False,
    select_all: bool = False,
) -> Selector:
    """The validated :class:`~azrun.targets.Selector` for the shared options' values (subscription
    names are looked up and replaced by their ids, as ``az --subscription`` does)."""
    from azrun.cli._subscriptions import subscription_ids
    from azrun.targets import Selector

    return Selector.from_options(
        tags=tag or (),
        exclude_tags=exclude_tag or (),
        subscriptions=subscription_ids(subscription or ()),
        all_subscriptions=all_subscriptions,
        resource_groups=resource_group or (),
        names=name or (),
        os=os,
        include_stopped=include_stopped,
        select_all=select_all,
    )


def client_factory(settings: Settings | None = None) -> ClientFactory:
    """A :class:`~azrun.clients.ClientFactory` for the environment, with the configured identity."""
    from azrun.auth import IdentitySelector
    from azrun.clients import ClientFactory
    from azrun.config import Settings

    settings = settings or Settings.load()
    identity = IdentitySelector(
        client_id=settings.get("client_id") or None,
        object_id=settings.get("object_id") or None,
        resource_id=settings.get("identity_resource_id") or None,
    )
    factory = ClientFactory.from_env(
        identity=None if identity.is_system_assigned else identity, auth_mode=str(settings.get("auth") or "auto")
    )
    bundle = factory.cloud.ca_bundle
    if bundle and not Path(bundle).is_file():
        from azrun.cli._exit import LocalStateError

        raise LocalStateError(f"the CA bundle {bundle} (AZRUN_CA_BUNDLE) does not exist",
                              hint="point AZRUN_CA_BUNDLE at the PEM file of the CA that signed the ARM endpoint")
    return factory


def default_subscriptions(settings: Settings | None = None) -> tuple[str, ...]:
    """The subscription scope when none is named (:meth:`azrun.config.Settings.subscriptions`:
    the setting, else the Azure CLI's default subscription)."""
    from azrun.config import Settings

    return (settings or Settings.load()).subscriptions()
