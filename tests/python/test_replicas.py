"""Replicas that share nothing: `meshgate demo` started a second and a third time on the
demo's directory shares its handle keys and masking key, so a ticket, a prepared
statement or a session made on one replica is served by the others, and results agree.
Then the same replicas behind HAProxy (TCP, round robin): the clients pass through it,
and a replica killed with SIGKILL mid-load costs only the queries running on it, each
with a clear error (never a short result), while retried queries succeed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import DEMO_SCALE, start_server
from mesh_helpers import (
    HAProxyError,
    ServerProcess,
    _len_field,
    adbc_query,
    bearer,
    command_prepared_statement_query,
    command_statement_query,
    data_dir,
    flight_call_options,
    free_port,
    pack_any,
    start_haproxy,
)
from policy_model import PERSONAS
from test_jdbc import driver_jar, run_jdbc  # noqa: F401  (driver_jar is a fixture)
from test_sessions import CookieJar, _fields, session_conn, set_session_options

VISITS = "SELECT encounter_id, patient_id, diagnosis_code FROM clinical.encounters.visits ORDER BY encounter_id"


def _replica_argv(meshgate_bin, mesh_dir: Path, port: int = 0) -> list:
    return [
        meshgate_bin, "demo", "--dir", mesh_dir, "--scale", DEMO_SCALE, "--listen", f"127.0.0.1:{port}",
        "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0",
    ]


@pytest.fixture(scope="module")
def replica(demo, meshgate_bin) -> ServerProcess:
    """A second demo on the first one's directory: a replica of it."""
    srv = start_server(_replica_argv(meshgate_bin, demo.mesh_dir), "replica")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def persona_tokens(mint) -> dict[str, str]:
    return {name: mint(*p.mint_args()) for name, p in PERSONAS.items()}


def _client(server) -> flight.FlightClient:
    return flight.connect(server.uri)


def _plan(client, token: str, sql: str) -> flight.FlightInfo:
    descriptor = flight.FlightDescriptor.for_command(command_statement_query(sql))
    return client.get_flight_info(descriptor, flight_call_options(bearer(token)))


def _read(client, token: str, ticket: flight.Ticket) -> pa.Table:
    return client.do_get(ticket, flight_call_options(bearer(token))).read_all()


# -- tickets -------------------------------------------------------------------


def test_a_ticket_from_one_replica_is_redeemed_by_another(server, replica, admin_token):
    a, b = _client(server), _client(replica)
    info = _plan(a, admin_token, VISITS)
    ticket = info.endpoints[0].ticket
    on_b = _read(b, admin_token, ticket)
    on_a = _read(a, admin_token, ticket)
    assert on_b.num_rows > 0
    assert on_b.equals(on_a), "the replicas answered the same ticket differently"
    assert on_b.schema.equals(info.schema, check_metadata=True)
    # Redeemed again, on either replica: the same answer (idempotent re-reads).
    assert _read(b, admin_token, ticket).equals(on_a)
    assert _read(a, admin_token, ticket).equals(on_a)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM clinical.labs.results ORDER BY 1, 2",  # Delta
    "SELECT count(*) AS n, max(encounter_id) AS last FROM clinical.encounters.visits",  # statistics
])
def test_tickets_of_every_kind_of_table_move_between_replicas(server, replica, admin_token, sql):
    info = _plan(_client(server), admin_token, sql)
    on_b = _read(_client(replica), admin_token, info.endpoints[0].ticket)
    assert on_b.num_rows > 0
    assert on_b.equals(_read(_client(server), admin_token, info.endpoints[0].ticket))


