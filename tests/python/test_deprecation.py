"""Two major versions side by side: a previous major version serves as a product of its
own (`clinical.encounters_v1`) until the last day its descriptor's `deprecation` names;
every door tells its readers (a response header on Flight SQL and HTTP, with `Sunset`
on HTTP; a WARNING notice on Postgres), `mesh.meta.products` shows the window, and once
it has ended the product is served no more, as missing as one that never existed.

A gateway of its own (`meshgate serve`) over a copy of the demo mesh.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import start_server
from mesh_helpers import DEMO_SECRET_FILE, command_statement_query, hermetic_env, query_once

HEADER = "x-meshgate-deprecated"
UNTIL = (datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=30)).isoformat()
ENDED = (datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)).isoformat()
V1 = "SELECT count(*) AS n FROM clinical.encounters_v1.visits"
CURRENT = "SELECT count(*) AS n FROM clinical.encounters.visits"


def previous_major(mesh: Path, name: str, version: str, until: str, successor: str = "clinical.encounters") -> None:
    text = (mesh / "clinical" / "encounters.yaml").read_text()
    assert "product: encounters\n" in text and "version: " in text
    lines = [f"version: {version}" if line.startswith("version: ") else line for line in text.splitlines()]
    text = "\n".join(lines).replace("product: encounters\n", f"product: {name}\n")
    # Readers on legacy contracts keep v1 (and only v1).
    text = text.replace("read: { any_role: [clinician, analyst, admin] }",
                        "read: { any_role: [clinician, analyst, admin, legacy] }")
    text += f"\ndeprecation: {{ successor: {successor}, until: {until} }}\n"
    (mesh / "clinical" / f"{name}.yaml").write_text(text)


@pytest.fixture(scope="module")
def gateway(demo, meshgate_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("deprecation")
    mesh = root / "mesh"
    shutil.copytree(demo.mesh_dir, mesh, ignore=shutil.ignore_patterns(".state", "data"))
    previous_major(mesh, "encounters_v1", "1.4.0", UNTIL)
    previous_major(mesh, "encounters_v0", "0.9.0", ENDED)
    config = root / "meshgate.yaml"
    secret = Path(demo.mesh_dir) / DEMO_SECRET_FILE
    config.write_text(
        "plaintext: true\n"
        "auth:\n  issuers:\n"
        "    - issuer: meshgate-demo\n      audience: [meshgate]\n      algorithms: [HS256]\n"
        f"      key: {{ secret_file: {json.dumps(str(secret))} }}\n"
        "      roles_claim: roles\n      attribute_claims: { region: region }\n"
        "quality: { enabled: false }\n"
        "engine:\n  derived:\n"
        "    principals: { analytics: { subject: \"domain:analytics\", roles: [analyst] } }\n"
        "    materialize: false\n"
    )
    argv = [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
            "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--config", config]
    server = start_server(argv, "deprecation")
    server.mesh = mesh
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reader(mint) -> str:
    return mint("--sub", "dep-reader", "--role", "analyst")


class Headers(flight.ClientMiddlewareFactory):
    """Keeps the response headers of every call."""

    def __init__(self):
        self.received: list[dict] = []

    def start_call(self, info):
        factory = self

        class Middleware(flight.ClientMiddleware):
            def received_headers(self, headers):
                factory.received.append(headers)

        return Middleware()


def flight_headers(server, token: str, sql: str) -> tuple[dict, pa.Table]:
    """The response headers of GetFlightInfo for `sql`, and its answer."""
    headers = Headers()
    client = flight.FlightClient(f"grpc://{server.address}", middleware=[headers])
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())], timeout=60)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(sql)), options)
    # Headers and trailers arrive apart.
    got = {name: value for received in headers.received for name, value in received.items()}
    table = pa.concat_tables(client.do_get(e.ticket, options).read_all() for e in info.endpoints)
    client.close()
    return got, table


def test_flight_readers_of_the_previous_major_are_told_until_when(gateway, reader):
    headers, v1 = flight_headers(gateway, reader, V1)
    assert headers.get(HEADER) == [f"clinical.encounters_v1; until={UNTIL}; successor=clinical.encounters"], headers
    current_headers, current = flight_headers(gateway, reader, CURRENT)
    assert HEADER not in current_headers, current_headers
    # Both versions serve the same data here: the same answer.
    assert v1.to_pylist() == current.to_pylist()
    # A statement reading both names the deprecated one only.
    both, _ = flight_headers(gateway, reader, f"{V1} UNION ALL {CURRENT}")
    assert both.get(HEADER) == [f"clinical.encounters_v1; until={UNTIL}; successor=clinical.encounters"], both


def test_http_readers_get_the_header_and_sunset(gateway, reader):
    request = urllib.request.Request(f"{gateway.http_url}/v1/query", data=V1.encode(), method="POST")
    request.add_header("Authorization", f"Bearer {reader}")
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        assert answer.headers.get(HEADER) == f"clinical.encounters_v1; until={UNTIL}; successor=clinical.encounters"
        sunset = datetime.datetime.strptime(answer.headers["Sunset"], "%a, %d %b %Y %H:%M:%S GMT")
        assert sunset.date() == datetime.date.fromisoformat(UNTIL) + datetime.timedelta(days=1)
        answer.read()
    request = urllib.request.Request(f"{gateway.http_url}/v1/query", data=CURRENT.encode(), method="POST")
    request.add_header("Authorization", f"Bearer {reader}")
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.headers.get(HEADER) is None and answer.headers.get("Sunset") is None


def test_postgres_readers_get_a_warning_notice(gateway, reader):
    host, port = gateway.pg_address.rsplit(":", 1)
    with psycopg.connect(host=host, port=int(port), dbname="mesh", user="dep-reader", password=reader,
                         sslmode="disable", connect_timeout=30) as conn:
        notices = []
        conn.add_notice_handler(lambda diag: notices.append((diag.severity, diag.sqlstate, diag.message_primary)))
        conn.execute(CURRENT).fetchall()
        assert notices == []
        assert conn.execute(V1).fetchone()[0] > 0
        assert notices == [("WARNING", "01P01",
                            f"clinical.encounters_v1 is deprecated: it serves until the end of {UNTIL} (UTC); "
                            "use clinical.encounters")], notices
        # The extended protocol (a bound parameter) tells it too.
        notices.clear()
        conn.execute("SELECT count(*) FROM clinical.encounters_v1.visits WHERE encounter_id > %s", (0,)).fetchone()
        assert [n[1] for n in notices] == ["01P01"], notices


def test_the_catalog_shows_the_window_and_an_ended_one_is_gone(gateway, reader):
    rows = query_once(gateway.uri, reader,
                      "SELECT product, version, deprecated_until, successor FROM mesh.meta.products "
                      "WHERE domain = 'clinical' ORDER BY product").to_pylist()
    by_product = {r["product"]: r for r in rows}
    assert by_product["encounters_v1"]["deprecated_until"] == datetime.date.fromisoformat(UNTIL)
    assert by_product["encounters_v1"]["successor"] == "clinical.encounters"
    assert by_product["encounters"]["deprecated_until"] is None and by_product["encounters"]["successor"] is None
    # Past its last day, the previous major is served no more: as missing as a product
    # that never existed.
    assert "encounters_v0" not in by_product

    def refusal(sql: str) -> str:
        with pytest.raises(Exception) as failed:
            query_once(gateway.uri, reader, sql)
        return str(failed.value).split("\n")[0]

    ended = refusal("SELECT count(*) FROM clinical.encounters_v0.visits")
    missing = refusal("SELECT count(*) FROM clinical.encounters_vx.visits")
    assert ended.replace("encounters_v0", "X").split("query_id")[0] == \
        missing.replace("encounters_vx", "X").split("query_id")[0]


def test_lint_checks_the_window(gateway, meshgate_bin, tmp_path):
    def lint(mesh: Path) -> subprocess.CompletedProcess:
        return subprocess.run([meshgate_bin, "lint", mesh], capture_output=True, text=True, timeout=120,
                              env=hermetic_env())

    mesh = tmp_path / "mesh"
    shutil.copytree(gateway.mesh, mesh)
    assert lint(mesh).returncode == 0, lint(mesh).stdout
    previous_major(mesh, "encounters_v1", "1.4.0", UNTIL, successor="clinical.nowhere")
    run = lint(mesh)
    assert run.returncode == 1
    assert "deprecation.successor is clinical.nowhere, which this mesh does not publish" in run.stdout, run.stdout
    previous_major(mesh, "encounters_v1", "1.4.0", "2027-02-30")
    run = lint(mesh)
    assert run.returncode == 1 and "deprecation.until" in run.stdout, run.stdout


def test_the_successor_is_named_only_to_those_who_may_read_it(gateway, mint):
    legacy = mint("--sub", "dep-legacy", "--role", "legacy", "--attr", "region=north")
    headers, _ = flight_headers(gateway, legacy, V1)
    assert headers.get(HEADER) == [f"clinical.encounters_v1; until={UNTIL}"], headers
    [row] = query_once(gateway.uri, legacy,
                       "SELECT deprecated_until, successor FROM mesh.meta.products "
                       "WHERE product = 'encounters_v1'").to_pylist()
    assert row == {"deprecated_until": datetime.date.fromisoformat(UNTIL), "successor": None}
    host, port = gateway.pg_address.rsplit(":", 1)
    with psycopg.connect(host=host, port=int(port), dbname="mesh", user="dep-legacy", password=legacy,
                         sslmode="disable", connect_timeout=30) as conn:
        notices = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        conn.execute(V1).fetchall()
        assert notices == [f"clinical.encounters_v1 is deprecated: it serves until the end of {UNTIL} (UTC)"]
