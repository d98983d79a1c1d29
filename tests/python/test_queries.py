"""Query answers, checked against DuckDB over the same files.

Every SQL text below runs unchanged on the gateway and on the oracle (the
oracle exposes the same domain.product.table names), so nothing here is a
hard-coded answer.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from mesh_helpers import (
    TABLES,
    adbc_query,
    assert_rows_equal,
    flight_sql,
)

REGION_JOIN = """
SELECT v.region, count(*) AS visits, sum(c.amount) AS billed
FROM clinical.encounters.visits v
JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id
GROUP BY v.region
ORDER BY v.region
"""

THREE_WAY_JOIN = """
SELECT f.kind AS facility_kind, p.sex, count(*) AS visits,
       count(DISTINCT v.patient_id) AS patients, sum(f.beds) AS beds
FROM clinical.encounters.visits v
JOIN patients.registry.patients p ON p.patient_id = v.patient_id
JOIN reference.facilities.facilities f ON f.facility_id = v.facility_id
GROUP BY f.kind, p.sex
ORDER BY f.kind, p.sex
"""

FOUR_DOMAIN_JOIN = """
SELECT r.name AS region_name, c.status, count(*) AS claims, sum(c.amount) AS amount,
       min(c.submitted_on) AS first_submitted, max(v.admitted_at) AS last_admitted
FROM billing.claims.claims c
JOIN clinical.encounters.visits v ON v.encounter_id = c.encounter_id
JOIN patients.registry.patients p ON p.patient_id = c.patient_id
JOIN reference.regions.regions r ON r.region = p.region
GROUP BY r.name, c.status
ORDER BY r.name, c.status
"""


def _check(adbc_conn, oracle, sql, *, ordered=True, nonempty=True, params=None):
    got = adbc_query(adbc_conn, sql, params)
    want = oracle.query(sql, params)
    if nonempty:
        assert want.num_rows > 0, f"oracle returned no rows for: {sql}"
    assert_rows_equal(got, want, ordered=ordered, context=f"{' '.join(sql.split())[:120]}: ")
    return got, want


# --------------------------------------------------------------------------
# Plain scans
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fqtn", sorted(TABLES))
def test_row_counts(adbc_conn, oracle, fqtn):
    got = adbc_query(adbc_conn, f"SELECT count(*) AS n FROM {fqtn}")
    want = oracle.count(fqtn)
    assert want > 0, f"oracle sees no rows in {fqtn}"
    assert got.column("n")[0].as_py() == want


def test_reference_row_fidelity(adbc_conn, oracle):
    """Every value of a small table, including NULL beds, round-trips exactly."""
    _check(adbc_conn, oracle, "SELECT * FROM reference.facilities.facilities ORDER BY facility_id")
    _check(adbc_conn, oracle, "SELECT * FROM reference.regions.regions ORDER BY region")


def test_claims_row_fidelity(adbc_conn, oracle):
    """Decimals and dates survive the trip unchanged."""
    sql = "SELECT * FROM billing.claims.claims WHERE claim_id % 97 = 3 ORDER BY claim_id"
    got, _ = _check(adbc_conn, oracle, sql)
    assert got.schema.field("amount").type == pa.decimal128(12, 2)
    assert got.schema.field("submitted_on").type == pa.date32()


def test_patient_row_fidelity(adbc_conn, oracle):
    sql = "SELECT * FROM patients.registry.patients WHERE patient_id % 101 = 7 ORDER BY patient_id"
    got, _ = _check(adbc_conn, oracle, sql)
    assert got.schema.field("registered_at").type == pa.timestamp("us")
    assert got.schema.field("birth_date").type == pa.date32()


def test_nullable_columns_have_nulls_consistently(adbc_conn, oracle):
    sql = """
    SELECT count(*) AS n, count(discharged_at) AS discharged, count(diagnosis_code) AS diagnosed
    FROM clinical.encounters.visits
    """
    _check(adbc_conn, oracle, sql)
    _check(adbc_conn, oracle, "SELECT count(*) AS n, count(beds) AS with_beds FROM reference.facilities.facilities")


# --------------------------------------------------------------------------
# Cross-domain joins
# --------------------------------------------------------------------------


def test_cross_domain_join_by_region(adbc_conn, oracle):
    got, _ = _check(adbc_conn, oracle, REGION_JOIN)
    billed = got.schema.field("billed").type
    assert pa.types.is_decimal(billed) and billed.scale == 2, f"sum(decimal(12,2)) should stay decimal, got {billed}"


def test_three_way_join_with_patients_and_facilities(adbc_conn, oracle):
    _check(adbc_conn, oracle, THREE_WAY_JOIN)


def test_four_domain_join(adbc_conn, oracle):
    _check(adbc_conn, oracle, FOUR_DOMAIN_JOIN)


def test_claims_reference_existing_visits(adbc_conn, oracle):
    """Anti-join: the count of orphan claims agrees with the oracle (0 by contract)."""
    sql = """
    SELECT count(*) AS orphans FROM billing.claims.claims c
    WHERE NOT EXISTS (SELECT 1 FROM clinical.encounters.visits v WHERE v.encounter_id = c.encounter_id)
    """
    got, want = _check(adbc_conn, oracle, sql)
    assert want.column("orphans")[0].as_py() == 0, "contract: claims.encounter_id references visits"


# --------------------------------------------------------------------------
# Hive partitions
# --------------------------------------------------------------------------


def test_partition_filter_count(adbc_conn, oracle):
    sql = "SELECT count(*) AS n FROM clinical.encounters.visits WHERE admit_month = '2024-03'"
    got, want = _check(adbc_conn, oracle, sql)
    n = want.column("n")[0].as_py()
    total = oracle.count("clinical.encounters.visits")
    assert 0 < n < total, f"partition 2024-03 should hold some but not all visits ({n} of {total})"


def test_partition_group_by_month(adbc_conn, oracle):
    sql = "SELECT admit_month, count(*) AS n FROM clinical.encounters.visits GROUP BY admit_month ORDER BY admit_month"
    got, want = _check(adbc_conn, oracle, sql)
    months = got.column("admit_month").to_pylist()
    assert len(months) == 24 and months[0] == "2024-01" and months[-1] == "2025-12", months


def test_partition_range_and_predicate(adbc_conn, oracle):
    sql = """
    SELECT admit_month, kind, count(*) AS n, min(encounter_id) AS first_id
    FROM clinical.encounters.visits
    WHERE admit_month BETWEEN '2024-06' AND '2024-08' AND region = 'north'
    GROUP BY admit_month, kind
    ORDER BY admit_month, kind
    """
    _check(adbc_conn, oracle, sql)


def test_partition_column_in_projection(adbc_conn, oracle):
    """The partition value served with each row matches the directory it came from."""
    sql = """
    SELECT encounter_id, admit_month FROM clinical.encounters.visits
    WHERE encounter_id % 211 = 5 ORDER BY encounter_id
    """
    _check(adbc_conn, oracle, sql)


# --------------------------------------------------------------------------
# Delta table
# --------------------------------------------------------------------------


def test_delta_oracle_self_check(oracle):
    """The oracle's Delta file list agrees with pyarrow.dataset over the same files."""
    snap = oracle.delta["clinical.labs.results"]
    ds = pads.dataset([str(p) for p in snap.files], format="parquet")
    assert ds.count_rows() == oracle.count("clinical.labs.results")