@pytest.mark.parametrize("sql", [
    "SELECT domain, product FROM mesh.meta.products",
    "SELECT * FROM information_schema.df_settings",
    "EXPLAIN SELECT * FROM clinical.encounters.visits",
])
def test_a_ticket_of_the_moment_runs_once_where_it_was_issued(server, replica, admin_token, sql):
    """Tables each process fills as it goes (`mesh.meta`: quality history, freshness,
    status; `information_schema`: settings) and EXPLAIN answer for the moment: the
    ticket runs once, on the replica that issued it; again, or elsewhere, it is unknown."""
    info = _plan(_client(server), admin_token, sql)
    with pytest.raises(pa.ArrowKeyError, match="plan the statement again"):
        _read(_client(replica), admin_token, info.endpoints[0].ticket)
    assert _read(_client(server), admin_token, info.endpoints[0].ticket).num_rows > 0
    with pytest.raises(pa.ArrowKeyError, match="plan the statement again"):
        _read(_client(server), admin_token, info.endpoints[0].ticket)


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_every_persona_gets_the_same_answer_from_every_replica(server, replica, persona_tokens, persona):
    """Row filters and masks (hash masks under the shared masking key) agree."""
    token = persona_tokens[persona]
    a, b = _client(server), _client(replica)
    try:
        info = _plan(a, token, VISITS)
    except pa.ArrowKeyError:
        pytest.skip(f"{persona} may not read visits")
    on_b = _read(b, token, info.endpoints[0].ticket)
    fresh_b = _read(b, token, _plan(b, token, VISITS).endpoints[0].ticket)
    assert on_b.equals(fresh_b)


def test_a_ticket_is_its_principals_alone_on_every_replica(server, replica, admin_token, persona_tokens):
    info = _plan(_client(server), admin_token, VISITS)
    with pytest.raises(pa.ArrowKeyError):
        _read(_client(replica), persona_tokens["dev"], info.endpoints[0].ticket)


def test_an_altered_ticket_is_unknown_everywhere(server, replica, admin_token):
    info = _plan(_client(server), admin_token, "SELECT 1 AS one")
    raw = bytearray(info.endpoints[0].ticket.ticket)
    # Within the sealed handle (the ticket's last bytes; its start is the Any wrapper).
    for position in (len(raw) - 60, len(raw) - 17, len(raw) - 1):
        altered = bytearray(raw)
        altered[position] ^= 0x01
        for srv in (server, replica):
            with pytest.raises(pa.ArrowKeyError):
                _read(_client(srv), admin_token, flight.Ticket(bytes(altered)))


def test_a_ticket_says_nothing_of_its_statement(server, admin_token):
    marker = "needle_in_the_ticket"
    info = _plan(_client(server), admin_token, f"SELECT 1 AS {marker}")
    assert marker.encode() not in info.endpoints[0].ticket.ticket


@pytest.fixture(scope="module")
def private_pair(demo, meshgate_bin, tmp_path_factory):
    """Two replicas on a copy of the demo mesh, for a test that changes its data."""
    mesh = tmp_path_factory.mktemp("replicas") / "mesh"
    shutil.copytree(demo.mesh_dir, mesh, ignore=shutil.ignore_patterns(".state", "audit.jsonl"))
    for descriptor in mesh.rglob("*.yaml"):  # locations are absolute: point them at the copy
        text = descriptor.read_text()
        descriptor.write_text(text.replace(str(demo.mesh_dir), str(mesh)))
    pair = [start_server(_replica_argv(meshgate_bin, mesh), f"copy-{i}") for i in (1, 2)]
    try:
        yield mesh, pair
    finally:
        for srv in pair:
            srv.stop()


def test_a_ticket_whose_data_changed_is_unknown_on_another_replica(private_pair, admin_token):
    """A new file lands in a Parquet product after planning: the replica that did not
    plan it cannot answer the same snapshot, and says so rather than answer another."""
    mesh_dir, (server, replica) = private_pair
    sql = "SELECT count(*) AS n FROM reference.regions.regions"
    files = sorted(data_dir(mesh_dir, "reference.regions.regions").rglob("*.parquet"))
    assert files, "no Parquet files in reference.regions.regions"

    def count(srv) -> int:
        info = _plan(_client(srv), admin_token, sql)
        return _read(_client(srv), admin_token, info.endpoints[0].ticket).column("n")[0].as_py()

    def until_counted(srv, wanted, what: str) -> None:
        deadline = time.monotonic() + 30
        while not wanted(count(srv)):
            if time.monotonic() > deadline:
                pytest.fail(f"{srv.name} never counted {what}")
            time.sleep(0.5)

    before = count(server)
    info = _plan(_client(server), admin_token, sql)
    extra = files[0].with_name("zz-replica-test.parquet")
    shutil.copy(files[0], extra)
    until_counted(replica, lambda n: n > before, "the new file's rows")
    with pytest.raises(pa.ArrowKeyError, match="changed since this ticket was issued"):
        _read(_client(replica), admin_token, info.endpoints[0].ticket)


