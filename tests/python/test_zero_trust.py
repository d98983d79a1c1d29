"""Zero trust: authentication on every RPC, and per-principal policies that cannot be bypassed.

* Authentication table: every malformed, forged, expired or foreign token is
  refused with UNAUTHENTICATED, through ADBC and through plain pyarrow.flight,
  for queries and for metadata calls alike.
* Differential oracle: for each persona, DuckDB holds a copy of every table the
  persona may read, already row-filtered and masked as the demo policy says
  (policy_model.py); the same SQL must give the same answer on the gateway.
  Hashed columns (an HMAC under a key only the server has) are compared only
  through hash-insensitive facts: equality structure, counts, NULL-ness.
* Errors, EXPLAIN, handle replay and NOT_FOUND messages must not reveal what the
  principal may not see.

Personas (policy_model.PERSONAS): ana = clinician of region north, ben =
analyst, cara = billing, dev = admin + pii_reader.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import adbc_driver_manager as adm
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import serve_config, start_server
from mesh_helpers import (
    DEMO_AUDIENCE,
    DEMO_ISSUER,
    TABLES,
    FlightConn,
    Oracle,
    ServerStartError,
    adbc_connect,
    adbc_query,
    assert_rows_equal,
    b64url,
    bearer,
    command_get_catalogs,
    command_prepared_statement_query,
    command_statement_query,
    craft_jwt,
    demo_claims,
    flight_command_info,
    flight_read_all,
    jwt_parts,
    mint_token,
    pack_any,
    run_cli,
    split_name,
    table_rows,
    _len_field,
)
from policy_model import (
    ORACLE_HASH_PREFIX,
    PERSONAS,
    can_read,
    aggregate_threshold,
    column_mask,
    hashed_columns,
    invisible_tables,
    oracle_view,
    visible_products,
    visible_tables,
)

Code = adm.AdbcStatusCode
PROBE_SQL = "SELECT count(*) AS n FROM reference.regions.regions"
SYSTEM_TABLES = {
    "mesh.meta.products",
    "mesh.meta.tables",
    "mesh.meta.columns",
    "mesh.meta.primary_keys",
    "mesh.meta.relationships",
    "mesh.meta.slas",
    "mesh.meta.quality",
    "mesh.meta.quality_checks",
    "mesh.meta.quality_history",
    "mesh.meta.runs",
    "mesh.meta.lineage",
    "mesh.meta.usage",
    "mesh.meta.column_usage",
    "mesh.meta.budgets",
}
DIFF_PERSONAS = ["ana", "ben", "cara"]


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens(mint) -> dict[str, str]:
    """A token per persona, minted with `meshgate token --demo-dir`."""
    return {name: mint(*p.mint_args()) for name, p in PERSONAS.items()}


@pytest.fixture(scope="module")
def conns(front, tokens):
    """One ADBC connection per persona (module-wide; the gateway keeps no state per connection)."""
    opened = {name: adbc_connect(front.uri, tok) for name, tok in tokens.items()}
    try:
        yield opened
    finally:
        for conn in opened.values():
            try:
                conn.close()
            except Exception:
                pass


@pytest.fixture(scope="module")
def oracles(demo) -> dict[str, Oracle]:
    """A DuckDB copy of the mesh per persona, filtered and masked for that persona."""
    return {name: Oracle(demo.mesh_dir, oracle_view(p)) for name, p in PERSONAS.items()}


@pytest.fixture
def fl(server) -> FlightConn:
    """A pyarrow Flight client with no authorization of its own: every call says whose it is."""
    client = FlightConn(server.uri, None)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def raw_values(oracle) -> dict[str, list[str]]:
    """Stored values that masked principals must never see, as text."""

    def distinct(sql: str) -> list[str]:
        return [str(v) for v in oracle.query(sql).column(0).to_pylist() if v is not None]

    return {
        "given_name": distinct("SELECT DISTINCT given_name FROM patients.registry.patients"),
        "family_name": distinct("SELECT DISTINCT family_name FROM patients.registry.patients"),
        "postcode": distinct("SELECT DISTINCT postcode FROM patients.registry.patients"),
        "birth_date": distinct("SELECT DISTINCT CAST(birth_date AS VARCHAR) FROM patients.registry.patients"),
        "diagnosis_code": distinct("SELECT DISTINCT diagnosis_code FROM clinical.encounters.visits"),
    }


def adbc_err(conn, sql: str, params=None) -> adm.Error:
    with pytest.raises(adm.Error) as info:
        adbc_query(conn, sql, params)
    return info.value


def flight_err(fn) -> Exception:
    # pyarrow raises ArrowException subclasses, but a plain OSError for some RPCs (GetSchema).
    with pytest.raises((pa.ArrowException, OSError)) as info:
        fn()
    return info.value


def is_unauthenticated(err: Exception) -> bool:
    """pyarrow's view of gRPC UNAUTHENTICATED (FlightUnauthenticatedError, or OSError from GetSchema)."""
    return isinstance(err, flight.FlightUnauthenticatedError) or str(err).startswith(
        "Flight returned unauthenticated error"
    )


def whole_word_hits(text: str, values: list[str]) -> list[str]:
    """Which of `values` occur in `text` as whole tokens (case-sensitive).

    Tokens are runs of letters, digits, `_`, `.` and `-`, and also their pieces
    between dots and hyphens, so `Utf8("Ada")`, `x.Ada` and `1979-07-09` all count.
    """
    tokens: set[str] = set()
    for tok in re.findall(r"[A-Za-z0-9_.\-]+", text):
        tok = tok.strip(".-")
        tokens.add(tok)
        tokens.update(re.split(r"[.\-]", tok))
    return sorted(set(values) & tokens)


