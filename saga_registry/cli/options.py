"""The options the `saga` commands share, defined once: the registry, the bus, the
services' databases and Kafka's security settings, each with its environment variable.
A project's own commands (`handlers/commands.py`) use them too."""

from __future__ import annotations

import click

from saga_registry.engine.config import DEFAULT_BUS, DEFAULT_DB

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
        envvar="SAGA_KAFKA_KAFKA_SECURITY_PROTOCOL",
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
        type=click.Path(exists=True, dir_okay=False),
    ),
]

db_option = click.option(
    "--db",
    default=DEFAULT_DB,
    envvar="SAGA_DB_URL",
    show_default=True,
    help="Database URL template; {service} becomes each service's name.",
)


def kafka_security(f: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_KAFKA_SECURITY):
        f = option(f)
    return f