# -- prepared statements and sessions --------------------------------------------


def _create_prepared(client, token: str, sql: str) -> bytes:
    body = pack_any("ActionCreatePreparedStatementRequest", _len_field(1, sql.encode()))
    results = list(client.do_action(flight.Action("CreatePreparedStatement", body),
                                    flight_call_options(bearer(token))))
    value = dict(_fields(results[0].body.to_pybytes()))[2]
    return dict(_fields(value))[1]


def _bind(client, token: str, handle: bytes, row: pa.RecordBatch) -> bytes:
    descriptor = flight.FlightDescriptor.for_command(command_prepared_statement_query(handle))
    writer, reader = client.do_put(descriptor, row.schema, flight_call_options(bearer(token)))
    writer.write_batch(row)
    writer.done_writing()
    metadata = reader.read()
    writer.close()
    return dict(_fields(metadata.to_pybytes()))[1]


def _execute_prepared(client, token: str, handle: bytes) -> pa.Table:
    descriptor = flight.FlightDescriptor.for_command(command_prepared_statement_query(handle))
    info = client.get_flight_info(descriptor, flight_call_options(bearer(token)))
    return _read(client, token, info.endpoints[0].ticket)


def test_a_prepared_statement_moves_between_replicas_with_its_parameters(server, replica, admin_token):
    a, b = _client(server), _client(replica)
    handle = _create_prepared(a, admin_token, "SELECT $1 + 1 AS next, $2 AS word")
    row = pa.record_batch([pa.array([41], pa.int64()), pa.array(["hi"])], names=["$1", "$2"])
    bound = _bind(b, admin_token, handle, row)
    assert bound != handle, "binding answers with a handle carrying the values"
    for client in (a, b):
        answer = _execute_prepared(client, admin_token, bound)
        assert answer.to_pydict() == {"next": [42], "word": ["hi"]}
    # The replica that bound the values also keeps them under the first handle.
    assert _execute_prepared(b, admin_token, handle).to_pydict() == {"next": [42], "word": ["hi"]}


def test_a_closed_prepared_statement_is_refused_where_it_was_closed(server, admin_token):
    a = _client(server)
    handle = _create_prepared(a, admin_token, "SELECT 7 AS seven")
    assert _execute_prepared(a, admin_token, handle).to_pydict() == {"seven": [7]}
    close = pack_any("ActionClosePreparedStatementRequest", _len_field(1, handle))
    list(a.do_action(flight.Action("ClosePreparedStatement", close), flight_call_options(bearer(admin_token))))
    with pytest.raises(pa.ArrowKeyError):
        _execute_prepared(a, admin_token, handle)


def _set_options(client, token: str, **options: str) -> None:
    request = b"".join(
        _len_field(1, _len_field(1, name.encode()) + _len_field(2, _len_field(1, value.encode())))
        for name, value in options.items()
    )
    list(client.do_action(flight.Action("SetSessionOptions", request), flight_call_options(bearer(token))))


def test_closing_a_session_closes_every_cookie_it_had(server, admin_token):
    jar = CookieJar()
    a = flight.connect(server.uri, middleware=[jar])
    _set_options(a, admin_token, catalog="reference")
    first = jar.cookie
    _set_options(a, admin_token, schema="regions")
    assert jar.cookie != first, "each setting answers with a new cookie"
    list(a.do_action(flight.Action("CloseSession", b""), flight_call_options(bearer(admin_token))))
    jar.cookie = first
    with pytest.raises(pa.ArrowKeyError, match="session is unknown or expired"):
        a.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query("SELECT 1")),
                          flight_call_options(bearer(admin_token)))