def excerpt(text: str, needle: str, width: int = 160) -> str:
    i = text.find(needle)
    if i < 0:
        return text[:width]
    return "..." + text[max(0, i - width // 2): i + len(needle) + width // 2] + "..."


# ==========================================================================
# Authentication
# ==========================================================================


@pytest.fixture(scope="module")
def auth_cases(demo, meshgate_bin, demo_secret_file, admin_token, tmp_path_factory) -> dict:
    """case -> (authorization header value or None, reasons any of which the error should give)."""
    secret = demo_secret_file.read_bytes().rstrip(b"\r\n")
    other = tmp_path_factory.mktemp("other-secret") / "secret"
    other.write_text(hashlib.sha256(b"not the demo secret").hexdigest())  # 64 hex chars, like the demo's
    now = int(time.time())

    def generic(*args) -> str:
        return mint_token(meshgate_bin, "--sub", "pytest", "--role", "admin", "--role", "pii_reader", *args)

    # A genuine token whose claims were edited after signing.
    head, _body, sig = admin_token.split(".")
    _, claims = jwt_parts(admin_token)
    tampered = head + "." + b64url(json.dumps(dict(claims, sub="someone-else"), separators=(",", ":")).encode()) + "." + sig
    return {
        "no-header": (None, ["missing bearer token"]),
        "bearer-garbage": ("Bearer garbage", ["malformed token"]),
        "basic-scheme": ("Basic cHl0ZXN0OnB5dGVzdA==", ["Bearer"]),
        "raw-token-without-scheme": (admin_token, ["Bearer"]),
        "wrong-signature": (
            bearer(generic("--secret-file", other, "--alg", "HS256", "--issuer", DEMO_ISSUER, "--audience", DEMO_AUDIENCE)),
            ["invalid signature"],
        ),
        "tampered-claims": (bearer(tampered), ["invalid signature"]),
        "wrong-audience": (
            bearer(generic("--secret-file", demo_secret_file, "--issuer", DEMO_ISSUER, "--audience", "other")),
            ["wrong audience"],
        ),
        "untrusted-issuer": (
            bearer(generic("--secret-file", demo_secret_file, "--issuer", "someone-else", "--audience", DEMO_AUDIENCE)),
            ["untrusted issuer"],
        ),
        "expired": (
            bearer(craft_jwt(demo_claims(iat=now - 1200, nbf=now - 1200, exp=now - 600), secret)),
            ["token expired"],
        ),
        "not-yet-valid": (
            bearer(craft_jwt(demo_claims(iat=now, nbf=now + 600, exp=now + 1200), secret)),
            ["not yet valid"],
        ),
        "alg-none": (
            bearer(craft_jwt(demo_claims(), None, alg="none")),
            ["malformed token", "algorithm not accepted"],
        ),
        "alg-HS512-same-secret": (
            bearer(craft_jwt(demo_claims(), secret, alg="HS512")),
            ["algorithm not accepted"],
        ),
        "missing-sub": (bearer(craft_jwt(demo_claims(sub=None), secret)), ["required claim"]),
        "empty-sub": (bearer(craft_jwt(demo_claims(sub=""), secret)), ["required claim", "subject"]),
        "missing-exp": (bearer(craft_jwt(demo_claims(exp=None), secret)), ["required claim"]),
    }


AUTH_CASE_IDS = [
    "no-header",
    "bearer-garbage",
    "basic-scheme",
    "raw-token-without-scheme",
    "wrong-signature",
    "tampered-claims",
    "wrong-audience",
    "untrusted-issuer",
    "expired",
    "not-yet-valid",
    "alg-none",
    "alg-HS512-same-secret",
    "missing-sub",
    "empty-sub",
    "missing-exp",
]


def _check_reason(message: str, reasons: list[str], authorization: str | None) -> None:
    assert any(r.lower() in message.lower() for r in reasons), f"reason should mention one of {reasons}: {message}"
    if authorization and len(authorization) > 40:
        token = authorization.split(" ", 1)[-1]
        assert token not in message, f"the error echoes the token back: {message}"


@pytest.mark.parametrize("case", AUTH_CASE_IDS)
def test_adbc_refuses_bad_token(server, auth_cases, case):
    authorization, reasons = auth_cases[case]
    conn = None
    with pytest.raises(adm.Error) as info:
        conn = adbc_connect(server.uri, authorization=authorization)
        adbc_query(conn, PROBE_SQL)
    if conn is not None:
        conn.close()
    err = info.value
    assert err.status_code == Code.UNAUTHENTICATED, f"{case}: status {err.status_code.name}: {err}"
    _check_reason(str(err), reasons, authorization)


@pytest.mark.parametrize("case", AUTH_CASE_IDS)
def test_pyarrow_refuses_bad_token(fl, auth_cases, case):
    authorization, reasons = auth_cases[case]
    err = flight_err(lambda: flight_read_all(fl, flight_command_info(fl, command_statement_query(PROBE_SQL), auth=authorization), auth=authorization))
    assert is_unauthenticated(err), f"{case}: {type(err).__name__}: {err}"
    _check_reason(str(err), reasons, authorization)


@pytest.fixture(scope="module")
def good_tokens(admin_token, demo_secret_file) -> dict[str, str]:
    secret = demo_secret_file.read_bytes().rstrip(b"\r\n")
    return {
        "minted": admin_token,
        # Proves the hand-made tokens above fail for the reason they were made for.
        "crafted": craft_jwt(demo_claims(roles=["admin"]), secret),
    }


@pytest.mark.parametrize("which", ["minted", "crafted"])
def test_good_token_accepted(server, oracle, good_tokens, which):
    tok = good_tokens[which]
    conn = adbc_connect(server.uri, tok)
    try:
        assert adbc_query(conn, PROBE_SQL).column("n")[0].as_py() == oracle.count("reference.regions.regions")
    finally:
        conn.close()
    client = FlightConn(server.uri, tok)
    try:
        got = flight_read_all(client, flight_command_info(client, command_statement_query(PROBE_SQL)))[0]
        assert got.column("n")[0].as_py() == oracle.count("reference.regions.regions")
    finally:
        client.close()


def test_adbc_metadata_without_token(server):
    conn = adbc_connect(server.uri, None)
    try:
        for name, call in [
            ("adbc_get_objects", lambda: conn.adbc_get_objects(depth="all").read_all()),
            ("adbc_get_table_types", lambda: conn.adbc_get_table_types()),
            ("adbc_get_table_schema", lambda: conn.adbc_get_table_schema("regions", catalog_filter="reference", db_schema_filter="regions")),
        ]:
            with pytest.raises(adm.Error) as info:
                call()
            assert info.value.status_code == Code.UNAUTHENTICATED, f"{name}: {info.value.status_code.name}: {info.value}"
    finally:
        conn.close()


def _create_prepared_action(sql: str) -> flight.Action:
    """ActionCreatePreparedStatementRequest { string query = 1; }"""
    return flight.Action(
        "CreatePreparedStatement",
        pack_any("ActionCreatePreparedStatementRequest", _len_field(1, sql.encode())),
    )


def _close_prepared_action(handle: bytes) -> flight.Action:
    """ActionClosePreparedStatementRequest { bytes prepared_statement_handle = 1; }"""
    return flight.Action(
        "ClosePreparedStatement",
        pack_any("ActionClosePreparedStatementRequest", _len_field(1, handle)),
    )


PYARROW_UNAUTHENTICATED_CALLS = {
    "GetFlightInfo(GetCatalogs)": lambda c: c.get_flight_info(flight.FlightDescriptor.for_command(command_get_catalogs()), auth=None),
    "GetSchema(GetCatalogs)": lambda c: c.get_schema(flight.FlightDescriptor.for_command(command_get_catalogs()), auth=None),
    "DoGet(bogus ticket)": lambda c: c.do_get(flight.Ticket(b"0" * 32), auth=None).read_all(),
    "DoAction(CreatePreparedStatement)": lambda c: c.do_action(_create_prepared_action(PROBE_SQL), auth=None),
    "ListActions": lambda c: c.list_actions(auth=None),
    "ListFlights": lambda c: c.list_flights(auth=None),
    "Handshake(basic)": lambda c: c.raw.authenticate_basic_token("pytest", "pytest"),
}


@pytest.mark.parametrize("call", sorted(PYARROW_UNAUTHENTICATED_CALLS))
def test_pyarrow_rpcs_without_token(fl, call):
    err = flight_err(lambda: PYARROW_UNAUTHENTICATED_CALLS[call](fl))
    assert is_unauthenticated(err), f"{call}: {type(err).__name__}: {err}"


def test_pyarrow_do_put_without_token(fl):
    descriptor = flight.FlightDescriptor.for_command(command_prepared_statement_query(b"0" * 32))
    err = flight_err(lambda: _put_one_row(fl, descriptor, None))
    assert is_unauthenticated(err), f"{type(err).__name__}: {err}"


def _put_one_row(client: FlightConn, descriptor, auth) -> None:
    batch = pa.record_batch({"p": pa.array([1], pa.int64())})
    writer, reader = client.do_put(descriptor, batch.schema, auth=auth)
    try:
        writer.write_batch(batch)
        writer.done_writing()
        reader.read()
    finally:
        writer.close()


def test_flightsql_dbapi_without_token_is_refused(server):
    """flightsql-dbapi without a token sends `Bearer None`."""
    from flightsql import FlightSQLClient
    from flightsql.dbapi import Connection

    client = FlightSQLClient(host=server.host, port=server.port, insecure=True)
    try:
        cur = Connection(client).cursor()
        err = flight_err(lambda: cur.execute(PROBE_SQL))
        assert is_unauthenticated(err), f"{type(err).__name__}: {err}"
    finally:
        client.close()


def test_sqlalchemy_with_persona_token(server, tokens, oracles):
    """The token travels in the SQLAlchemy URL (`?insecure=true&token=...`) and selects the persona."""
    import flightsql.sqlalchemy  # noqa: F401
    from sqlalchemy import create_engine, text

    from conftest import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(server.host, server.port, tokens["ana"]))
    sql = "SELECT region, count(*) AS n FROM clinical.encounters.visits GROUP BY region ORDER BY region"
    try:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(sql)).fetchall()]
    finally:
        engine.dispose()
    assert_rows_equal(rows, oracles["ana"].query(sql), ordered=True)
    assert [r[0] for r in rows] == ["north"], rows


