"""`saga ui`: serve the web view of a registry's sagas (`saga_registry.ui`)."""

from __future__ import annotations

import logging
import shutil
import socket

import click

from saga_registry.cli.options import (
    bus_option,
    db_option,
    fail,
    kafka_security,
    registry_option,
    registry_or_fail,
    stuck_for_option,
)
from saga_registry.engine.buses import KafkaOptions


@click.command()
@registry_option
@db_option
@bus_option
@kafka_security
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    envvar="SAGA_UI_TOKEN",
    help="Replays from other machines are taken only with this token (Authorization: "
    "Bearer TOKEN); without one, only from this machine.",
)
@stuck_for_option
def ui(
    registry: str,
    db: str,
    bus: str,
    kafka: KafkaOptions,
    host: str,
    port: int,
    token: str | None,
    stuck_for: float | None,
) -> None:
    """Serve a live web view of the sagas: the choreography and the state machine with
    counts, sagas by state (stuck first), one saga's timeline across services, and the
    dead-letter topic with a replay action. Reads the services' databases (--db) and the
    dead-letter topic (--bus); writes nothing but replays."""
    reg = registry_or_fail(registry)
    if shutil.which("dot") is None:
        fail("Graphviz 'dot' is not installed: saga ui draws its diagrams with it")
    # Imported here: the web stack is loaded only by the command that serves it.
    import uvicorn

    from saga_registry.ui.app import make_app
    from saga_registry.ui.data import Source

    app = make_app(Source(reg, db, bus, kafka, stuck_for), token=token or None, listen=host)
    try:
        listening = socket.create_server((host, port), family=_family(host))
    except OSError as exc:  # the port taken, the address not this machine's
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}")
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"saga ui: http://{shown}:{listening.getsockname()[1]}/ (Ctrl-C to stop)", err=True)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # An open page keeps its event stream open: a stop waits for it at most 2 s.
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    server.run(sockets=[listening])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