def test_a_session_set_on_one_replica_holds_on_another(server, replica, admin_token):
    jar = CookieJar()
    a = flight.connect(server.uri, middleware=[jar])
    b = flight.connect(replica.uri, middleware=[jar])
    options = flight_call_options(bearer(admin_token))
    request = _len_field(1, _len_field(1, b"catalog") + _len_field(2, _len_field(1, b"reference")))
    request += _len_field(1, _len_field(1, b"schema") + _len_field(2, _len_field(1, b"regions")))
    list(a.do_action(flight.Action("SetSessionOptions", request), options))
    assert jar.cookie, "the session's cookie was set"
    assert "arrow_flight_session_id" in jar.cookie
    descriptor = flight.FlightDescriptor.for_command(command_statement_query("SELECT count(*) AS n FROM regions"))
    info = b.get_flight_info(descriptor, options)
    assert b.do_get(info.endpoints[0].ticket, options).read_all().column("n")[0].as_py() > 0


# -- behind a load balancer --------------------------------------------------------


class Balanced:
    def __init__(self, port: int, replicas: dict[str, ServerProcess], ports: dict[str, int]):
        self.port, self.replicas, self.ports = port, replicas, ports

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def balanced(demo, meshgate_bin, tmp_path_factory):
    ports = {name: free_port() for name in ("r1", "r2", "r3")}
    replicas = {
        name: start_server(_replica_argv(meshgate_bin, demo.mesh_dir, port), name)
        for name, port in ports.items()
    }
    try:
        try:
            proc, port = start_haproxy(ports, tmp_path_factory.mktemp("haproxy"))
        except HAProxyError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield Balanced(port, replicas, ports)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        for srv in replicas.values():
            srv.stop()


def test_clients_through_the_balancer(balanced, admin_token):
    """Connections land on different replicas (round robin); each serves statements,
    prepared statements with parameters and session options."""
    for _ in range(6):
        conn = session_conn(balanced, admin_token)
        try:
            assert adbc_query(conn, "SELECT 1 AS one").column("one").to_pylist() == [1]
            assert adbc_query(conn, "SELECT $1 * 2 AS twice", [21]).column("twice").to_pylist() == [42]
            set_session_options(conn, catalog="reference", schema="regions")
            assert adbc_query(conn, "SELECT count(*) AS n FROM regions").column("n")[0].as_py() > 0
        finally:
            conn.close()


def test_jdbc_through_the_balancer(balanced, driver_jar, admin_token, oracle):
    """The Flight SQL JDBC driver (BI tools' path), three connections in turn: round robin
    puts them on different replicas; each queries, prepares and uses the catalog property."""
    for _ in range(3):
        out = run_jdbc(driver_jar, balanced, admin_token, "query")
        assert int(out["total"]) == oracle.count("clinical.encounters.visits")
        assert int(out["prepared"]) == oracle.count("reference.regions.regions", "region = 'north'")
    out = run_jdbc(driver_jar, balanced, admin_token, "catalog")
    assert int(out["short"]) == oracle.count("clinical.encounters.visits")