def test_demo_prints_working_persona_tokens(server, oracles):
    """`meshgate demo` prints `export MESHGATE_TOKEN_<NAME>=<jwt>` for each persona."""
    printed = dict(re.findall(r"export MESHGATE_TOKEN_([A-Z]+)=(\S+)", server.output(tail=100000)))
    assert set(printed) >= {"ANA", "BEN", "CARA", "DEV"}, f"persona tokens printed: {sorted(printed)}"
    for name, tok in printed.items():
        persona = PERSONAS.get(name.lower())
        if persona is None:
            continue
        _, claims = jwt_parts(tok)
        assert claims.get("sub") == persona.name, claims
        assert set(claims.get("roles") or []) == set(persona.roles), claims
        for key, value in persona.attributes.items():
            assert claims.get(key) == value, claims
    conn = adbc_connect(server.uri, printed["ANA"])
    try:
        sql = "SELECT count(*) AS n FROM clinical.encounters.visits"
        assert_rows_equal(adbc_query(conn, sql), oracles["ana"].query(sql))
    finally:
        conn.close()


# --------------------------------------------------------------------------
# serve: no anonymous mode, no accidental plaintext
# --------------------------------------------------------------------------


def test_serve_accepts_documented_key_form(demo, meshgate_bin, demo_secret_file, tmp_path, admin_token, oracle):
    """The documented `key: { secret_file: PATH }` form of an issuer's key."""
    config = tmp_path / "meshgate.yaml"
    config.write_text(serve_config(demo_secret_file))
    argv = [meshgate_bin, "serve", "--mesh", demo.mesh_dir, "--listen", "127.0.0.1:0", "--plaintext", "--config", config]
    try:
        srv = start_server(argv, "serve-map-key")
    except ServerStartError as exc:
        pytest.fail(f"serve refused the documented config:\n{config.read_text()}\n{exc}", pytrace=False)
    try:
        conn = adbc_connect(srv.uri, admin_token)
        try:
            assert adbc_query(conn, PROBE_SQL).column("n")[0].as_py() == oracle.count("reference.regions.regions")
        finally:
            conn.close()
    finally:
        srv.stop()


def test_serve_refuses_to_start_without_issuer(demo, meshgate_bin):
    res = run_cli([meshgate_bin, "serve", "--mesh", demo.mesh_dir, "--listen", "127.0.0.1:0", "--plaintext"], timeout=30)
    assert res.returncode != 0, f"serve started with no token issuer:\n{res.stdout}"
    assert "issuer" in res.stdout.lower(), res.stdout


def test_serve_refuses_implicit_plaintext(demo, meshgate_bin, demo_secret_file, tmp_path):
    config = tmp_path / "meshgate.yaml"
    config.write_text(serve_config(demo_secret_file).replace("plaintext: true\n", ""))
    res = run_cli([meshgate_bin, "serve", "--mesh", demo.mesh_dir, "--listen", "127.0.0.1:0", "--config", config], timeout=30)
    assert res.returncode != 0, f"serve started without TLS and without --plaintext:\n{res.stdout}"
    assert "plaintext" in res.stdout.lower() or "tls" in res.stdout.lower(), res.stdout


# ==========================================================================
# Differential oracle: same SQL, persona's gateway vs persona's DuckDB copy
# ==========================================================================

