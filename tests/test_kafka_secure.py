"""`saga run` and `saga dlq` on a Kafka broker that only takes SASL_SSL clients with SCRAM:
the broker `KAFKA_SECURE=1 scripts/kafka start` makes (its own CA, its own SCRAM users),
started once for the session on ports and a state dir of its own."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from saga_registry.engine.buses import KafkaBus
from saga_registry.registry import load_registry
from tests.helpers import ROOT
from tests.test_kafka_script import free_port
from tests.test_saga_run import SAGA, make_project, place, start, wait_terminal

SCRIPT = ROOT / "scripts" / "kafka"


@dataclass(frozen=True)
class SecureKafka:
    """Where the secured broker answers and the credentials `scripts/kafka` printed."""

    bootstrap: str
    username: str
    password: str
    cafile: str
    env: dict[str, str] = field(repr=False)  # what `scripts/kafka` commands on it need

    def args(self, mechanism: str = "SCRAM-SHA-512", **changes: str | None) -> list[str]:
        """The `saga` options that reach it; `changes` replaces (or with None drops) the
        value of an option, e.g. `password="wrong"`, `cafile=None`."""
        values: dict[str, str | None] = {
            "username": self.username,
            "password": self.password,
            "cafile": self.cafile,
            **changes,
        }
        args = [
            "--bus",
            f"kafka://{self.bootstrap}",
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-sasl-mechanism",
            mechanism,
        ]
        for name, option in (
            ("username", "--kafka-sasl-username"),
            ("password", "--kafka-sasl-password"),
            ("cafile", "--kafka-ssl-cafile"),
        ):
            value = values[name]
            if value is not None:
                args += [option, value]
        return args

    def bus(self) -> KafkaBus:
        return KafkaBus(
            self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=self.username,
            sasl_password=self.password,
            ssl_cafile=self.cafile,
        )


def _unavailable(reason: str) -> None:
    if os.environ.get("SAGA_REQUIRE_KAFKA", "") not in ("", "0", "false", "no"):
        pytest.fail(f"SAGA_REQUIRE_KAFKA=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A broker of `KAFKA_SECURE=1 scripts/kafka start`, stopped at the end of the session
    (skips without Java's keytool, or fails under SAGA_REQUIRE_KAFKA=1)."""
    for tool in ("java", "keytool"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not on PATH: the secured Kafka broker needs a JDK 17+")
    if not (ROOT / ".kafka" / "libs" / ".complete").exists() and shutil.which("mvn") is None:
        _unavailable("Kafka is not fetched and mvn is missing: run scripts/kafka start once")
    env = {
        **os.environ,
        "KAFKA_SECURE": "1",
        "KAFKA_STATE_DIR": str(tmp_path_factory.mktemp("secure-kafka")),
        "KAFKA_PORT": str(free_port()),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    began = time.monotonic()
    try:
        started = subprocess.run(
            [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900
        )
        assert started.returncode == 0, started.stdout + started.stderr
        out = started.stdout
        bootstrap = re.search(r"^kafka: bootstrap (\S+), SASL_SSL", out, re.M)
        user = re.search(r"^kafka: user (\S+), password (\S+)$", out, re.M)
        cafile = re.search(r"^kafka: CA file (.+)$", out, re.M)
        assert bootstrap and user and cafile, out
        print(f"secured Kafka broker up in {time.monotonic() - began:.0f} s")
        yield SecureKafka(bootstrap[1], user[1], user[2], cafile[1], env)
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)


def saga(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [*SAGA, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM `proc`; its stderr once it has stopped cleanly."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_saga_run_over_sasl_ssl_with_scram_sha_512(
    tmp_path: Path, secure_kafka: SecureKafka
) -> None:
    root = make_project(tmp_path)
    proc = start(root, *secure_kafka.args(), bus=f"kafka://{secure_kafka.bootstrap}")
    try:
        asyncio.run(place(root, 10, secure_kafka.bus()))
        final = wait_terminal(root, 10)
        reg = load_registry(root / "registry" / "saga.yaml")
        outcomes = {s.name: s.outcome for s in reg.state_machine.states}
        assert all(outcomes[s] == "success" for s in final.values()), final
        assert "stopped cleanly" in stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dlq_list_over_sasl_ssl_with_scram_sha_256(
    tmp_path: Path, secure_kafka: SecureKafka
) -> None:
    root = make_project(tmp_path)
    proc = start(
        root, *secure_kafka.args(), bus=f"kafka://{secure_kafka.bootstrap}", fail="Billing"
    )  # its sagas park
    try:
        asyncio.run(place(root, 3, secure_kafka.bus()))
        deadline = time.monotonic() + 90
        listed = saga(root, "dlq", "list", *secure_kafka.args("SCRAM-SHA-256"))
        while listed.stdout.count("\tBilling\t") < 3 and time.monotonic() < deadline:
            assert listed.returncode == 0, listed.stderr
            time.sleep(1)
            listed = saga(root, "dlq", "list", *secure_kafka.args("SCRAM-SHA-256"))
        assert listed.returncode == 0, listed.stderr
        rows = [line for line in listed.stdout.splitlines() if "\tBilling\t" in line]
        assert len(rows) == 3 and all("RuntimeError: Billing is broken" in r for r in rows)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory, secure_kafka: SecureKafka) -> str:
    """A CA file (PEM) of a CA that did not sign the broker's certificate."""
    folder = tmp_path_factory.mktemp("other-ca")
    keytool = ["keytool", "-storetype", "PKCS12", "-storepass", "other-pass", "-noprompt"]
    store = ["-keystore", str(folder / "ca.p12"), "-alias", "ca"]
    subprocess.run(
        [*keytool, "-genkeypair", *store, "-keyalg", "RSA", "-dname", "CN=another CA"],
        check=True,
        capture_output=True,
    )
    pem = folder / "ca.pem"
    subprocess.run(
        [*keytool, "-exportcert", *store, "-rfc", "-file", str(pem)],
        check=True,
        capture_output=True,
    )
    return str(pem)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


COMMANDS = {
    # The default --wait-for-bus (60 s): a refusal must not be waited out like an outage.
    "run": ["run", "--db", "sqlite:///dbs/{service}.db"],
    "dlq list": ["dlq", "list"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_password_is_one_line(
    tmp_path: Path, secure_kafka: SecureKafka, command: str
) -> None:
    root = make_project(tmp_path)
    began = time.monotonic()
    result = saga(root, *COMMANDS[command], *secure_kafka.args(password="not-the-password"))
    assert time.monotonic() - began < 40, "a refused login was retried like an outage"
    line = _one_error_line(result)
    assert f"Kafka at {secure_kafka.bootstrap}" in line
    assert "SaslAuthenticationFailed" in line and "invalid credentials" in line


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("ca", ["none", "other"])
def test_a_broker_certificate_not_signed_by_the_ca_file_is_one_line(
    tmp_path: Path, secure_kafka: SecureKafka, command: str, ca: str, request: pytest.FixtureRequest
) -> None:
    # Without a CA file the system's CAs are asked, and none of them signed it either.
    cafile = request.getfixturevalue("other_ca") if ca == "other" else None
    root = make_project(tmp_path)
    result = saga(root, *COMMANDS[command], *secure_kafka.args(cafile=cafile))
    line = _one_error_line(result)
    assert f"Kafka at {secure_kafka.bootstrap}" in line
    assert "CERTIFICATE_VERIFY_FAILED" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_ca_file_is_one_line(
    tmp_path: Path, secure_kafka: SecureKafka, command: str
) -> None:
    root = make_project(tmp_path)
    missing = tmp_path / "nowhere" / "ca.pem"
    result = saga(root, *COMMANDS[command], *secure_kafka.args(cafile=str(missing)))
    line = _one_error_line(result)
    assert str(missing) in line and "cannot read it" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_a_ca_file_that_holds_no_certificate_is_one_line(
    tmp_path: Path, secure_kafka: SecureKafka, command: str
) -> None:
    root = make_project(tmp_path)
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    result = saga(root, *COMMANDS[command], *secure_kafka.args(cafile=str(bogus)))
    line = _one_error_line(result)
    assert str(bogus) in line and "certificate" in line


def test_scripts_kafka_keeps_the_scram_user_the_storage_was_formatted_with(
    secure_kafka: SecureKafka,
) -> None:
    script = [str(SCRIPT), "start"]
    again = subprocess.run(script, env=secure_kafka.env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"kafka: user {secure_kafka.username}, password {secure_kafka.password}\n" in (
        again.stdout
    )
    changed = {**secure_kafka.env, "KAFKA_SASL_PASSWORD": "another-password"}
    refused = subprocess.run(script, env=changed, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "was formatted with another SCRAM user or password" in refused.stderr
