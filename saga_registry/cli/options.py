"""What the `saga` commands share, defined once: the options (the registry, the bus, the
services' databases, the project's package, Kafka's security settings, each with its
environment variable) and the way a command fails (one `error:` line per problem, exit
status 1). A project's own commands (`handlers/commands.py`) use them too."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from saga_registry.engine.buses.url import KafkaOptions
from saga_registry.engine.config import DEFAULT_BUS, DEFAULT_DB
from saga_registry.engine.errors import EngineError
from saga_registry.registry import CodegenError, load_registry
from saga_registry.registry.errors import problem_line
from saga_registry.registry.model import Registry

registry_option = click.option(
    "--registry",
    default="registry/saga.yaml",
    envvar="SAGA_REGISTRY",
    show_default=True,
    help="The registry.",
)
bus_option = click.option(
    "--bus",
    default=DEFAULT_BUS,
    envvar="SAGA_BUS",
    show_default=True,
    help="embedded[:PATH] or kafka://HOST:PORT[,HOST:PORT].",
)
_KAFKA_SECURITY = [
    click.option(
        "--kafka-security-protocol",
        "protocol",
        envvar="SAGA_KAFKA_SECURITY_PROTOCOL",
        default="PLAINTEXT",
        show_default=True,
        type=click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]),
    ),
    click.option(
        "--kafka-sasl-mechanism",
        "sasl_mechanism",
        envvar="SAGA_KAFKA_SASL_MECHANISM",
        type=click.Choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
    ),
    click.option("--kafka-sasl-username", "sasl_username", envvar="SAGA_KAFKA_SASL_USERNAME"),
    click.option("--kafka-sasl-password", "sasl_password", envvar="SAGA_KAFKA_SASL_PASSWORD"),
    click.option(
        "--kafka-ssl-cafile",
        "ssl_cafile",
        envvar="SAGA_KAFKA_SSL_CAFILE",
        type=click.Path(dir_okay=False),
    ),
]

package_option = click.option(
    "--package",
    default="handlers",
    envvar="SAGA_PACKAGE",
    show_default=True,
    help="The package of the project's generated and own code (imported from the current folder).",
)
db_option = click.option(
    "--db",
    default=DEFAULT_DB,
    envvar="SAGA_DB_URL",
    show_default=True,
    help="Database URL template; {service} becomes each service's name.",
)


stuck_for_option = click.option(
    "--stuck-for",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Count as stuck a saga not updated for longer (besides overdue deadlines).",
)


def kafka_security(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the Kafka security options to `command`, which receives them as one validated
    `kafka: KafkaOptions` argument (a bad combination ends the command in one line)."""

    @functools.wraps(command)  # keeps the options already declared on `command`
    def with_kafka(
        *args: Any,
        protocol: str,
        sasl_mechanism: str | None,
        sasl_username: str | None,
        sasl_password: str | None,
        ssl_cafile: str | None,
        **kwargs: Any,
    ) -> Any:
        kafka = kafka_options(protocol, sasl_mechanism, sasl_username, sasl_password, ssl_cafile)
        return command(*args, kafka=kafka, **kwargs)

    wrapped: Callable[..., Any] = with_kafka
    for option in reversed(_KAFKA_SECURITY):
        wrapped = option(wrapped)
    return wrapped


def fail(message: str) -> NoReturn:
    """End the command: one `error:` line on stderr per line of `message`, exit status 1."""
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(1)


def registry_or_fail(path: str) -> Registry:
    """The registry at `path`, or the command ends naming its first problem."""
    try:
        return load_registry(path)
    except CodegenError as exc:
        fail(problem_line(path, exc))


def kafka_options(
    protocol: str,
    mechanism: str | None,
    username: str | None,
    password: str | None,
    cafile: str | None,
) -> KafkaOptions:
    """The Kafka security settings of the `kafka_security` options, or the command ends
    naming what is wrong with them."""
    try:
        return KafkaOptions(protocol, mechanism, username, password, cafile)
    except EngineError as exc:
        fail(str(exc))


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` (a drawing's source), or fail in one line."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    click.echo(f"wrote {path}", err=True)


def render_svg(source: str, path: Path) -> None:
    """Draw the DOT `source` as SVG at `path` with Graphviz's `dot`, or fail in one line."""
    try:
        done = subprocess.run(
            ["dot", "-Tsvg", "-o", str(path)],
            input=source,
            text=True,
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"--svg {path}: dot failed: {exc}")
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[0]
        fail(f"--svg {path}: dot failed: {why}")
    click.echo(f"wrote {path}", err=True)