# (id, SQL, hash_sensitive): hash_sensitive queries output a hashed column's
# values (or an order that depends on them) and only run for personas who see
# that column in clear.
DIFF_QUERIES: list[tuple[str, str, bool]] = [
    # plain SELECT with ORDER BY
    ("select-visits", "SELECT encounter_id, patient_id, facility_id, region, kind, admitted_at, discharged_at, admit_month "
     "FROM clinical.encounters.visits WHERE encounter_id % 31 = 3 ORDER BY encounter_id", False),
    ("select-visits-diagnosis", "SELECT encounter_id, diagnosis_code FROM clinical.encounters.visits "
     "WHERE encounter_id % 31 = 3 ORDER BY encounter_id", True),
    ("select-patients", "SELECT * FROM patients.registry.patients WHERE patient_id % 13 = 5 ORDER BY patient_id", False),
    ("select-labs", "SELECT * FROM clinical.labs.results WHERE result_id % 43 = 7 ORDER BY result_id", False),
    ("select-claims", "SELECT * FROM billing.claims.claims WHERE claim_id % 37 = 1 ORDER BY claim_id", False),
    ("select-facilities", "SELECT * FROM reference.facilities.facilities ORDER BY facility_id", False),
    ("distinct-regions", "SELECT DISTINCT region FROM clinical.encounters.visits ORDER BY region", False),
    # subqueries
    ("subquery-in", "SELECT count(*) AS n FROM clinical.encounters.visits "
     "WHERE patient_id IN (SELECT patient_id FROM patients.registry.patients WHERE sex = 'F')", False),
    ("scalar-subqueries", "SELECT (SELECT count(*) FROM clinical.encounters.visits) AS visits, "
     "(SELECT count(*) FROM patients.registry.patients) AS patients, "
     "(SELECT max(region) FROM clinical.encounters.visits) AS max_region", False),
    ("derived-table", "SELECT region, n FROM (SELECT region, count(*) AS n FROM clinical.encounters.visits "
     "GROUP BY region) t ORDER BY region", False),
    ("exists-correlated", "SELECT count(*) AS n FROM patients.registry.patients p WHERE EXISTS "
     "(SELECT 1 FROM clinical.encounters.visits v WHERE v.patient_id = p.patient_id AND v.region <> p.region)", False),
    # CTEs shadowing table names
    ("cte-shadows-visits", "WITH visits AS (SELECT * FROM clinical.encounters.visits) "
     "SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region", False),
    ("cte-shadows-patients", "WITH patients AS (SELECT patient_id, given_name, birth_date, region FROM patients.registry.patients), "
     "visits AS (SELECT patient_id, region FROM clinical.encounters.visits) "
     "SELECT p.region, count(*) AS n, count(DISTINCT p.given_name) AS names, count(p.birth_date) AS births "
     "FROM visits v JOIN patients p ON p.patient_id = v.patient_id GROUP BY p.region ORDER BY p.region", False),
    ("cte-named-results", "WITH results AS (SELECT region AS r, diagnosis_code AS d FROM clinical.encounters.visits) "
     "SELECT r, count(*) AS n, count(DISTINCT d) AS codes FROM results GROUP BY r ORDER BY r", False),
    # self-joins
    ("self-join-patient", "SELECT count(*) AS pairs FROM clinical.encounters.visits a JOIN clinical.encounters.visits b "
     "ON a.patient_id = b.patient_id AND a.encounter_id < b.encounter_id", False),
    ("self-join-diagnosis", "SELECT count(*) AS pairs FROM clinical.encounters.visits a JOIN clinical.encounters.visits b "
     "ON a.diagnosis_code = b.diagnosis_code AND a.encounter_id < b.encounter_id "
     "WHERE a.admit_month = '2024-03' AND b.admit_month = '2024-03'", False),
    # joins with patients and other products
    ("join-patients", "SELECT p.sex, v.kind, count(*) AS n, count(DISTINCT p.given_name) AS names, "
     "min(p.birth_date) AS first_birth, max(p.postcode) AS max_postcode "
     "FROM clinical.encounters.visits v JOIN patients.registry.patients p ON p.patient_id = v.patient_id "
     "GROUP BY p.sex, v.kind ORDER BY p.sex, v.kind", False),
    ("join-patients-on-masked", "SELECT count(*) AS n FROM patients.registry.patients a "
     "JOIN patients.registry.patients b ON a.given_name = b.family_name WHERE a.patient_id % 101 = 1", False),
    ("join-labs", "SELECT v.kind, count(*) AS n, count(r.value) AS with_value, sum(r.value) AS total, min(r.value) AS lo "
     "FROM clinical.labs.results r JOIN clinical.encounters.visits v ON v.encounter_id = r.encounter_id "
     "GROUP BY v.kind ORDER BY v.kind", False),
    ("join-claims", "SELECT v.region, count(*) AS n, sum(c.amount) AS billed FROM billing.claims.claims c "
     "JOIN clinical.encounters.visits v ON v.encounter_id = c.encounter_id GROUP BY v.region ORDER BY v.region", False),
    ("join-claims-facilities", "SELECT f.kind, count(*) AS n, sum(c.amount) AS billed FROM billing.claims.claims c "
     "JOIN reference.facilities.facilities f ON f.facility_id = c.claim_id % 50 GROUP BY f.kind ORDER BY f.kind", False),
    # UNION / UNION ALL
    ("union", "SELECT region FROM clinical.encounters.visits UNION SELECT region FROM patients.registry.patients "
     "ORDER BY region", False),
    ("union-all", "SELECT count(*) AS n FROM (SELECT patient_id FROM clinical.encounters.visits "
     "UNION ALL SELECT patient_id FROM patients.registry.patients) t", False),
    ("union-masked", "SELECT given_name AS s FROM patients.registry.patients UNION SELECT family_name FROM patients.registry.patients "
     "UNION SELECT postcode FROM patients.registry.patients ORDER BY s", False),
    # GROUP BY / ORDER BY / MIN / MAX on masked columns
    ("group-by-masked", "SELECT given_name, family_name, count(*) AS n FROM patients.registry.patients "
     "GROUP BY given_name, family_name ORDER BY n DESC, given_name, family_name LIMIT 20", False),
    ("min-max-masked", "SELECT min(given_name) AS lo, max(family_name) AS hi, min(birth_date) AS b_lo, max(birth_date) AS b_hi, "
     "count(birth_date) AS births, count(DISTINCT postcode) AS postcodes FROM patients.registry.patients", False),
    ("order-by-masked", "SELECT patient_id, given_name FROM patients.registry.patients ORDER BY given_name, patient_id LIMIT 15", False),
    ("order-by-masked-desc", "SELECT patient_id, family_name, birth_date FROM patients.registry.patients "
     "ORDER BY family_name DESC, birth_date, patient_id DESC LIMIT 15", False),
    ("order-by-hashed", "SELECT encounter_id FROM clinical.encounters.visits ORDER BY diagnosis_code, encounter_id LIMIT 15", True),
    # WHERE on masked columns
    ("where-given-name", "SELECT count(*) AS n FROM patients.registry.patients WHERE given_name = 'Ada'", False),
    ("where-like-masked", "SELECT count(*) AS n FROM patients.registry.patients WHERE given_name LIKE 'A%' OR family_name LIKE 'S%' "
     "OR postcode LIKE 'P1%'", False),
    ("where-redacted", "SELECT count(*) AS n FROM patients.registry.patients WHERE given_name = 'REDACTED'", False),
    ("where-birth-date", "SELECT count(*) AS n FROM patients.registry.patients WHERE birth_date < DATE '2000-01-01'", False),
    ("where-diagnosis", "SELECT count(*) AS n FROM clinical.encounters.visits WHERE diagnosis_code = 'E11.9'", False),
    ("where-diagnosis-like", "SELECT count(*) AS n FROM clinical.encounters.visits "
     "WHERE diagnosis_code LIKE 'E%' OR diagnosis_code IN ('I10', 'R51')", False),
    ("where-diagnosis-null", "SELECT count(*) AS n FROM clinical.encounters.visits WHERE diagnosis_code IS NULL", False),
    ("where-lab-value", "SELECT count(*) AS n FROM clinical.labs.results WHERE value > 0", False),
    # hash-insensitive facts about hashed columns
    ("diagnosis-structure", "SELECT count(*) AS n, count(diagnosis_code) AS coded, count(DISTINCT diagnosis_code) AS codes "
     "FROM clinical.encounters.visits", False),
    ("diagnosis-group-sizes", "SELECT n, count(*) AS groups FROM (SELECT diagnosis_code, count(*) AS n "
     "FROM clinical.encounters.visits GROUP BY diagnosis_code) t GROUP BY n ORDER BY n", False),
    ("diagnosis-codes-per-kind", "SELECT kind, count(DISTINCT diagnosis_code) AS codes FROM clinical.encounters.visits "
     "GROUP BY kind ORDER BY kind", False),
    ("lab-values", "SELECT test_code, count(*) AS n, count(value) AS valued, min(value) AS lo, max(value) AS hi "
     "FROM clinical.labs.results GROUP BY test_code ORDER BY test_code", False),
    ("lab-groups", "SELECT test_code, abnormal, count(*) AS n, round(avg(value), 6) AS mean FROM clinical.labs.results "
     "WHERE result_id % 200 = 0 GROUP BY test_code, abnormal ORDER BY test_code, abnormal", False),
    ("window", "SELECT region, count(*) AS n FROM (SELECT region, row_number() OVER (PARTITION BY region ORDER BY encounter_id) AS rn "
     "FROM clinical.encounters.visits) t WHERE rn <= 3 GROUP BY region ORDER BY region", False),
    ("claims-by-status", "SELECT status, count(*) AS n, sum(amount) AS total FROM billing.claims.claims GROUP BY status ORDER BY status", False),
    # case and quoting variants of the same name
    ("case-upper", "SELECT count(*) AS n, count(DISTINCT region) AS regions FROM CLINICAL.Encounters.VISITS", False),
    ("case-quoted", 'SELECT count(*) AS n, count(DISTINCT region) AS regions FROM "clinical"."encounters"."visits"', False),
    ("case-mixed-patients", 'SELECT count(*) AS n, max(given_name) AS g FROM Patients."registry".PATIENTS', False),
] + [
    # COUNT(*) must be the persona's count, not the file statistics
    (f"count-{fqtn}", f"SELECT count(*) AS n, count(1) AS n1 FROM {fqtn}", False)
    for fqtn in sorted(TABLES)
]


