"""Aggregation thresholds (`policy.aggregate_only`): a principal the rule applies to reads
the product only through aggregates, and groups with fewer contributors than the
threshold are left out of every answer, whatever shape the SQL takes.

The demo's `clinical.labs` may be read by analysts only in groups of at least 11
distinct patients. A gateway of its own serves a copy of the demo mesh in which
`reference.facilities` may be read by everyone but admins only in groups of at least 3
rows too (no privacy unit: joins with it are refused). Answers are checked against DuckDB over the same files, as the analyst sees
them, with the threshold applied by hand; an admin and a clinician read as before.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import adbc_driver_manager as adm
import psycopg
import pytest

from conftest import serve_config, start_server
from mesh_helpers import DEMO_SECRET_FILE, ServerProcess, adbc_connect, adbc_query
from policy_model import PERSONAS, oracle_view
from mesh_helpers import Oracle

K = 11
LABS = "clinical.labs.results"
FACILITIES = "reference.facilities.facilities"

LABS_RULE = f"  aggregate_only: {{ min_group_size: {K}, privacy_unit: patient_id, unless_role: [clinician, admin] }}\n"
FACILITIES_RULE = "  aggregate_only: { min_group_size: 3, unless_role: [admin] }\n"


# Derived from labs by the analytics domain, whose principal is an analyst: held to the
# threshold like any analyst. `labstats` aggregates; `labcopy` would return rows.
DERIVED = """\
domain: analytics
product: {product}
version: 1.0.0
description: Derived from lab results.
owner: {{ team: population-health, contact: population-health@example.org }}
tables:
  - name: t
    derived:
      mode: virtual
      inputs: [clinical.labs.results]
      transform: {transform}
    columns:
{columns}
policy:
  read: {{ any_role: [analyst, admin] }}
