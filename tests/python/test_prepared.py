"""Prepared statements with bound parameters.

ADBC's DB-API always prepares (CreatePreparedStatement), binds parameters with
DoPut(CommandPreparedStatementQuery) and executes with
GetFlightInfo(CommandPreparedStatementQuery).  Re-executing the same SQL on
the same cursor reuses the prepared handle and only rebinds.
"""

from __future__ import annotations

import pytest

from mesh_helpers import assert_rows_equal

VISITS_BY_PATIENT = """
SELECT count(*) AS visits, min(admitted_at) AS first_admit, max(facility_id) AS max_facility
FROM clinical.encounters.visits WHERE patient_id = ?
"""

VISIT_ROWS_BY_PATIENT = """
SELECT encounter_id, facility_id, admitted_at, diagnosis_code, admit_month
FROM clinical.encounters.visits WHERE patient_id = ? ORDER BY encounter_id
"""

CLAIMS_BY_STATUS = """
SELECT payer, count(*) AS n, sum(amount) AS total
FROM billing.claims.claims WHERE status = ? GROUP BY payer ORDER BY payer
"""

MIXED_PARAMS = """
SELECT kind, count(*) AS n
FROM clinical.encounters.visits
WHERE region = ? AND admit_month >= ? AND facility_id < ?
GROUP BY kind ORDER BY kind
"""


@pytest.fixture(scope="module")
def patient_ids(oracle):
    """Three patient ids chosen by the oracle: busiest, an ordinary one, and 42."""
    busiest = oracle.scalar(
        "SELECT patient_id FROM clinical.encounters.visits GROUP BY patient_id "
        "ORDER BY count(*) DESC, patient_id LIMIT 1"
    )
    ordinary = oracle.scalar(
        "SELECT patient_id FROM clinical.encounters.visits GROUP BY patient_id "
        "ORDER BY patient_id LIMIT 1 OFFSET 17"
    )
    return [42, int(busiest), int(ordinary)]


def test_int_parameter_reexecuted(adbc_conn, oracle, patient_ids):
    with adbc_conn.cursor() as cur:
        for pid in patient_ids:
            cur.execute(VISITS_BY_PATIENT, parameters=(pid,))
            got = cur.fetch_arrow_table()
            want = oracle.query(VISITS_BY_PATIENT, [pid])
            assert_rows_equal(got, want, ordered=True, context=f"patient_id={pid}: ")
    busiest = patient_ids[1]
    assert oracle.scalar("SELECT count(*) FROM clinical.encounters.visits WHERE patient_id = ?", [busiest]) > 1


def test_int_parameter_row_results(adbc_conn, oracle, patient_ids):
    with adbc_conn.cursor() as cur:
        for pid in reversed(patient_ids):
            cur.execute(VISIT_ROWS_BY_PATIENT, parameters=(pid,))
            got = cur.fetch_arrow_table()
            want = oracle.query(VISIT_ROWS_BY_PATIENT, [pid])
            assert_rows_equal(got, want, ordered=True, context=f"patient_id={pid}: ")


def test_no_match_parameter(adbc_conn):
    with adbc_conn.cursor() as cur:
        cur.execute(VISIT_ROWS_BY_PATIENT, parameters=(-1,))
        assert cur.fetch_arrow_table().num_rows == 0


def test_string_parameter(adbc_conn, oracle):
    statuses = oracle.query("SELECT DISTINCT status FROM billing.claims.claims ORDER BY 1").column(0).to_pylist()
    assert len(statuses) >= 2, statuses
    with adbc_conn.cursor() as cur:
        for status in statuses + ["no-such-status"]:
            cur.execute(CLAIMS_BY_STATUS, parameters=(status,))
            got = cur.fetch_arrow_table()
            want = oracle.query(CLAIMS_BY_STATUS, [status])
            assert_rows_equal(got, want, ordered=True, context=f"status={status!r}: ")


def test_mixed_parameters(adbc_conn, oracle):
    cases = [("north", "2025-01", 60), ("south", "2024-01", 1000), ("islands", "2025-06", 10)]
    with adbc_conn.cursor() as cur:
        for params in cases:
            cur.execute(MIXED_PARAMS, parameters=params)
            got = cur.fetch_arrow_table()
            want = oracle.query(MIXED_PARAMS, list(params))
            assert_rows_equal(got, want, ordered=True, context=f"params={params}: ")


def test_parameter_in_join(adbc_conn, oracle):
    sql = """
    SELECT v.region, count(*) AS claims, sum(c.amount) AS billed
    FROM clinical.encounters.visits v JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id
    WHERE v.admit_month = ? AND c.status = ?
    GROUP BY v.region ORDER BY v.region
    """
    with adbc_conn.cursor() as cur:
        for params in [("2024-03", "paid"), ("2025-11", "denied")]:
            cur.execute(sql, parameters=params)
            got = cur.fetch_arrow_table()
            want = oracle.query(sql, list(params))
            assert want.num_rows > 0
            assert_rows_equal(got, want, ordered=True, context=f"params={params}: ")


def test_prepare_reports_parameter_schema(adbc_conn):
    with adbc_conn.cursor() as cur:
        param_schema = cur.adbc_prepare(MIXED_PARAMS)
        if param_schema is not None:
            assert len(param_schema) == 3, f"3 placeholders, parameter schema {param_schema}"


def test_interleaved_prepared_statements(adbc_conn, oracle, patient_ids):
    """Two open prepared statements on one connection do not mix up handles."""
    with adbc_conn.cursor() as a, adbc_conn.cursor() as b:
        for pid, status in zip(patient_ids, ["paid", "denied", "submitted"]):
            a.execute(VISITS_BY_PATIENT, parameters=(pid,))
            b.execute(CLAIMS_BY_STATUS, parameters=(status,))
            got_b = b.fetch_arrow_table()
            got_a = a.fetch_arrow_table()
            assert_rows_equal(got_a, oracle.query(VISITS_BY_PATIENT, [pid]), ordered=True)
            assert_rows_equal(got_b, oracle.query(CLAIMS_BY_STATUS, [status]), ordered=True)


def test_flightsql_dbapi_union_parameters(flightsql_dbapi_client, oracle, patient_ids):
    """flightsql-dbapi binds every parameter as a one-row dense union<int64, float64, utf8, binary, bool>."""
    from flightsql.dbapi import Connection

    conn = Connection(flightsql_dbapi_client)
    cur = conn.cursor()
    pid = patient_ids[1]
    cur.execute(VISITS_BY_PATIENT, (pid,))
    rows = cur.fetchall()
    assert [d[0] for d in cur.description] == ["visits", "first_admit", "max_facility"]
    assert_rows_equal(rows, oracle.query(VISITS_BY_PATIENT, [pid]), ordered=True, check_names=False)

    cur.execute(CLAIMS_BY_STATUS, ("paid",))
    rows = cur.fetchall()
    assert_rows_equal(rows, oracle.query(CLAIMS_BY_STATUS, ["paid"]), ordered=True, check_names=False)