# How each query that reads `clinical.labs.results` answers a principal who reads it only
# in aggregate (policy_model.AGGREGATE_ONLY: groups of at least 11 distinct patients):
# REFUSED when its rows reach anything but an aggregate of functions that return no one
# row's value, else the query with the threshold applied by hand, for DuckDB.
REFUSED = "refused"
AGGREGATE_ONLY_ANSWERS: dict[str, str] = {
    "select-labs": REFUSED,  # returns its rows
    "join-labs": REFUSED,  # min() returns one row's value
    "lab-values": REFUSED,  # min() and max()
    "where-lab-value": "SELECT count(*) AS n FROM clinical.labs.results WHERE value > 0 "
                       "HAVING count(DISTINCT patient_id) >= 11",
    "lab-groups": "SELECT test_code, abnormal, count(*) AS n, round(avg(value), 6) AS mean "
                  "FROM clinical.labs.results WHERE result_id % 200 = 0 GROUP BY test_code, abnormal "
                  "HAVING count(DISTINCT patient_id) >= 11 ORDER BY test_code, abnormal",
    "count-clinical.labs.results": "SELECT count(*) AS n, count(1) AS n1 FROM clinical.labs.results "
                                   "HAVING count(DISTINCT patient_id) >= 11",
}
# Queries whose answer leaves groups out for such a principal (the data shows the rule).
AGGREGATE_ONLY_SUPPRESSES = {"lab-groups"}


def referenced_tables(sql: str) -> set[str]:
    norm = sql.lower().replace('"', "")
    return {t for t in TABLES if re.search(r"(?<![a-z0-9_.])" + re.escape(t) + r"(?![a-z0-9_])", norm)}


def _depends_on_hash(persona: str, sql: str) -> bool:
    return any(hashed_columns(PERSONAS[persona], t) for t in referenced_tables(sql))


DIFF_PARAMS = [
    pytest.param(persona, qid, sql, id=f"{persona}-{qid}")
    for qid, sql, hash_sensitive in DIFF_QUERIES
    for persona in DIFF_PERSONAS
    if not (hash_sensitive and _depends_on_hash(persona, sql))
]


def assert_not_found_like(err: adm.Error, candidates: set[str], context: str) -> None:
    assert err.status_code == Code.NOT_FOUND, f"{context}: status {err.status_code.name}: {err}"
    assert any(f"table '{t}' not found" in str(err) for t in candidates), (
        f"{context}: message should be \"table '<one of {sorted(candidates)}>' not found\": {err}"
    )


@pytest.mark.parametrize("persona, qid, sql", DIFF_PARAMS)
def test_differential(server, conns, oracles, persona, qid, sql):
    p = PERSONAS[persona]
    hidden = {t for t in referenced_tables(sql) if not can_read(p, t)}
    assert referenced_tables(sql), f"query {qid} names no table of the mesh"
    if hidden:
        err = adbc_err(conns[persona], sql)
        assert_not_found_like(err, hidden, f"[{persona}] {qid}")
        return
    if any(aggregate_threshold(p, t) for t in referenced_tables(sql)):
        answer = AGGREGATE_ONLY_ANSWERS.get(qid)
        assert answer is not None, f"{qid} reads a table {persona} reads only in aggregate: say how it answers"
        if answer == REFUSED:
            err = adbc_err(conns[persona], sql)
            assert err.status_code == Code.UNAUTHORIZED, f"[{persona}] {qid}: {err.status_code.name}: {err}"
            assert "aggregate" in str(err), f"[{persona}] {qid}: the refusal names no rule: {err}"
            return
        held = oracles[persona].query(answer)
        if qid in AGGREGATE_ONLY_SUPPRESSES:
            whole = oracles[persona].query(sql)
            assert 0 < held.num_rows < whole.num_rows, f"{qid}: the demo data leaves no group out ({held.num_rows})"
        got = adbc_query(conns[persona], sql)
        assert_rows_equal(got, held, ordered=True, context=f"[{persona}] {qid}: ")
        return
    got = adbc_query(conns[persona], sql)
    want = oracles[persona].query(sql)
    assert_rows_equal(got, want, ordered=True, context=f"[{persona}] {qid}: ")


# -- explicit expectations, so a wrong oracle cannot make a leak look right --


def test_where_on_masked_name_matches_nothing(conns, oracle):
    sql = "SELECT count(*) AS n FROM patients.registry.patients WHERE given_name = 'Ada'"
    assert oracle.scalar(sql) > 0, "the demo data has no patient called Ada; pick another name"
    for persona in ["ana", "ben"]:
        assert adbc_query(conns[persona], sql).column("n")[0].as_py() == 0, persona
    assert adbc_query(conns["dev"], sql).column("n")[0].as_py() == oracle.scalar(sql)


def test_where_on_hashed_code_matches_nothing_for_ben(conns, oracle):
    sql = "SELECT count(*) AS n FROM clinical.encounters.visits WHERE diagnosis_code = 'E11.9'"
    assert oracle.scalar(sql) > 0, "the demo data has no E11.9; pick another code"
    assert adbc_query(conns["ben"], sql).column("n")[0].as_py() == 0
    north = oracle.scalar(sql + " AND region = 'north'")
    assert adbc_query(conns["ana"], sql).column("n")[0].as_py() == north


def test_ana_sees_only_north_rows(conns, oracle):
    for fqtn in ["clinical.encounters.visits", "patients.registry.patients"]:
        got = adbc_query(conns["ana"], f"SELECT region, count(*) AS n FROM {fqtn} GROUP BY region")
        assert got.column("region").to_pylist() == ["north"], f"{fqtn}: {got.to_pylist()}"
        assert got.column("n")[0].as_py() == oracle.count(fqtn, "region = 'north'"), fqtn
    # labs has no row filter: ana sees every region's labs.
    assert adbc_query(conns["ana"], "SELECT count(*) AS n FROM clinical.labs.results").column("n")[0].as_py() == oracle.count(
        "clinical.labs.results"
    )


@pytest.mark.parametrize("persona", ["ana", "ben"])
@pytest.mark.parametrize("fqtn", ["clinical.encounters.visits", "patients.registry.patients", "clinical.labs.results"])
def test_select_star_limit(conns, oracles, persona, fqtn):
    """SELECT * ... LIMIT: the whole table has the persona's row count; a few rows are persona rows
    (or, for a persona who reads the table only in aggregate, a refusal naming the rule)."""
    if aggregate_threshold(PERSONAS[persona], fqtn):
        err = adbc_err(conns[persona], f"SELECT * FROM {fqtn} LIMIT 7")
        assert err.status_code == Code.UNAUTHORIZED and "aggregate" in str(err), err
        return
    big = adbc_query(conns[persona], f"SELECT * FROM {fqtn} LIMIT 1000000")
    assert big.num_rows == oracles[persona].count(fqtn), f"[{persona}] {fqtn}: {big.num_rows} rows"
    few = adbc_query(conns[persona], f"SELECT * FROM {fqtn} LIMIT 7")
    assert few.num_rows == 7
    keep = [c for c in few.column_names if c not in hashed_columns(PERSONAS[persona], fqtn)]
    allowed = set(table_rows(oracles[persona].query(f"SELECT {', '.join(keep)} FROM {fqtn}")))
    for row in table_rows(few.select(keep)):
        assert row in allowed, f"[{persona}] {fqtn}: row {row} is not one this persona may see"


