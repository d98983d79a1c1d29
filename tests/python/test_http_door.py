"""The HTTP door (`POST /v1/query`, `GET /v1/products`), with clients nobody here wrote:
Python's urllib, curl, and pyarrow reading the Arrow IPC stream.

The door is a thin adapter over the same engine as Flight SQL: the same policies (the
per-persona differential oracle runs through it), the same error classes (as HTTP
status codes with a JSON body carrying the query id), the same audit trail. A client
that disconnects stops its query.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pyarrow as pa
import pytest

from mesh_helpers import SLOW_QUERY, Oracle, adbc_query, assert_rows_equal
from policy_model import PERSONAS, can_read, oracle_view, visible_products
from test_zero_trust import DIFF_PARAMS, referenced_tables

ARROW = "application/vnd.apache.arrow.stream"
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def http_url(demo) -> str:
    url = demo.server.http_url
    if not url:
        pytest.fail("the demo did not announce its HTTP door", pytrace=False)
    return url


@pytest.fixture(scope="module")
def persona_tokens(mint) -> dict[str, str]:
    return {name: mint(*p.mint_args()) for name, p in PERSONAS.items()}


@pytest.fixture(scope="module")
def persona_oracles(demo) -> dict[str, Oracle]:
    return {name: Oracle(demo.mesh_dir, oracle_view(p)) for name, p in PERSONAS.items()}


class Answer:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def table(self) -> pa.Table:
        assert self.headers["Content-Type"] == ARROW, self.headers
        return pa.ipc.open_stream(self.body).read_all()


def post(url: str, token: str | None, body: bytes | str, *, accept: str | None = None,
         content_type: str = "text/plain", headers: dict[str, str] | None = None) -> Answer:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(f"{url}/v1/query", data=data, method="POST")
    request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if accept is not None:
        request.add_header("Accept", accept)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    return _send(request)


def get_products(url: str, token: str | None) -> Answer:
    request = urllib.request.Request(f"{url}/v1/products")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    return _send(request)


def _send(request) -> Answer:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


def raw_connection(url: str) -> socket.socket:
    """A plain socket to the door, for requests urllib would not send."""
    parsed = urllib.parse.urlparse(url)
    return socket.create_connection((parsed.hostname, parsed.port), timeout=TIMEOUT_S)


def raw_query_head(url: str, token: str, content_length: int, accept: str = ARROW) -> bytes:
    """The head of a `POST /v1/query` with a declared body length."""
    host = urllib.parse.urlparse(url).netloc
    return (
        f"POST /v1/query HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: {accept}\r\nContent-Type: text/plain\r\nContent-Length: {content_length}\r\n\r\n"
    ).encode()


def assert_error(answer: Answer, status: int, code: str, *, with_query_id: bool = True) -> dict:
    assert answer.status == status, (answer.status, answer.body[:500])
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == code, error
    assert error["message"], error
    if with_query_id:
        assert error["query_id"], error
    return error


# -- results -----------------------------------------------------------------


def test_results_are_arrow_by_default_and_match_flight(server, http_url, admin_token, adbc_conn):
    sql = "SELECT region, count(*) AS n FROM clinical.encounters.visits GROUP BY region ORDER BY region"
    answer = post(http_url, admin_token, sql)
    assert answer.status == 200
    assert answer.headers["x-meshgate-query-id"]
    assert_rows_equal(answer.table(), adbc_query(adbc_conn, sql), ordered=True)


def test_csv_and_ndjson_carry_the_same_rows(server, http_url, admin_token, oracle):
    sql = "SELECT facility_id, name, region FROM reference.facilities.facilities ORDER BY facility_id"
    want = oracle.query(sql).to_pylist()
    as_csv = post(http_url, admin_token, sql, accept="text/csv")
    assert as_csv.status == 200 and as_csv.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.body.decode())))
    assert [int(r["facility_id"]) for r in rows] == [w["facility_id"] for w in want]
    assert [r["name"] for r in rows] == [w["name"] for w in want]

    as_json = post(http_url, admin_token, sql, accept="application/x-ndjson")
    assert as_json.status == 200 and as_json.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in as_json.body.decode().splitlines()]
    assert lines == want


def test_an_empty_result_still_names_its_columns(server, http_url, admin_token):
    sql = "SELECT region, name FROM reference.regions.regions WHERE 1 = 0"
    assert post(http_url, admin_token, sql, accept="text/csv").body == b"region,name\n"
    table = post(http_url, admin_token, sql).table()
    assert table.num_rows == 0 and table.column_names == ["region", "name"]


def test_json_queries_bind_positional_parameters(server, http_url, admin_token, oracle):
    body = json.dumps({
        "sql": "SELECT count(*) AS n FROM clinical.encounters.visits WHERE region = $1 AND encounter_id % $2 = 3",
        "parameters": ["north", 31],
    })
    answer = post(http_url, admin_token, body, content_type="application/json")
    assert answer.status == 200, answer.body
    want = oracle.scalar(
        "SELECT count(*) FROM clinical.encounters.visits WHERE region = 'north' AND encounter_id % 31 = 3"
    )
    assert answer.table().column("n").to_pylist() == [want]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('{"sql": "SELECT $1 AS a", "parameters": [[1, 2]]}', "arrays and objects"),
        ('{"sql": "SELECT 1", "parameters": [1]}', "placeholders"),
        ('{"query": "SELECT 1"}', "not a JSON query"),
        ("not json", "not a JSON query"),
    ],
    ids=["array parameter", "parameter without placeholder", "unknown field", "malformed"],
)
def test_malformed_json_queries_are_bad_requests(server, http_url, admin_token, body, fragment):
    answer = post(http_url, admin_token, body, content_type="application/json")
    assert answer.status == 400, answer.body
    assert fragment in answer.json()["error"]["message"]


def test_products_list_what_each_persona_may_see(server, http_url, persona_tokens):
    for name, persona in PERSONAS.items():
        answer = get_products(http_url, persona_tokens[name])
        assert answer.status == 200, answer.body
        products = answer.json()
        assert {(p["domain"], p["product"]) for p in products} == visible_products(persona), name
        assert all(p["owner_team"] and p["status"] for p in products)


def test_curl_reads_csv(server, http_url, admin_token, oracle):
    done = subprocess.run(
        [
            "curl", "-sS", "--fail-with-body", f"{http_url}/v1/query",
            "-H", f"Authorization: Bearer {admin_token}", "-H", "Accept: text/csv",
            "--data-binary", "SELECT count(*) AS n FROM billing.claims.claims",
        ],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.splitlines() == ["n", str(oracle.count("billing.claims.claims"))]


def test_curl_with_the_token_as_basic_password(server, http_url, admin_token):
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-u", f"anyone:{admin_token}", f"{http_url}/v1/products"],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(done.stdout)


# -- the policy oracle through this door ---------------------------------------

HTTP_DIFF = [p for p in DIFF_PARAMS if p.values[1].endswith(("-visits", "-patients", "-masked", "-claims", "union"))]


@pytest.mark.parametrize("persona, qid, sql", HTTP_DIFF)
def test_differential_over_http(server, http_url, persona_tokens, persona_oracles, persona, qid, sql):
    p = PERSONAS[persona]
    hidden = {t for t in referenced_tables(sql) if not can_read(p, t)}
    answer = post(http_url, persona_tokens[persona], sql)
    if hidden:
        error = assert_error(answer, 404, "NotFound")
        assert any(f"table '{t}' not found" in error["message"] for t in hidden), error
        return
    assert answer.status == 200, answer.body[:500]
    assert_rows_equal(answer.table(), persona_oracles[persona].query(sql), ordered=True,
                      context=f"[{persona}] {qid} over HTTP: ")


# -- errors --------------------------------------------------------------------


def test_no_token_and_bad_tokens_are_401(server, http_url, admin_token):
    for token in [None, "not-a-jwt", admin_token[:-4] + "AAAA"]:
        answer = post(http_url, token, "SELECT 1")
        assert_error(answer, 401, "Unauthenticated", with_query_id=False)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert get_products(http_url, None).status == 401


def test_a_hidden_table_is_a_missing_one(server, http_url, persona_tokens):
    # cara (billing) may not read the patient registry: the same answer as a table
    # that does not exist, but for its name.
    hidden = assert_error(post(http_url, persona_tokens["cara"], "SELECT * FROM patients.registry.patients"),
                          404, "NotFound")
    missing = assert_error(post(http_url, persona_tokens["cara"], "SELECT * FROM patients.registry.nothing"),
                           404, "NotFound")
    assert hidden["message"].replace("patients.registry.patients", "X") == \
        missing["message"].replace("patients.registry.nothing", "X")


@pytest.mark.parametrize(
    "sql, status, code",
    [
        ("SELEC 1", 400, "InvalidArgument"),
        ("DELETE FROM billing.claims.claims", 403, "PermissionDenied"),
        ("SELECT * FROM nowhere.nothing.none", 404, "NotFound"),
    ],
    ids=["bad SQL", "write", "missing table"],
)
def test_refusals_have_their_status_and_the_server_keeps_serving(server, http_url, admin_token, sql, status, code):
    assert_error(post(http_url, admin_token, sql), status, code)
    assert post(http_url, admin_token, "SELECT 1 AS one").table().column("one").to_pylist() == [1]


def test_a_deadline_is_504(server, http_url, admin_token):
    answer = post(http_url, admin_token, SLOW_QUERY, headers={"x-meshgate-timeout": "50ms"})
    assert_error(answer, 504, "DeadlineExceeded")


def test_unoffered_formats_are_406_and_empty_bodies_400(server, http_url, admin_token):
    answer = post(http_url, admin_token, "SELECT 1", accept="application/xml")
    assert answer.status == 406 and "text/csv" in answer.json()["error"]["message"]
    assert post(http_url, admin_token, "   ").status == 400


def test_an_oversized_body_is_413_before_it_is_sent(server, http_url, admin_token):
    """A body declared larger than the limit is refused on its headers: the door does
    not read (or wait for) a megabyte it would refuse."""
    with raw_connection(http_url) as conn:
        conn.sendall(raw_query_head(http_url, admin_token, 4 * 1024 * 1024) + b"SELECT 1 --")
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_half_sent_request_does_not_hold_the_door(server, http_url, admin_token):
    """A client that sends half a request (dropped when `http.request_timeout` passes)
    does not keep other clients waiting."""
    with raw_connection(http_url) as slow:
        slow.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\n")
        assert post(http_url, admin_token, "SELECT 1 AS one").status == 200


# -- a client that goes away -------------------------------------------------


def _audit_records(mesh_dir, query_id: str) -> list[dict]:
    path = mesh_dir / "audit.jsonl"
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("query_id") == query_id:
            records.append(record)
    return records


def test_a_client_that_disconnects_stops_its_query(server, http_url, admin_token, mesh_dir):
    sql = ("SELECT a.encounter_id, b.encounter_id FROM clinical.encounters.visits a "
           "CROSS JOIN clinical.encounters.visits b")
    with raw_connection(http_url) as conn:
        conn.sendall(raw_query_head(http_url, admin_token, len(sql), accept="text/csv") + sql.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        query_id = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-meshgate-query-id:")
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        results = [r for r in _audit_records(mesh_dir, query_id) if r["rpc"].endswith("(results)")]
        if results:
            break
        time.sleep(0.2)
    assert results, f"no audit record of the results of {query_id}"
    assert results[0]["outcome"] == "cancelled", results[0]
    assert post(http_url, admin_token, "SELECT 1 AS one").status == 200


def test_a_query_ends_in_exactly_one_audit_record(server, http_url, admin_token, mesh_dir):
    answer = post(http_url, admin_token, "SELECT count(*) AS n FROM reference.regions.regions")
    assert answer.status == 200
    query_id = answer.headers["x-meshgate-query-id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _audit_records(mesh_dir, query_id):
        time.sleep(0.2)
    time.sleep(0.5)
    records = _audit_records(mesh_dir, query_id)
    assert len(records) == 1, records
    assert records[0]["outcome"] == "ok" and records[0]["tables"] == ["reference.regions.regions"], records[0]
    refused = post(http_url, admin_token, "SELECT * FROM nowhere.nothing.none")
    missing_id = refused.json()["error"]["query_id"]
    time.sleep(0.5)
    assert len(_audit_records(mesh_dir, missing_id)) == 1
