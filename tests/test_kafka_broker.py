"""The development broker that `scripts/kafka` starts speaks Kafka on 127.0.0.1."""

from __future__ import annotations

from tests.conftest import kafka_api_versions


def test_broker_answers_api_versions(kafka_bootstrap: str) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    # A Kafka 4.x broker lists dozens of APIs; anything else answering fails the decode.
    assert kafka_api_versions(host, int(port)) > 40