PREPARED = [
    ("SELECT count(*) AS n FROM clinical.encounters.visits WHERE region = ?", [("south",), ("north",)]),
    ("SELECT count(*) AS n FROM patients.registry.patients WHERE given_name = ? OR postcode = ?", [("Ada", "P46220"), ("REDACTED", "x")]),
    ("SELECT count(*) AS n FROM clinical.encounters.visits WHERE diagnosis_code = ?", [("E11.9",), ("I10",)]),
    ("SELECT patient_id, given_name, birth_date FROM patients.registry.patients WHERE patient_id % ? = 1 ORDER BY patient_id",
     [(97,), (331,)]),
    ("SELECT status, count(*) AS n FROM billing.claims.claims WHERE status = ? GROUP BY status", [("paid",)]),
]


@pytest.mark.parametrize("persona", DIFF_PERSONAS)
def test_prepared_with_parameters(conns, oracles, persona):
    p = PERSONAS[persona]
    for sql, param_sets in PREPARED:
        hidden = {t for t in referenced_tables(sql) if not can_read(p, t)}
        if hidden:
            # A failed prepare leaves an ADBC cursor unusable for a re-execute: one cursor per try.
            for params in param_sets:
                with conns[persona].cursor() as cur:
                    with pytest.raises(adm.Error) as info:
                        cur.execute(sql, parameters=params)
                        cur.fetch_arrow_table()
                assert_not_found_like(info.value, hidden, f"[{persona}] {sql} {params}")
            continue
        with conns[persona].cursor() as cur:
            for params in param_sets:
                cur.execute(sql, parameters=params)
                got = cur.fetch_arrow_table()
                want = oracles[persona].query(sql, list(params))
                assert_rows_equal(got, want, ordered=True, context=f"[{persona}] {sql} {params}: ")


# -- the hash mask ----------------------------------------------------------


@pytest.fixture(scope="module")
def ben_hashes(conns, oracle):
    """encounter_id -> (hash served to ben, stored code)."""
    got = adbc_query(conns["ben"], "SELECT encounter_id, diagnosis_code FROM clinical.encounters.visits")
    raw = oracle.query("SELECT encounter_id, diagnosis_code FROM clinical.encounters.visits")
    raw_by_id = dict(zip(raw.column(0).to_pylist(), raw.column(1).to_pylist()))
    served = dict(zip(got.column(0).to_pylist(), got.column(1).to_pylist()))
    assert served.keys() == raw_by_id.keys(), "ben sees a different set of encounters"
    return {eid: (served[eid], raw_by_id[eid]) for eid in served}


def test_hash_is_keyed_hex_and_hides_codes(ben_hashes, raw_values):
    codes = set(raw_values["diagnosis_code"])
    for eid, (h, raw) in ben_hashes.items():
        if raw is None:
            assert h is None, f"encounter {eid}: NULL diagnosis should stay NULL, got {h!r}"
            continue
        assert h is not None, f"encounter {eid}: a diagnosis became NULL"
        assert re.fullmatch(r"[0-9a-f]{64}", h), f"encounter {eid}: {h!r} is not lowercase hex HMAC-SHA256"
        assert h not in codes
        assert h not in (hashlib.sha256(raw.encode()).hexdigest(), hashlib.md5(raw.encode()).hexdigest()), (
            f"{raw!r} is hashed without a key: a dictionary of ICD-10 codes reverses it"
        )


def test_hash_preserves_equality_structure(ben_hashes):
    by_hash: dict[str, set] = {}
    by_code: dict[str, set] = {}
    for h, raw in ben_hashes.values():
        if raw is not None:
            by_hash.setdefault(h, set()).add(raw)
            by_code.setdefault(raw, set()).add(h)
    assert all(len(v) == 1 for v in by_code.values()), "equal codes got different hashes"
    assert all(len(v) == 1 for v in by_hash.values()), "different codes got the same hash"


def test_sql_sees_the_hash(conns, ben_hashes, oracle, front, tokens):
    """WHERE compares the masked value; the same value is served to another connection."""
    code_to_hash = {raw: h for h, raw in ben_hashes.values() if raw is not None}
    h = code_to_hash["E11.9"]
    sql = "SELECT count(*) AS n FROM clinical.encounters.visits WHERE diagnosis_code = ?"
    assert adbc_query(conns["ben"], sql, [h]).column("n")[0].as_py() == oracle.count(
        "clinical.encounters.visits", "diagnosis_code = 'E11.9'"
    )
    other = adbc_connect(front.uri, tokens["ben"])
    try:
        again = adbc_query(other, "SELECT DISTINCT diagnosis_code AS d FROM clinical.encounters.visits WHERE diagnosis_code IS NOT NULL")
    finally:
        other.close()
    assert set(again.column("d").to_pylist()) == set(code_to_hash.values())


def test_oracle_hash_stand_in_is_only_used_for_structure(oracles):
    """Self-check: ben's oracle marks its stand-in hashes, so they can never be compared as values."""
    vals = oracles["ben"].query("SELECT DISTINCT diagnosis_code FROM clinical.encounters.visits WHERE diagnosis_code IS NOT NULL")
    assert all(v.startswith(ORACLE_HASH_PREFIX) for v in vals.column(0).to_pylist())


# -- discovery lists only what the persona may read -------------------------


def _contract_columns(tables) -> set[tuple[str, str, str, str]]:
    return {(*split_name(t), c.name) for t in tables for c in TABLES[t]}


@pytest.mark.parametrize("persona", ["ana", "ben", "cara", "dev"])
def test_information_schema_tables(conns, persona):
    p = PERSONAS[persona]
    got = adbc_query(
        conns[persona],
        "SELECT table_catalog, table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'information_schema'",
    )
    names = {".".join(r) for r in table_rows(got)}
    assert names == set(visible_tables(p)) | SYSTEM_TABLES, (
        f"[{persona}] extra {sorted(names - set(visible_tables(p)) - SYSTEM_TABLES)}, "
        f"missing {sorted(set(visible_tables(p)) | SYSTEM_TABLES - names)}"
    )
    catalogs = set(adbc_query(conns[persona], "SELECT DISTINCT table_catalog FROM information_schema.tables").column(0).to_pylist())
    assert catalogs == {d for d, _ in visible_products(p)} | {"mesh"}, f"[{persona}] catalogs {sorted(catalogs)}"


@pytest.mark.parametrize("persona", ["ana", "ben", "cara"])
def test_information_schema_columns_and_schemata(conns, persona):
    p = PERSONAS[persona]
    got = adbc_query(
        conns[persona],
        "SELECT table_catalog, table_schema, table_name, column_name FROM information_schema.columns "
        "WHERE table_schema <> 'information_schema' AND table_catalog <> 'mesh'",
    )
    assert set(table_rows(got)) == _contract_columns(visible_tables(p)), f"[{persona}] columns differ"
    schemata = adbc_query(
        conns[persona],
        "SELECT catalog_name, schema_name FROM information_schema.schemata WHERE schema_name <> 'information_schema'",
    )
    assert set(table_rows(schemata)) == visible_products(p) | {("mesh", "meta")}, f"[{persona}] {table_rows(schemata)}"
    shown = adbc_query(conns[persona], "SHOW TABLES")
    leaked = {
        ".".join(r[:3]) for r in table_rows(shown) if ".".join(r[:3]) in set(invisible_tables(p))
    }
    assert not leaked, f"[{persona}] SHOW TABLES lists {sorted(leaked)}"


