"""The rules a gateway takes from its configuration file change live: platform policies,
trusted issuers and the masking key (its file too). Within seconds of a change, new
statements, prepared statements created before it and tickets issued before it follow
it (tickets planned under the old rules are refused: plan again); an invalid change is
logged and changes nothing.

A gateway of its own (`meshgate serve --config FILE`) over a copy of the demo mesh.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import start_server
from mesh_helpers import (
    DEMO_SECRET_FILE,
    FlightConn,
    ServerProcess,
    adbc_connect,
    adbc_query,
    command_statement_query,
    mint_token,
)

APPLY_WITHIN_S = 20
NAME = "SELECT given_name FROM patients.registry.patients ORDER BY patient_id LIMIT 1"
REGIONS = "SELECT count(*) FROM reference.regions.regions"
CODE = "SELECT diagnosis_code FROM clinical.encounters.visits WHERE diagnosis_code IS NOT NULL ORDER BY encounter_id LIMIT 1"


class Gateway:
    def __init__(self, root: Path, secret: Path):
        self.root = root
        self.config = root / "meshgate.yaml"
        self.mask_key = root / "mask.key"
        self.second_secret = root / "second.secret"
        self.secret = secret
        self.server: ServerProcess | None = None

    def write_config(self, *, pii: str = "mask: redact", second_issuer: bool = False) -> None:
        issuers = [self._issuer("meshgate-demo", self.secret)]
        if second_issuer:
            issuers.append(self._issuer("second-idp", self.second_secret))
        text = (
            "plaintext: true\n"
            "auth:\n  issuers:\n" + "".join(issuers)
            + f"platform_policies:\n  - {{ name: pii-rule, tag: pii, column: {{ {pii}, unless_role: [pii_reader] }} }}\n"
            + f"masking: {{ key_file: {json.dumps(str(self.mask_key))} }}\n"
            + "reload: { debounce: 100ms }\n"
            + "quality: { enabled: false }\n"
            + "engine:\n  derived:\n"
            + "    principals: { analytics: { subject: \"domain:analytics\", roles: [analyst] } }\n"
            + "    materialize: false\n"
        )
        partial = self.config.with_suffix(".tmp")
        partial.write_text(text)
        partial.rename(self.config)

    @staticmethod
    def _issuer(name: str, secret: Path) -> str:
        return (
            f"    - issuer: {name}\n      audience: [meshgate]\n      algorithms: [HS256]\n"
            f"      key: {{ secret_file: {json.dumps(str(secret))} }}\n"
            "      roles_claim: roles\n      attribute_claims: { region: region }\n"
        )


@pytest.fixture(scope="module")
def gateway(demo, meshgate_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("config-reload")
    mesh = root / "mesh"
    shutil.copytree(demo.mesh_dir, mesh)
    gw = Gateway(root, Path(demo.mesh_dir) / DEMO_SECRET_FILE)
    gw.mask_key.write_bytes(b"the first masking key, 32 bytes.")
    gw.second_secret.write_bytes(b"a secret of the second identity provider")
    gw.write_config()
    argv = [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
            "--config", gw.config]
    # Info logs: the tests count the reloads the gateway reports.
    gw.server = start_server(argv, "config-reload", env={"MESHGATE_LOG": "info"})
    try:
        yield gw
    finally:
        gw.server.stop()


@pytest.fixture(scope="module")
def ben(mint) -> str:
    return mint("--sub", "ben", "--role", "analyst")


def first_value(gw: Gateway, token: str, sql: str):
    conn = adbc_connect(gw.server.uri, token)
    try:
        return adbc_query(conn, sql).column(0)[0].as_py()
    finally:
        conn.close()


def eventually(what: str, check) -> None:
    deadline = time.monotonic() + APPLY_WITHIN_S
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - a refusal while the change lands
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not within {APPLY_WITHIN_S}s: {what}", pytrace=False)
        time.sleep(0.2)


def ticket_for(gw: Gateway, token: str, sql: str):
    client = FlightConn(gw.server.uri, token)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(sql)))
    return client, info.endpoints[0].ticket


def test_a_platform_policy_change_reaches_statements_prepared_statements_and_tickets(gateway, ben):
    """Tickets of the products the change touches are refused; others still run."""
    assert first_value(gateway, ben, NAME) == "REDACTED"
    conn = adbc_connect(gateway.server.uri, ben)
    try:
        with conn.cursor() as prepared:
            prepared.adbc_prepare(NAME)
            client, early_ticket = ticket_for(gateway, ben, NAME)
            assert client.do_get(early_ticket).read_all().column(0)[0].as_py() == "REDACTED"
            # A ticket of a product the rule does not touch (no pii column).
            _, unrelated_ticket = ticket_for(gateway, ben, REGIONS)
            # DESCRIBE scans no table: it depends on all the principal sees.
            _, describe_ticket = ticket_for(gateway, ben, "DESCRIBE patients.registry.patients")

            gateway.write_config(pii='mask: "null"')
            eventually("given names are null for new statements",
                       lambda: first_value(gateway, ben, NAME) is None)
            prepared.execute(NAME)
            assert prepared.fetch_arrow_table().column(0)[0].as_py() is None, "the prepared statement follows"
            with pytest.raises(pa.ArrowKeyError) as refused:  # NOT_FOUND
                client.do_get(early_ticket).read_all()
            assert "plan the statement again" in str(refused.value), refused.value
            # Only the products a ticket reads decide whether it still runs.
            assert client.do_get(unrelated_ticket).read_all().column(0)[0].as_py() > 0
            with pytest.raises(pa.ArrowKeyError):
                client.do_get(describe_ticket).read_all()
    finally:
        conn.close()
    gateway.write_config()
    eventually("given names are redacted again", lambda: first_value(gateway, ben, NAME) == "REDACTED")


def test_issuers_are_trusted_and_distrusted_live(gateway, meshgate_bin, ben):
    second = mint_token(meshgate_bin, "--secret-file", gateway.second_secret, "--issuer", "second-idp",
                        "--sub", "sam", "--role", "analyst")
    with pytest.raises(Exception):
        first_value(gateway, second, "SELECT count(*) FROM reference.regions.regions")
    gateway.write_config(second_issuer=True)
    eventually("the second issuer's token is accepted",
               lambda: first_value(gateway, second, "SELECT count(*) FROM reference.regions.regions") > 0)
    gateway.write_config()
    def refused() -> bool:
        try:
            first_value(gateway, second, "SELECT count(*) FROM reference.regions.regions")
            return False
        except Exception as e:  # noqa: BLE001
            return "untrusted issuer" in str(e) or "UNAUTHENTICATED" in str(e).upper()
    eventually("the second issuer's token is refused again", refused)
    assert first_value(gateway, ben, "SELECT count(*) FROM reference.regions.regions") > 0


def test_a_new_masking_key_in_its_file_changes_every_hash(gateway, ben):
    before = first_value(gateway, ben, CODE)
    assert before and len(before) == 64, before
    client, early_ticket = ticket_for(gateway, ben, CODE)
    assert client.do_get(early_ticket).read_all().column(0)[0].as_py() == before
    partial = gateway.mask_key.with_suffix(".tmp")
    partial.write_bytes(b"the second masking key, 32 byte.")
    partial.rename(gateway.mask_key)
    eventually("hashes change with the key", lambda: first_value(gateway, ben, CODE) not in (None, before))
    with pytest.raises(pa.ArrowKeyError):  # NOT_FOUND: plan again
        client.do_get(early_ticket).read_all()


def test_an_invalid_change_changes_nothing(gateway, ben):
    gateway.config.write_text("platform_policies: [ this is not valid\n")
    time.sleep(1.5)
    assert first_value(gateway, ben, NAME) == "REDACTED"
    gateway.write_config(pii='mask: "null"')
    eventually("the next valid change applies", lambda: first_value(gateway, ben, NAME) is None)
    gateway.write_config()
    eventually("and the one after", lambda: first_value(gateway, ben, NAME) == "REDACTED")


def test_reading_the_files_triggers_no_reload(gateway, ben):
    def reloads() -> int:
        return gateway.server.output(tail=20000).count("configuration reloaded")

    time.sleep(1.0)
    before = reloads()
    assert before > 0, "the earlier changes were logged"
    # A reader of the configuration (an operator's `cat`, the reload itself) changes
    # nothing: no reload follows.
    for path in (gateway.config, gateway.mask_key, gateway.secret):
        path.read_bytes()
    time.sleep(1.5)
    assert reloads() == before, gateway.server.output(tail=50)
    # Writing the same content is no change either.
    gateway.write_config()
    time.sleep(1.5)
    assert reloads() == before, gateway.server.output(tail=50)
    assert first_value(gateway, ben, NAME) == "REDACTED"
