"""``azrun sim``: the local Azure."""

from __future__ import annotations

import typer

sim_app = typer.Typer(help="The local Azure: an ARM + IMDS simulator with Azurite for blobs.", no_args_is_help=True,
                      epilog="Example: azrun sim up --fleet azrun/sim/fleets/demo.toml")


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")


@sim_app.command("up", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sim_up(ctx: typer.Context) -> None:
    """Start the local Azure in the foreground until Ctrl-C.

    Options: --fleet FILE, --env-file FILE, --request-log FILE, --workdir DIR, --no-storage.

    Example: azrun sim up --env-file /tmp/azrun.env & source /tmp/azrun.env
    """
    from azrun.sim.server import main as sim_main

    raise typer.Exit(sim_main(["up", *ctx.args]))