@pytest.mark.parametrize("persona", ["ana", "ben", "cara"])
def test_mesh_meta(conns, persona):
    p = PERSONAS[persona]
    products = adbc_query(conns[persona], "SELECT domain, product FROM mesh.meta.products")
    assert set(table_rows(products)) == visible_products(p), f"[{persona}] {table_rows(products)}"
    tables = adbc_query(conns[persona], "SELECT domain, product, table_name FROM mesh.meta.tables")
    assert {".".join(r) for r in table_rows(tables)} == set(visible_tables(p))
    cols = adbc_query(conns[persona], "SELECT domain, product, table_name, column_name, access FROM mesh.meta.columns")
    assert {r[:4] for r in table_rows(cols)} == _contract_columns(visible_tables(p))
    for d, pr, t, c, access in table_rows(cols):
        mask = column_mask(p, f"{d}.{pr}.{t}", c)
        want = "clear" if mask is None else f"masked ({mask})"
        assert access == want, f"[{persona}] {d}.{pr}.{t}.{c}: access {access!r}, policy says {want!r}"


@pytest.mark.parametrize("persona", ["ana", "cara"])
def test_metadata_rpcs_hide_products(conns, server, tokens, persona):
    from mesh_helpers import flatten_objects

    p = PERSONAS[persona]
    tree = flatten_objects(conns[persona].adbc_get_objects(depth="all").read_all())
    listed = {f"{c}.{s}.{t}" for c, ss in tree.items() for s, ts in ss.items() for t in ts}
    assert listed - SYSTEM_TABLES == set(visible_tables(p)), f"[{persona}] GetObjects lists {sorted(listed)}"
    client = FlightConn(server.uri, tokens[persona])
    try:
        cats, _ = flight_read_all(client, flight_command_info(client, command_get_catalogs()))
    finally:
        client.close()
    assert set(cats.column("catalog_name").to_pylist()) - {"mesh"} == {d for d, _ in visible_products(p)}


# ==========================================================================
# Errors, EXPLAIN and messages must not leak
# ==========================================================================

DIV_SQL = "SELECT 1/(CASE WHEN region='south' THEN 0 ELSE 1 END) AS x FROM clinical.encounters.visits"


def test_hidden_rows_are_never_evaluated(conns, oracles):
    got = adbc_query(conns["ana"], DIV_SQL)
    assert got.num_rows == oracles["ana"].count("clinical.encounters.visits")
    assert set(got.column("x").to_pylist()) == {1}
    got = adbc_query(
        conns["ana"],
        "SELECT CAST(diagnosis_code AS INT) AS d FROM clinical.encounters.visits WHERE region = 'south'",
    )
    assert got.num_rows == 0


def test_visible_rows_are_evaluated(conns):
    err = adbc_err(conns["ben"], DIV_SQL)
    assert re.search(r"divi\w* by zero", str(err), re.I), f"ben should hit the division by zero: {err}"


@pytest.mark.parametrize(
    "persona, sql, kinds",
    [
        ("ben", "SELECT CAST(given_name AS INT) AS x FROM patients.registry.patients", ["given_name", "family_name", "postcode"]),
        ("ben", "SELECT CAST(family_name AS INT) AS x FROM patients.registry.patients", ["given_name", "family_name", "postcode"]),
        ("ben", "SELECT CAST(diagnosis_code AS INT) AS x FROM clinical.encounters.visits", ["diagnosis_code"]),
        ("ana", "SELECT CAST(given_name AS INT) AS x FROM patients.registry.patients", ["given_name", "family_name", "postcode"]),
        ("ben", "SELECT CAST(postcode AS DATE) AS x FROM patients.registry.patients", ["postcode", "birth_date"]),
    ],
)
def test_cast_errors_do_not_reveal_values(conns, raw_values, persona, sql, kinds):
    err = adbc_err(conns[persona], sql)
    text = str(err)
    for kind in kinds:
        hits = whole_word_hits(text, raw_values[kind])
        assert not hits, f"[{persona}] error reveals stored {kind} values {hits[:5]}: {text}"


EXPLAIN_CASES = [
    ("ben", "EXPLAIN", "SELECT p.given_name, p.family_name, p.birth_date, p.postcode, v.diagnosis_code "
     "FROM patients.registry.patients p JOIN clinical.encounters.visits v ON v.patient_id = p.patient_id "
     "WHERE p.postcode <> 'x' AND v.diagnosis_code IS NOT NULL"),
    ("ben", "EXPLAIN VERBOSE", "SELECT given_name, birth_date, postcode FROM patients.registry.patients WHERE sex = 'F'"),
    ("ben", "EXPLAIN ANALYZE", "SELECT count(*) AS n, max(given_name) AS g FROM patients.registry.patients"),
    ("cara", "EXPLAIN", "SELECT c.status, count(*) AS n FROM billing.claims.claims c "
     "JOIN reference.facilities.facilities f ON f.facility_id = c.claim_id % 50 GROUP BY c.status"),
]


@pytest.mark.parametrize("persona, explain, sql", EXPLAIN_CASES, ids=[f"{p}-{e.replace(' ', '_')}" for p, e, _ in EXPLAIN_CASES])
def test_explain_does_not_leak(conns, mesh_dir, raw_values, persona, explain, sql):
    p = PERSONAS[persona]
    plan = adbc_query(conns[persona], f"{explain} {sql}")
    text = "\n".join(str(v) for col in plan.columns for v in col.to_pylist() if v is not None)
    problems = []
    if p.roles.isdisjoint({"pii_reader"}):
        for kind in ["given_name", "family_name", "postcode", "birth_date"]:
            hits = whole_word_hits(text, raw_values[kind])
            if hits:
                problems.append(f"stored {kind} values {hits[:3]}: {excerpt(text, hits[0])}")
    if hashed_columns(p, "clinical.encounters.visits"):
        hits = whole_word_hits(text, raw_values["diagnosis_code"])
        if hits:
            problems.append(f"stored diagnosis codes {hits[:3]}: {excerpt(text, hits[0])}")
    unreadable = {split_name(t)[1] for t in invisible_tables(p)} | {split_name(t)[2] for t in invisible_tables(p)}
    for name in sorted(unreadable):
        if re.search(rf"\b{re.escape(name)}\b", text):
            problems.append(f"name of the unreadable product/table {name!r}: {excerpt(text, name)}")
    if ".parquet" in text:
        problems.append(f"'.parquet': {excerpt(text, '.parquet')}")
    mesh_path = str(Path(mesh_dir).resolve()).lstrip("/")
    for needle in [mesh_path, "file://", "/data/"]:
        if needle in text:
            problems.append(f"file path {needle!r}: {excerpt(text, needle)}")
    assert not problems, f"[{persona}] {explain} shows:\n  " + "\n  ".join(problems)


# ==========================================================================
# Replay: handles and tickets are bound to their principal
# ==========================================================================

REPLAY_SQL = "SELECT * FROM reference.regions.regions"


def test_ticket_replayed_by_another_principal(fl, tokens, oracle):
    ben, ana = bearer(tokens["ben"]), bearer(tokens["ana"])
    info = flight_command_info(fl, command_statement_query(REPLAY_SQL), auth=ben)
    assert info.endpoints, "no endpoint to replay"
    ticket = info.endpoints[0].ticket
    err = flight_err(lambda: fl.do_get(ticket, auth=ana).read_all())
    assert isinstance(err, pa.ArrowKeyError), f"ana redeeming ben's ticket: expected NOT_FOUND, got {type(err).__name__}: {err}"
    err = flight_err(lambda: fl.do_get(ticket, auth=None).read_all())
    assert is_unauthenticated(err), f"{type(err).__name__}: {err}"
    fresh = flight_command_info(fl, command_statement_query(REPLAY_SQL), auth=ben)
    got, _ = flight_read_all(fl, fresh, auth=ben)
    assert got.num_rows == oracle.count("reference.regions.regions"), "ben cannot redeem his own ticket"


