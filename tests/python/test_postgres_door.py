"""The Postgres door, with clients nobody here wrote: psql (Debian's postgresql-client),
psycopg 3 (parameters, server-side cursors, cancel) and SQLAlchemy's PostgreSQL dialect
inspector (through psycopg2).

The door is a thin adapter over the same engine as Flight SQL and HTTP: the same
policies (the per-persona differential oracle runs through it), the same error classes
(as SQLSTATE codes), the same audit trail.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from urllib.parse import quote

import psycopg
import pytest

from mesh_helpers import SLOW_QUERY, Oracle, assert_rows_equal
from policy_model import PERSONAS, can_read, oracle_view
from test_zero_trust import DIFF_PARAMS, referenced_tables

TIMEOUT_S = 120
SLOW = SLOW_QUERY


@pytest.fixture(scope="module")
def pg(demo) -> tuple[str, int]:
    address = demo.server.pg_address
    if not address:
        pytest.fail("the demo did not announce its Postgres door", pytrace=False)
    host, port = address.rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def persona_tokens(mint) -> dict[str, str]:
    return {name: mint(*p.mint_args()) for name, p in PERSONAS.items()}


@pytest.fixture(scope="module")
def persona_oracles(demo) -> dict[str, Oracle]:
    return {name: Oracle(demo.mesh_dir, oracle_view(p)) for name, p in PERSONAS.items()}


def connect(pg, token, **kwargs) -> psycopg.Connection:
    host, port = pg
    return psycopg.connect(host=host, port=port, dbname="mesh", user="anyone", password=token,
                           sslmode="disable", connect_timeout=30, **kwargs)


def psql(pg, token, *args: str) -> subprocess.CompletedProcess:
    host, port = pg
    exe = shutil.which("psql")
    if exe is None:
        pytest.fail("psql not found: tests/run.sh installs postgresql-client", pytrace=False)
    env = {"PGPASSWORD": token, "PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "30"}
    return subprocess.run(
        [exe, f"host={host} port={port} dbname=mesh user=anyone sslmode=disable",
         "-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
    )


# -- psql ----------------------------------------------------------------------


def test_psql_lists_products_as_schemas(server, pg, persona_tokens):
    done = psql(pg, persona_tokens["cara"], "-c", r"\dt")
    assert done.returncode == 0, done.stderr
    assert "billing.claims" in done.stdout and "claims" in done.stdout
    # cara may not read the patient registry: it is not listed at all.
    assert "patients.registry" not in done.stdout


def test_psql_describes_a_table(server, pg, admin_token):
    done = psql(pg, admin_token, "-c", r'\d "billing.claims".claims')
    assert done.returncode == 0, done.stderr
    assert 'Table "billing.claims.claims"' in done.stdout
    for column, kind in [("claim_id", "bigint"), ("payer", "text"), ("submitted_on", "date")]:
        assert any(column in line and kind in line for line in done.stdout.splitlines()), done.stdout


def test_psql_runs_queries_and_reports_sqlstates(server, pg, admin_token, oracle):
    done = psql(pg, admin_token, "-A", "-t", "-c", "SELECT count(*) FROM billing.claims.claims")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == oracle.scalar("SELECT count(*) FROM billing.claims.claims")
    for sql, code in [
        ("SELECT * FROM billing.claims.nothing", "42P01"),
        ("SELEC 1", "42601"),
        ("DROP TABLE billing.claims.claims", "42501"),
    ]:
        done = psql(pg, admin_token, "-c", sql)
        assert done.returncode != 0 and f"ERROR:  {code}" in done.stderr, (sql, done.stderr)


def test_psql_with_a_bad_password_is_refused(server, pg, admin_token):
    for token in ["not-a-jwt", admin_token[:-4] + "AAAA"]:
        done = psql(pg, token, "-c", "SELECT 1")
        assert done.returncode != 0
        assert "password authentication failed" in done.stderr, done.stderr
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(pg, token).close()


# -- psycopg -------------------------------------------------------------------


def test_psycopg_binds_parameters(server, pg, admin_token, oracle):
    with connect(pg, admin_token) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM clinical.encounters.visits WHERE region = %s AND encounter_id %% %s = 3",
            ("north", 31),
        )
        want = oracle.scalar(
            "SELECT count(*) FROM clinical.encounters.visits WHERE region = 'north' AND encounter_id % 31 = 3"
        )
        assert cur.fetchone() == (want,)
        cur.execute("SELECT claim_id, payer FROM billing.claims.claims WHERE claim_id = %s", (7,))
        want = oracle.query("SELECT claim_id, payer FROM billing.claims.claims WHERE claim_id = 7").to_pylist()
        assert cur.fetchall() == [(w["claim_id"], w["payer"]) for w in want]


def test_psycopg_server_side_cursor_streams_in_pages(server, pg, admin_token, oracle):
    want = oracle.scalar("SELECT count(*) FROM billing.claims.claims")
    with connect(pg, admin_token) as conn:
        with conn.cursor(name="pages") as cur:
            cur.itersize = 500
            cur.execute("SELECT claim_id FROM billing.claims.claims")
            assert cur.description[0].name == "claim_id"
            seen = [row[0] for row in cur]
        conn.commit()
        assert len(seen) == want and len(set(seen)) == want
        with conn.cursor(name="some") as cur:
            cur.execute("SELECT claim_id FROM billing.claims.claims ORDER BY claim_id")
            assert [r[0] for r in cur.fetchmany(3)] == [1, 2, 3]
            assert [r[0] for r in cur.fetchmany(2)] == [4, 5]
        conn.rollback()


def test_session_settings_resolve_names(server, pg, admin_token, oracle):
    with connect(pg, admin_token, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute('SET search_path TO "billing.claims"')
        cur.execute("SHOW search_path")
        assert cur.fetchone() == ('"billing.claims"',)
        cur.execute("SELECT count(*) FROM claims")
        assert cur.fetchone() == (oracle.scalar("SELECT count(*) FROM billing.claims.claims"),)
        with pytest.raises(psycopg.errors.UndefinedObject):
            cur.execute("SET work_mem = '1GB'")


def test_errors_carry_sqlstates_and_hidden_is_missing(server, pg, persona_tokens):
    with connect(pg, persona_tokens["cara"], autocommit=True) as conn, conn.cursor() as cur:
        messages = []
        for sql in ["SELECT * FROM patients.registry.patients", "SELECT * FROM patients.registry.nothing"]:
            with pytest.raises(psycopg.errors.UndefinedTable) as raised:
                cur.execute(sql)
            messages.append(str(raised.value).replace("patients.registry.patients", "X")
                            .replace("patients.registry.nothing", "X"))
        assert messages[0] == messages[1]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            cur.execute("DELETE FROM billing.claims.claims")
        with pytest.raises(psycopg.errors.SyntaxError):
            cur.execute("SELEKT 1")
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_a_cancel_request_stops_the_query(server, pg, admin_token):
    slow = SLOW
    with connect(pg, admin_token, autocommit=True) as conn:
        timer = threading.Timer(1.0, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        with conn.cursor() as cur, pytest.raises(psycopg.errors.QueryCanceled):
            cur.execute(slow)
        assert time.monotonic() - started < 30
        with conn.cursor() as cur:
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)


def test_statement_timeout_is_a_canceled_query(server, pg, admin_token):
    slow = SLOW
    with connect(pg, admin_token, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SET statement_timeout = 300")
        with pytest.raises(psycopg.errors.QueryCanceled):
            cur.execute(slow)


# -- SQLAlchemy ----------------------------------------------------------------


def test_sqlalchemy_inspector_sees_what_the_caller_may_read(server, pg, persona_tokens):
    import sqlalchemy as sa

    host, port = pg
    engine = sa.create_engine(
        f"postgresql+psycopg2://anyone:{quote(persona_tokens['cara'], safe='')}@{host}:{port}/mesh?sslmode=disable"
    )
    try:
        inspector = sa.inspect(engine)
        schemas = inspector.get_schema_names()
        assert "billing.claims" in schemas and "patients.registry" not in schemas
        assert inspector.get_table_names(schema="billing.claims") == ["claims"]
        columns = {c["name"]: c for c in inspector.get_columns("claims", schema="billing.claims")}
        assert str(columns["claim_id"]["type"]) == "BIGINT" and not columns["claim_id"]["nullable"]
        with engine.connect() as conn:
            n = conn.execute(sa.text('SELECT count(*) FROM "billing.claims".claims WHERE payer = :p'),
                             {"p": "mutual-a"}).scalar()
            assert n > 0
    finally:
        engine.dispose()


# -- the policy oracle through this door ---------------------------------------

PG_DIFF = [p for p in DIFF_PARAMS if p.values[1].endswith(("-visits", "-patients", "-masked", "-claims", "union"))]


@pytest.mark.parametrize("persona, qid, sql", PG_DIFF)
def test_differential_over_postgres(server, pg, persona_tokens, persona_oracles, persona, qid, sql):
    p = PERSONAS[persona]
    hidden = {t for t in referenced_tables(sql) if not can_read(p, t)}
    with connect(pg, persona_tokens[persona], autocommit=True) as conn, conn.cursor() as cur:
        if hidden:
            with pytest.raises(psycopg.errors.UndefinedTable) as raised:
                cur.execute(sql)
            assert any(f"table '{t}' not found" in str(raised.value) for t in hidden), raised.value
            return
        cur.execute(sql)
        rows = cur.fetchall()
    assert_rows_equal(rows, persona_oracles[persona].query(sql), ordered=True,
                      context=f"[{persona}] {qid} over Postgres: ")


# -- bounds and protocol details -----------------------------------------------


def test_statements_of_one_query_run_in_turn(server, pg, admin_token):
    # One simple query: the cursor's first FETCH leaves the rest for the second.
    done = psql(pg, admin_token, "-A", "-t", "-c",
                "BEGIN; DECLARE c CURSOR FOR SELECT claim_id FROM billing.claims.claims ORDER BY claim_id; "
                "FETCH 2 FROM c; FETCH 2 FROM c; COMMIT")
    assert done.returncode == 0, done.stderr
    assert [int(v) for v in done.stdout.split() if v.isdigit()] == [1, 2, 3, 4], done.stdout


def test_a_server_side_cursor_binds_parameters(server, pg, admin_token, oracle):
    with connect(pg, admin_token) as conn:
        with conn.cursor(name="bound") as cur:
            cur.execute("SELECT claim_id FROM billing.claims.claims WHERE payer = %s ORDER BY claim_id",
                        ("mutual-a",))
            got = [r[0] for r in cur.fetchall()]
        conn.rollback()
    want = [r["claim_id"] for r in oracle.query(
        "SELECT claim_id FROM billing.claims.claims WHERE payer = 'mutual-a' ORDER BY claim_id").to_pylist()]
    assert got == want


def test_an_oversized_message_before_login_is_refused(server, pg):
    import socket
    import struct

    host, port = pg
    with socket.create_connection((host, port), timeout=30) as raw:
        # A startup packet (protocol 3.0, user and database), answered with a request
        # for the password...
        params = b"user\0anyone\0database\0mesh\0\0"
        raw.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        assert raw.recv(64)[:1] == b"R"
        # ... then, instead, a query announcing 100 MB: refused once its header is read.
        raw.sendall(b"Q" + struct.pack("!I", 100_000_000) + b"\0" * 1024)
        answer = b""
        while True:
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer[:1] == b"E" and b"54000" in answer, answer


def test_multiple_statements_cannot_be_prepared(server, pg, admin_token):
    with connect(pg, admin_token, autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg.errors.SyntaxError, match="multiple commands"):
            cur.execute("SELECT 1; SELECT %s", (2,))
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)


def test_versions_pinned_for_the_session(server, pg, admin_token, oracle):
    with connect(pg, admin_token, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SET meshgate.versions = 'clinical.labs.results@v0'")
        cur.execute("SHOW meshgate.versions")
        assert cur.fetchone() == ("clinical.labs.results@v0",)
        cur.execute("SELECT count(*) FROM clinical.labs.results")
        assert cur.fetchone() == (oracle.scalar("SELECT count(*) FROM clinical.labs.results"),)
        # A table whose owner allows no time travel cannot be pinned into reading one.
        cur.execute("SET meshgate.versions = 'billing.claims.claims@v0'")
        with pytest.raises(psycopg.Error):
            cur.execute("SELECT count(*) FROM billing.claims.claims")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            cur.execute("SET meshgate.versions = 'claims@v0'")
        cur.execute("RESET meshgate.versions")
        cur.execute("SELECT count(*) FROM billing.claims.claims")
        assert cur.fetchone()[0] > 0


# -- COPY and ADBC ---------------------------------------------------------------


def test_copy_to_stdout_as_csv_and_copy_from_refused(server, pg, admin_token, oracle):
    done = psql(pg, admin_token, "-c",
                "COPY (SELECT claim_id, payer FROM billing.claims.claims ORDER BY claim_id LIMIT 3) "
                "TO STDOUT WITH (FORMAT csv, HEADER)")
    assert done.returncode == 0, done.stderr
    want = oracle.query("SELECT claim_id, payer FROM billing.claims.claims ORDER BY claim_id LIMIT 3").to_pylist()
    assert done.stdout.splitlines() == ["claim_id,payer"] + [f"{w['claim_id']},{w['payer']}" for w in want]
    done = psql(pg, admin_token, "-c", "COPY billing.claims.claims FROM STDIN")
    assert done.returncode != 0 and "ERROR:  42501" in done.stderr, done.stderr


def test_adbc_postgres_driver_reads_arrow(server, pg, persona_tokens, persona_oracles):
    import adbc_driver_postgresql.dbapi as adbc_pg

    host, port = pg
    token = persona_tokens["cara"]
    sql = "SELECT claim_id, payer, submitted_on FROM billing.claims.claims ORDER BY claim_id LIMIT 50"
    with adbc_pg.connect(f"postgresql://cara:{quote(token, safe='')}@{host}:{port}/mesh?sslmode=disable") as conn:
        with conn.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        with conn.cursor() as cur:
            # An empty result is a well-formed (header and trailer) binary COPY.
            cur.execute("SELECT claim_id FROM billing.claims.claims WHERE claim_id < 0")
            assert cur.fetch_arrow_table().num_rows == 0
        with conn.cursor() as cur, pytest.raises(Exception, match="not found"):
            cur.execute("SELECT * FROM patients.registry.patients")
    assert table.column_names == ["claim_id", "payer", "submitted_on"]
    assert_rows_equal(table, persona_oracles["cara"].query(sql), ordered=True)


def test_a_freshness_bound_for_the_session(server, pg, admin_token):
    with connect(pg, admin_token, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SET meshgate.max_staleness = '30days'")
        cur.execute("SHOW meshgate.max_staleness")
        assert cur.fetchone() == ("30days",)
        cur.execute("SET meshgate.max_staleness = '3650days'")
        cur.execute("SELECT count(*) FROM billing.claims.claims")
        assert cur.fetchone()[0] > 0
        # Nothing is fresher than a nanosecond: the product is refused, as through Flight.
        cur.execute("SET meshgate.max_staleness = '1ns'")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            cur.execute("SELECT count(*) FROM billing.claims.claims")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            cur.execute("SET meshgate.max_staleness = 'soon'")
