"""The environment variables the README documents reach every command that takes them."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from saga_registry.cli.main import main

SHARED = {
    "SAGA_REGISTRY",
    "SAGA_BUS",
    "SAGA_KAFKA_SECURITY_PROTOCOL",
    "SAGA_KAFKA_SASL_MECHANISM",
    "SAGA_KAFKA_SASL_USERNAME",
    "SAGA_KAFKA_SASL_PASSWORD",
    "SAGA_KAFKA_SSL_CAFILE",
}
EXPECTED = {
    ("run",): SHARED | {"SAGA_DB_URL", "SAGA_PACKAGE", "SAGA_WAIT_FOR_BUS", "SAGA_ALLOW_STUBS"},
    ("start",): SHARED | {"SAGA_DB_URL", "SAGA_PACKAGE"},
    ("trace",): SHARED | {"SAGA_DB_URL"},
    ("dlq", "list"): SHARED,
    ("dlq", "replay"): SHARED,
    ("db", "adopt"): SHARED | {"SAGA_DB_URL"},
    ("sagas",): {"SAGA_REGISTRY", "SAGA_DB_URL"},
    ("codegen",): {"SAGA_REGISTRY", "SAGA_PACKAGE"},
}


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=" ".join)
def test_each_command_reads_its_documented_variables(path: tuple[str, ...]) -> None:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    read = {p.envvar for p in command.params if isinstance(p.envvar, str)}
    assert EXPECTED[path] <= read, sorted(EXPECTED[path] - read)


def test_an_environment_variable_reaches_the_command() -> None:
    result = CliRunner().invoke(
        main,
        ["dlq", "list", "--bus", "kafka://127.0.0.1:1"],
        env={"SAGA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
    )
    assert result.exit_code == 1
    assert "Kafka security protocol SASL_SSL needs a SASL mechanism" in result.output