def test_ticket_for_hidden_product_replayed(fl, tokens):
    """Ben plans a billing query; neither ana nor cara-less-roles can redeem it."""
    ben, ana = bearer(tokens["ben"]), bearer(tokens["ana"])
    info = flight_command_info(fl, command_statement_query("SELECT * FROM billing.claims.claims"), auth=ben)
    ticket = info.endpoints[0].ticket
    err = flight_err(lambda: fl.do_get(ticket, auth=ana).read_all())
    assert isinstance(err, pa.ArrowKeyError), f"{type(err).__name__}: {err}"


def test_ticket_replayed_by_same_subject_with_fewer_roles(fl, tokens, mint):
    """A ticket planned under ben's analyst roles is not redeemable by a `sub=ben` token without them."""
    ben = bearer(tokens["ben"])
    downgraded = bearer(mint("--sub", "ben"))
    info = flight_command_info(fl, command_statement_query("SELECT * FROM billing.claims.claims"), auth=ben)
    ticket = info.endpoints[0].ticket
    try:
        leaked = fl.do_get(ticket, auth=downgraded).read_all()
    except pa.ArrowException:
        return
    pytest.fail(
        f"a sub=ben token with no roles redeemed a ticket planned for ben the analyst and read "
        f"{leaked.num_rows} billing rows: handles are bound to issuer|subject, not to the roles the plan was authorized with"
    )


def _create_prepared(fl: FlightConn, sql: str, auth: str) -> bytes:
    from flightsql import flightsql_pb2 as pb
    from google.protobuf import any_pb2

    results = fl.do_action(_create_prepared_action(sql), auth=auth)
    assert results, "CreatePreparedStatement returned nothing"
    wrapper = any_pb2.Any()
    wrapper.ParseFromString(results[0].body.to_pybytes())
    out = pb.ActionCreatePreparedStatementResult()
    assert wrapper.Unpack(out), wrapper.type_url
    return out.prepared_statement_handle


def test_prepared_handle_replayed_by_another_principal(fl, tokens, oracle):
    ben, ana = bearer(tokens["ben"]), bearer(tokens["ana"])
    handle = _create_prepared(fl, REPLAY_SQL, ben)
    err = flight_err(lambda: flight_command_info(fl, command_prepared_statement_query(handle), auth=ana))
    assert isinstance(err, pa.ArrowKeyError), f"ana executing ben's prepared statement: {type(err).__name__}: {err}"
    descriptor = flight.FlightDescriptor.for_command(command_prepared_statement_query(handle))
    err = flight_err(lambda: _put_one_row(fl, descriptor, ana))
    assert isinstance(err, pa.ArrowKeyError), f"ana binding parameters to ben's prepared statement: {type(err).__name__}: {err}"
    try:
        fl.do_action(_close_prepared_action(handle), auth=ana)
    except pa.ArrowException:
        pass
    got, _ = flight_read_all(fl, flight_command_info(fl, command_prepared_statement_query(handle), auth=ben), auth=ben)
    assert got.num_rows == oracle.count("reference.regions.regions"), "ana's close attempt affected ben's statement"


# ==========================================================================
# Invisibility: a product you may not read looks exactly like one that does not exist
# ==========================================================================

INVISIBLE_PAIRS = [
    ("SELECT * FROM {}", "clinical.encounters.visits", "clinical.encounters.nope"),
    ("SELECT * FROM {}", "patients.registry.patients", "patients.registry.nope"),
    ("SELECT * FROM {}", "clinical.labs.results", "clinical.nope.results"),
    ("SELECT * FROM {}", "CLINICAL.Encounters.VISITS", "CLINICAL.Encounters.NOPE"),
    ("SELECT * FROM {}", '"clinical"."encounters"."visits"', '"clinical"."encounters"."nope"'),
    ("SELECT count(*) FROM billing.claims.claims c JOIN {} v ON v.encounter_id = c.encounter_id",
     "clinical.encounters.visits", "clinical.encounters.nope"),
    # Not a product: whatever `<catalog>.information_schema` does, a hidden catalog
    # must behave like one that does not exist.
    ("SELECT table_catalog, table_schema, table_name FROM {}", "clinical.information_schema.tables",
     "nope.information_schema.tables"),
]


def _normalized(name: str) -> str:
    return name.replace('"', "").lower()


def _same_shape(msg_a: str, name_a: str, msg_b: str, name_b: str) -> bool:
    return msg_a.replace(_normalized(name_a), "<T>") == msg_b.replace(_normalized(name_b), "<T>")


def _outcome(conn, sql: str):
    try:
        return "ok", sorted(table_rows(adbc_query(conn, sql)))
    except adm.Error as err:
        return "error", err


@pytest.mark.parametrize("template, hidden, missing", INVISIBLE_PAIRS)
def test_invisible_equals_nonexistent_adbc(conns, template, hidden, missing):
    (kind_a, a), (kind_b, b) = _outcome(conns["cara"], template.format(hidden)), _outcome(conns["cara"], template.format(missing))
    assert kind_a == kind_b, f"hidden {hidden}: {kind_a} {a!s:.300}\nmissing {missing}: {kind_b} {b!s:.300}"
    if kind_a == "ok":
        assert a == b, f"hidden {hidden} and missing {missing} give different rows"
        return
    assert type(a) is type(b) and a.status_code == b.status_code, (
        f"hidden: {type(a).__name__}/{a.status_code.name}: {a}\nmissing: {type(b).__name__}/{b.status_code.name}: {b}"
    )
    assert _same_shape(str(a), hidden, str(b), missing), f"messages differ:\n  hidden:  {a}\n  missing: {b}"
    if "information_schema" not in hidden:
        assert a.status_code == Code.NOT_FOUND and f"table '{_normalized(hidden)}' not found" in str(a), str(a)


@pytest.mark.parametrize("hidden, missing", [("clinical.encounters.visits", "clinical.encounters.nope"),
                                             ("patients.registry.patients", "patients.nope.patients")])
def test_invisible_equals_nonexistent_pyarrow(fl, tokens, hidden, missing):
    cara = bearer(tokens["cara"])
    a = flight_err(lambda: flight_command_info(fl, command_statement_query(f"SELECT * FROM {hidden}"), auth=cara))
    b = flight_err(lambda: flight_command_info(fl, command_statement_query(f"SELECT * FROM {missing}"), auth=cara))
    assert type(a) is type(b), f"{type(a).__name__}: {a} vs {type(b).__name__}: {b}"
    assert isinstance(a, pa.ArrowKeyError), f"{type(a).__name__}: {a}"
    assert _same_shape(str(a), hidden, str(b), missing), f"messages differ:\n  hidden:  {a}\n  missing: {b}"


def test_invisible_table_schema_equals_nonexistent(conns):
    def schema_err(catalog, schema, table):
        with pytest.raises(adm.Error) as info:
            conns["cara"].adbc_get_table_schema(table, catalog_filter=catalog, db_schema_filter=schema)
        return info.value

    a = schema_err("clinical", "encounters", "visits")
    b = schema_err("clinical", "encounters", "nope")
    assert type(a) is type(b) and a.status_code == b.status_code == Code.NOT_FOUND, f"{a!r} vs {b!r}"
    assert _same_shape(str(a), "visits", str(b), "nope"), f"messages differ:\n  hidden:  {a}\n  missing: {b}"