def test_a_replica_killed_mid_load_costs_only_its_own_queries(balanced, admin_token, tmp_path):
    """Clients read a large table through the balancer while one replica is killed
    (SIGKILL) and restarted: every answer is whole or a clear error, a retry succeeds."""
    sql = "SELECT * FROM clinical.encounters.visits"
    expected_rows = _read(_client(balanced), admin_token,
                          _plan(_client(balanced), admin_token, sql).endpoints[0].ticket).num_rows
    counts = {"whole": 0, "failed": 0, "short": 0, "retried_ok": 0, "retry_failed": 0}
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def once() -> int:
        client = flight.connect(balanced.uri)
        try:
            info = _plan(client, admin_token, sql)
            return _read(client, admin_token, info.endpoints[0].ticket).num_rows
        finally:
            client.close()

    def worker():
        while not stop.is_set():
            try:
                rows = once()
            except Exception as exc:  # a clear error: counted, then retried
                with lock:
                    counts["failed"] += 1
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                for attempt in range(20):
                    try:
                        rows = once()
                        with lock:
                            counts["retried_ok"] += 1
                        break
                    except Exception:
                        time.sleep(0.25)
                else:
                    with lock:
                        counts["retry_failed"] += 1
                    continue
            with lock:
                counts["whole" if rows == expected_rows else "short"] += 1

    def until_whole(n: int, what: str) -> None:
        deadline = time.monotonic() + 120
        with lock:
            target = counts["whole"] + n
        while True:
            with lock:
                if counts["whole"] >= target:
                    return
            if time.monotonic() > deadline:
                stop.set()
                pytest.fail(f"no {n} whole answers {what}: {counts}")
            time.sleep(0.1)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    until_whole(30, "before the kill")
    victim = balanced.replicas["r2"]
    victim.proc.kill()
    victim.proc.wait(timeout=10)
    until_whole(30, "with a replica down")
    restarted = start_server(victim.argv, "r2-restarted")
    balanced.replicas["r2"] = restarted
    until_whole(30, "after the restart")
    stop.set()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a client did not finish"
    report = {**counts, "errors": errors[:10]}
    (tmp_path / "replica-kill.json").write_text(json.dumps(report, indent=2))
    print("replica kill:", json.dumps(report))
    assert counts["short"] == 0, report
    assert counts["retry_failed"] == 0, report
    assert counts["whole"] >= 90, report
    assert counts["failed"] <= 6 * 2, report
    for srv in balanced.replicas.values():
        assert srv.alive(), srv.describe_death()


def test_handle_key_prints_a_key_line_the_gateway_reads(meshgate_bin):
    made = subprocess.run([str(meshgate_bin), "handle-key", "--id", "k2026-12"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key_id, key = made.stdout.split()
    assert key_id == "k2026-12" and len(bytes.fromhex(key)) == 32
    again = subprocess.run([str(meshgate_bin), "handle-key"], capture_output=True, text=True, timeout=60)
    assert again.stdout.split()[1] != key, "every key is fresh"
    bad = subprocess.run([str(meshgate_bin), "handle-key", "--id", "not a key id!"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "handle keys" in bad.stderr and bad.stdout == ""


def _portal_request(url: str, path: str, *, cookie: str = "", form: dict | None = None):
    """status, Set-Cookie values, body of one request to a portal (no browser)."""
    import http.client
    import urllib.parse

    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request("POST" if form is not None else "GET", path, body=body, headers=headers)
    resp = conn.getresponse()
    out = resp.status, resp.msg.get_all("Set-Cookie") or [], resp.read().decode()
    conn.close()
    return out


def test_a_portal_sign_in_holds_on_every_replica(demo, replica, persona_tokens):
    """The portal's session cookie is sealed with the shared handle keys: signed in on
    one replica, the viewer is signed in on the others (no sticky sessions)."""
    first, second = demo.server.portal_url, replica.portal_url
    assert first and second, "the replicas did not announce their portals"
    status, cookies, page = _portal_request(first, "/login")
    assert status == 200
    nonce = next(c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith("__Host-mg_login="))
    assert f'value="{nonce}"' in page
    status, cookies, _ = _portal_request(
        first, "/login", cookie=f"__Host-mg_login={nonce}",
        form={"token": persona_tokens["ben"], "_csrf": nonce, "next": "/"})
    assert status == 303, cookies
    session = next(c.split(";")[0] for c in cookies if c.startswith("__Host-mg_session="))
    status, _, page = _portal_request(second, "/", cookie=session)
    assert status == 200
    assert '<strong id="viewer">ben</strong>' in page