def test_delta_count_and_aggregates(adbc_conn, oracle):
    sql = """
    SELECT count(*) AS n, count(DISTINCT test_code) AS tests,
           sum(CASE WHEN abnormal THEN 1 ELSE 0 END) AS abnormal,
           sum(value) AS total_value, min(taken_at) AS first_taken, max(taken_at) AS last_taken
    FROM clinical.labs.results
    """
    got, _ = _check(adbc_conn, oracle, sql)
    assert got.schema.field("first_taken").type == pa.timestamp("us", tz="UTC")


def test_delta_group_by(adbc_conn, oracle):
    sql = """
    SELECT test_code, unit, count(*) AS n, avg(value) AS mean_value, min(value) AS lo, max(value) AS hi
    FROM clinical.labs.results
    GROUP BY test_code, unit
    ORDER BY test_code, unit
    """
    _check(adbc_conn, oracle, sql)


def test_delta_joined_with_parquet(adbc_conn, oracle):
    sql = """
    SELECT v.kind, count(*) AS results, sum(CASE WHEN r.abnormal THEN 1 ELSE 0 END) AS abnormal
    FROM clinical.labs.results r
    JOIN clinical.encounters.visits v ON v.encounter_id = r.encounter_id
    GROUP BY v.kind
    ORDER BY v.kind
    """
    _check(adbc_conn, oracle, sql)


def test_delta_timestamp_filter(adbc_conn, oracle):
    if not oracle.has_utc:
        pytest.skip("DuckDB without ICU cannot pin its session time zone to UTC")
    sql = """
    SELECT count(*) AS n FROM clinical.labs.results
    WHERE taken_at >= TIMESTAMP '2025-01-01 00:00:00' AND abnormal
    """
    _check(adbc_conn, oracle, sql)


# --------------------------------------------------------------------------
# Other clients
# --------------------------------------------------------------------------


def test_pyarrow_flight_hand_packed_query(flight_client, oracle):
    got = flight_sql(flight_client, REGION_JOIN)
    want = oracle.query(REGION_JOIN)
    assert_rows_equal(got, want, ordered=True)


def test_sqlalchemy_query(sa_engine, oracle):
    from sqlalchemy import text

    with sa_engine.connect() as conn:
        result = conn.execute(text(REGION_JOIN))
        names = list(result.keys())
        rows = [tuple(r) for r in result.fetchall()]
    want = oracle.query(REGION_JOIN)
    assert names == want.column_names
    assert_rows_equal(rows, want, ordered=True)


def test_sqlalchemy_scalar(sa_engine, oracle):
    from sqlalchemy import text

    with sa_engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) AS n FROM clinical.labs.results")).scalar()
    assert int(n) == oracle.count("clinical.labs.results")