"""
STATS = ("SELECT test_code, count(DISTINCT patient_id) AS patients FROM clinical.labs.results "
         "GROUP BY test_code, date_trunc('day', taken_at)")
STATS_COLUMNS = ("      - { name: test_code, type: Utf8, nullable: false }\n"
                 "      - { name: patients, type: Int64, nullable: false }")
COPY = "SELECT result_id, patient_id FROM clinical.labs.results"
COPY_COLUMNS = ("      - { name: result_id, type: Int64, nullable: false }\n"
                "      - { name: patient_id, type: Int64, nullable: false }")


@pytest.fixture(scope="module")
def gateway(demo, meshgate_bin, tmp_path_factory) -> ServerProcess:
    root = tmp_path_factory.mktemp("aggregate-only")
    mesh = root / "mesh"
    shutil.copytree(demo.mesh_dir, mesh)
    assert LABS_RULE.strip() in (mesh / "clinical" / "labs.yaml").read_text(), "the demo's labs rule changed"
    path = mesh / "reference" / "facilities.yaml"
    text = path.read_text()
    assert text.rstrip("\n").splitlines()[-1].startswith("  "), f"{path}: policy is not last"
    path.write_text(text.rstrip("\n") + "\n" + FACILITIES_RULE)
    for product, transform, columns in [("labstats", STATS, STATS_COLUMNS), ("labcopy", COPY, COPY_COLUMNS)]:
        (mesh / "analytics" / f"{product}.yaml").write_text(
            DERIVED.format(product=product, transform=transform, columns=columns))
    config = root / "meshgate.yaml"
    config.write_text(serve_config(Path(demo.mesh_dir) / DEMO_SECRET_FILE))
    argv = [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
            "--config", config, "--pg-listen", "127.0.0.1:0"]
    server = start_server(argv, "aggregate-only")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tokens(mint) -> dict[str, str]:
    return {name: mint(*p.mint_args()) for name, p in PERSONAS.items()}


@pytest.fixture(scope="module")
def analyst_oracle(demo) -> Oracle:
    """DuckDB over the files as ben, the analyst, sees them (no threshold applied)."""
    return Oracle(demo.mesh_dir, oracle_view(PERSONAS["ben"]))


def rows_in_order(rows) -> list[tuple]:
    """Rows as tuples, sorted (NULLs last in each column)."""
    tuples = [tuple(row.values()) for row in rows]
    return sorted(tuples, key=lambda t: tuple((v is None, v if v is not None else 0) for v in t))


def ask(gateway: ServerProcess, token: str, sql: str, params=None) -> list[tuple]:
    conn = adbc_connect(gateway.uri, token)
    try:
        return rows_in_order(adbc_query(conn, sql, params).to_pylist())
    finally:
        conn.close()


def refusal(gateway: ServerProcess, token: str, sql: str) -> str:
    """The message of the refusal of `sql`, which must be PERMISSION_DENIED."""
    conn = adbc_connect(gateway.uri, token)
    try:
        with pytest.raises(adm.Error) as caught:
            adbc_query(conn, sql)
        assert caught.value.status_code == adm.AdbcStatusCode.UNAUTHORIZED, caught.value
        return str(caught.value)
    finally:
        conn.close()


def oracle_rows(oracle: Oracle, sql: str) -> list[tuple]:
    return rows_in_order(oracle.query(sql).to_pylist())


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("sql, why", [
    (f"SELECT * FROM {LABS}", "returns its rows"),
    (f"SELECT patient_id, test_code FROM {LABS} WHERE abnormal", "returns its rows"),
    (f"SELECT patient_id, test_code FROM {LABS} WHERE abnormal LIMIT 5", "LIMIT"),
    (f"SELECT test_code, count(*) OVER (PARTITION BY test_code) FROM {LABS}", "window functions"),
    (f"SELECT test_code, min(taken_at) FROM {LABS} GROUP BY test_code", "min() can return one row's value"),
    (f"SELECT test_code, max(result_id) FROM {LABS} GROUP BY test_code", "max() can return one row's value"),
    (f"SELECT test_code FROM {LABS} UNION ALL SELECT 'x'", "UNION"),
    ("SELECT count(*) FROM clinical.encounters.visits v "
     f"WHERE v.encounter_id IN (SELECT encounter_id FROM {LABS} WHERE abnormal)", "returns its rows"),
    (f'SELECT * FROM clinical.labs."results@v0"', "returns its rows"),
    (f"SELECT f.region, count(*) FROM {FACILITIES} f JOIN reference.regions.regions r "
     "ON r.region = f.region GROUP BY f.region", "no privacy_unit"),
    (f"SELECT test_code, unit, count(*) FROM {LABS} GROUP BY ROLLUP (test_code, unit)", "ROLLUP"),
    (f"SELECT test_code, bool_or(abnormal) FROM {LABS} GROUP BY test_code", "bool_or() can return one row's value"),
    (f"SELECT count(*) FROM (SELECT * FROM {LABS} ORDER BY result_id LIMIT 100) t", "LIMIT"),
    (f"EXPLAIN ANALYZE SELECT test_code, count(*) FROM {LABS} GROUP BY test_code", "EXPLAIN ANALYZE"),
])
def test_rows_never_leave_unaggregated(gateway, tokens, sql, why):
    message = refusal(gateway, tokens["ben"], sql)
    assert "may be read only in aggregate" in message and "aggregate_only" in message, message
    assert why in message, message


def test_principals_the_rule_spares_read_rows_as_before(gateway, tokens):
    for persona in ("ana", "dev"):
        rows = ask(gateway, tokens[persona], f"SELECT result_id FROM {LABS} ORDER BY result_id LIMIT 3")
        assert len(rows) == 3, persona
    assert len(ask(gateway, tokens["dev"], f"SELECT * FROM {FACILITIES}")) > 0


# -- what aggregates return -------------------------------------------------------------


def test_groups_below_the_threshold_are_left_out(gateway, tokens, analyst_oracle):
    sql = (f"SELECT test_code, date_trunc('day', taken_at) AS day, count(*) AS n, "
           f"count(DISTINCT patient_id) AS patients, sum(CASE WHEN abnormal THEN 1 ELSE 0 END) AS abnormal "
           f"FROM {LABS} GROUP BY test_code, date_trunc('day', taken_at)")
    got = ask(gateway, tokens["ben"], sql)
    everything = oracle_rows(analyst_oracle, sql)
    want = [row for row in everything if row[3] >= K]
    assert 0 < len(want) < len(everything), "the data must have groups on both sides of the threshold"
    assert [(r[0], r[2], r[3], r[4]) for r in got] == [(r[0], r[2], r[3], r[4]) for r in want]


def test_coarse_groups_are_all_there(gateway, tokens, analyst_oracle):
    sql = f"SELECT test_code, unit, count(*), avg(CASE WHEN abnormal THEN 1.0 ELSE 0.0 END) FROM {LABS} GROUP BY test_code, unit"
    got = ask(gateway, tokens["ben"], sql)
    want = oracle_rows(analyst_oracle, sql)
    assert [r[:3] for r in got] == [r[:3] for r in want]
    assert all(abs(a[3] - b[3]) < 1e-9 for a, b in zip(got, want))


def test_a_where_that_isolates_one_row_gets_no_row(gateway, tokens):
    first = ask(gateway, tokens["dev"], f"SELECT min(result_id) FROM {LABS}")[0][0]
    assert ask(gateway, tokens["ben"], f"SELECT count(*) FROM {LABS} WHERE result_id = {first}") == []
    # The same through a prepared statement's parameter.
    assert ask(gateway, tokens["ben"], f"SELECT count(*) FROM {LABS} WHERE result_id = ?", [first]) == []


def test_having_does_not_bring_small_groups_back(gateway, tokens):
    sql = f"SELECT patient_id, count(*) FROM {LABS} GROUP BY patient_id HAVING count(*) >= 1"
    assert ask(gateway, tokens["ben"], sql) == []
    assert len(ask(gateway, tokens["dev"], sql)) > 0


def test_joins_that_repeat_rows_do_not_inflate_groups(gateway, tokens):
    # Fifty copies of every row: a count of rows would pass the threshold for every
    # patient; distinct patients do not.
    sql = (f"SELECT l.patient_id, count(*) FROM {LABS} l CROSS JOIN generate_series(1, 50) "
           "GROUP BY l.patient_id")
    assert ask(gateway, tokens["ben"], sql) == []
    joined = (f"SELECT v.region, count(DISTINCT l.patient_id) FROM {LABS} l "
              "JOIN clinical.encounters.visits v ON v.encounter_id = l.encounter_id GROUP BY v.region")
    rows = ask(gateway, tokens["ben"], joined)
    assert rows and all(n >= K for _, n in rows), rows


def test_distinct_is_an_aggregate(gateway, tokens, analyst_oracle):
    assert ask(gateway, tokens["ben"], f"SELECT DISTINCT patient_id FROM {LABS}") == []
    got = ask(gateway, tokens["ben"], f"SELECT DISTINCT test_code FROM {LABS}")
    want = oracle_rows(analyst_oracle,
                       f"SELECT test_code FROM {LABS} GROUP BY test_code HAVING count(DISTINCT patient_id) >= {K}")
    assert got == want and got


def test_windows_over_groups_are_allowed(gateway, tokens, analyst_oracle):
    sql = (f"SELECT test_code, count(*) AS n, rank() OVER (ORDER BY count(*) DESC, test_code) AS r "
           f"FROM {LABS} GROUP BY test_code")
    got = ask(gateway, tokens["ben"], sql)
    assert got == oracle_rows(analyst_oracle, sql)


def test_past_versions_are_held_to_the_same_rule(gateway, tokens):
    sql = f'SELECT patient_id, count(*) FROM clinical.labs."results@v0" GROUP BY patient_id'
    assert ask(gateway, tokens["ben"], sql) == []
    assert ask(gateway, tokens["ben"], f'SELECT count(*) FROM clinical.labs."results@v0"')[0][0] > 0


def test_rows_without_a_privacy_unit_count_as_contributors(gateway, tokens):
    everything = ask(gateway, tokens["dev"], f"SELECT region, count(*) FROM {FACILITIES} GROUP BY region")
    got = ask(gateway, tokens["ben"], f"SELECT region, count(*) FROM {FACILITIES} GROUP BY region")
    assert got == [row for row in everything if row[1] >= 3]


def test_the_postgres_door_refuses_with_insufficient_privilege(gateway, tokens):
    host, port = gateway.pg_address.rsplit(":", 1)
    with psycopg.connect(host=host, port=int(port), dbname="mesh", user="ben", password=tokens["ben"],
                         sslmode="disable", connect_timeout=30, autocommit=True) as conn:
        with conn.cursor() as cur:
            with pytest.raises(psycopg.Error) as caught:
                cur.execute(f"SELECT * FROM {LABS} LIMIT 1")
            assert caught.value.sqlstate == "42501", caught.value
            assert "aggregate_only" in str(caught.value)
            cur.execute(f"SELECT count(*) FROM {LABS} WHERE patient_id = -1")
            assert cur.fetchall() == []


@pytest.mark.parametrize("sql, having", [
    (f"WITH t AS (SELECT test_code, patient_id FROM {LABS} WHERE abnormal) "
     "SELECT test_code, count(*) FROM t GROUP BY test_code",
     f"count(DISTINCT patient_id) >= {K}"),
    (f"SELECT test_code, count(DISTINCT patient_id) FROM {LABS} GROUP BY test_code",
     f"count(DISTINCT patient_id) >= {K}"),
    (f"SELECT s.test_code, count(*) FROM (SELECT * FROM {LABS} WHERE NOT abnormal) s GROUP BY s.test_code",
     f"count(DISTINCT s.patient_id) >= {K}"),
    (f"SELECT a.test_code, count(*) FROM {LABS} a JOIN {LABS} b ON a.encounter_id = b.encounter_id "
     "AND a.result_id < b.result_id GROUP BY a.test_code",
     f"count(DISTINCT a.patient_id) >= {K} AND count(DISTINCT b.patient_id) >= {K}"),
    # Each aggregate counts the contributors it reads: a sparse argument or a FILTER
    # narrows them.
    (f"SELECT test_code, count(CASE WHEN abnormal THEN 1 END) FROM {LABS} GROUP BY test_code",
     f"count(DISTINCT patient_id) >= {K} AND count(DISTINCT CASE WHEN abnormal THEN patient_id END) >= {K}"),
])
def test_aggregates_of_any_shape_match_the_threshold_applied_by_hand(gateway, tokens, analyst_oracle, sql, having):
    got = ask(gateway, tokens["ben"], sql)
    want = oracle_rows(analyst_oracle, f"{sql} HAVING {having}")
    assert got == want and got


def test_a_correlated_subquery_counts_per_outer_row_under_the_rule(gateway, tokens):
    sql = (f"SELECT v.encounter_id, (SELECT count(*) FROM {LABS} l WHERE l.encounter_id = v.encounter_id) "
           "FROM clinical.encounters.visits v ORDER BY v.encounter_id LIMIT 20")
    try:
        rows = ask(gateway, tokens["ben"], sql)
    except adm.Error as refused:
        # Refused is as good as suppressed: no per-encounter count may come out.
        assert refused.status_code in (adm.AdbcStatusCode.UNAUTHORIZED, adm.AdbcStatusCode.INVALID_ARGUMENT), refused
        return
    assert all(n in (None, 0) for _, n in rows), rows


def test_explain_shows_the_refusal_and_explain_analyze_is_refused(gateway, tokens):
    # EXPLAIN runs nothing: DataFusion shows the analyzer's refusal as the plan.
    conn = adbc_connect(gateway.uri, tokens["ben"])
    try:
        text = " ".join(str(v) for row in adbc_query(conn, f"EXPLAIN SELECT * FROM {LABS}").to_pylist()
                        for v in row.values())
    finally:
        conn.close()
    assert "may be read only in aggregate" in text, text
    # EXPLAIN ANALYZE runs the statement: refused like the statement.
    refusal(gateway, tokens["ben"], f"EXPLAIN ANALYZE SELECT * FROM {LABS}")


def test_quality_facts_that_could_single_out_a_row_are_withheld(gateway, tokens):
    sql = ("SELECT column_name, min_value, max_value, null_count, row_count FROM mesh.meta.quality "
           "WHERE domain = 'clinical' AND product = 'labs' AND table_name = 'results'")
    deadline = time.monotonic() + 90
    while True:
        measured = ask(gateway, tokens["ana"], sql)
        if measured or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert measured, "clinical.labs was never measured"
    # The clinician reads rows: values show.
    assert all(row[1] is not None for row in measured), measured
    # The analyst reads only aggregates: no column's min, max or null count, only the
    # table's row count.
    analyst = ask(gateway, tokens["ben"], sql)
    assert analyst and all(row[1] is None and row[2] is None and row[3] is None for row in analyst), analyst
    assert all(row[4] is not None for row in analyst), analyst


def test_the_catalog_tells_each_caller_the_rule_it_reads_under(gateway, tokens):
    sql = ("SELECT domain || '.' || product || '.' || table_name, aggregate_only FROM mesh.meta.tables "
           f"WHERE domain || '.' || product || '.' || table_name IN ('{LABS}', '{FACILITIES}')")
    assert ask(gateway, tokens["ben"], sql) == [
        (LABS, f"groups of at least {K} distinct patient_id"),
        (FACILITIES, "groups of at least 3 rows"),
    ]
    assert ask(gateway, tokens["ana"], sql) == [(LABS, None), (FACILITIES, "groups of at least 3 rows")]
    assert ask(gateway, tokens["dev"], sql) == [(LABS, None), (FACILITIES, None)]


def test_a_single_sparse_aggregate_cannot_single_out_a_row(gateway, tokens):
    # Every group holds every row, but each aggregate reads one row only.
    sql = (f"SELECT s.value, sum(CASE WHEN l.result_id = s.value THEN l.patient_id END) "
           f"FROM {LABS} l CROSS JOIN generate_series(1, 50) s GROUP BY s.value")
    assert ask(gateway, tokens["ben"], sql) == []


def test_errors_on_rows_keep_their_values_to_themselves(gateway, tokens):
    sql = (f"SELECT count(*) FROM {LABS} WHERE "
           "CAST(CAST(patient_id AS VARCHAR) || '|' || test_code AS INT) = 0")
    conn = adbc_connect(gateway.uri, tokens["ben"])
    try:
        with pytest.raises(adm.Error) as caught:
            adbc_query(conn, sql)
    finally:
        conn.close()
    message = str(caught.value)
    assert caught.value.status_code == adm.AdbcStatusCode.INVALID_ARGUMENT, caught.value
    assert "detail is withheld" in message, message
    assert re.search(r"\d+\|\w", message) is None, f"a row's values in the error: {message}"
    # The admin reads rows: the same statement's error says what failed.
    conn = adbc_connect(gateway.uri, tokens["dev"])
    try:
        with pytest.raises(adm.Error) as caught:
            adbc_query(conn, sql)
    finally:
        conn.close()
    assert "Cannot cast" in str(caught.value) or "cast" in str(caught.value).lower(), caught.value


def test_derived_tables_are_held_to_their_domains_thresholds(gateway, tokens):
    # The transform returning rows does not serve (its detail is in the server log).
    status = ask(gateway, tokens["dev"],
                 "SELECT product, status FROM mesh.meta.products WHERE product IN ('labcopy', 'labstats')")
    assert status == [("labcopy", "broken"), ("labstats", "ok")], status
    # Even the admin reading the aggregate gets only groups the analytics domain may see.
    rows = ask(gateway, tokens["dev"], "SELECT count(*), min(patients) FROM analytics.labstats.t")
    assert rows[0][0] > 0 and rows[0][1] >= K, rows
