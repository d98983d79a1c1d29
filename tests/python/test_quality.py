"""Measured quality, discovered from Python: the quality agent's measurements in
`mesh.meta.quality`, `quality_checks` and `quality_history`, compared with DuckDB over
the same files; what each persona may see of them; and history that survives a
restart of the gateway while new data triggers a new measurement."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import serve_config, start_server
from mesh_helpers import DEMO_SECRET_FILE, TABLES, adbc_connect, adbc_query, data_dir
from policy_model import PERSONAS

# The demo's tables are small: the agent reads each in full within seconds of start.
MEASURED_WITHIN_S = 60


def _rows(conn, sql: str) -> list[dict]:
    return adbc_query(conn, sql).to_pylist()


def _wait_for(conn, sql: str, predicate, what: str) -> list[dict]:
    deadline = time.monotonic() + MEASURED_WITHIN_S
    while True:
        rows = _rows(conn, sql)
        if predicate(rows):
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"not within {MEASURED_WITHIN_S} s: {what}; last rows: {rows}", pytrace=False)
        time.sleep(0.25)


def _measured_tables(rows: list[dict]) -> set[str]:
    return {f"{r['domain']}.{r['product']}.{r['table_name']}" for r in rows}


@pytest.fixture
def measured(adbc_conn):
    """Waits until every demo table has a measurement."""
    _wait_for(
        adbc_conn,
        "SELECT domain, product, table_name FROM mesh.meta.quality_history WHERE error IS NULL",
        lambda rows: _measured_tables(rows) >= set(TABLES),
        "every demo table measured",
    )
    return adbc_conn


def test_row_counts_and_null_counts_match_duckdb(measured, oracle):
    rows = _rows(
        measured,
        "SELECT domain, product, table_name, column_name, row_count, null_count, "
        "null_fraction, method, exact FROM mesh.meta.quality",
    )
    by_table: dict[str, list[dict]] = {}
    for r in rows:
        by_table.setdefault(f"{r['domain']}.{r['product']}.{r['table_name']}", []).append(r)
    assert set(by_table) == set(TABLES)
    for fqtn, columns in by_table.items():
        expected_rows = oracle.count(fqtn)
        assert {c["column_name"] for c in columns} == {c.name for c in TABLES[fqtn]}, fqtn
        for c in columns:
            assert c["method"] == "scan" and c["exact"], c
            assert c["row_count"] == expected_rows, c
            nulls = oracle.scalar(f'SELECT count(*) - count("{c["column_name"]}") FROM {fqtn}')
            assert c["null_count"] == nulls, c
            assert c["null_fraction"] == pytest.approx(nulls / expected_rows), c


def test_bounds_and_distinct_estimates_match_duckdb(measured, oracle):
    rows = _rows(
        measured,
        "SELECT min_value, max_value, distinct_estimate FROM mesh.meta.quality "
        "WHERE domain = 'patients' AND table_name = 'patients' AND column_name = 'patient_id'",
    )
    assert len(rows) == 1
    low, high, distinct = oracle.query(
        "SELECT min(patient_id), max(patient_id), count(DISTINCT patient_id) "
        "FROM patients.registry.patients"
    ).to_pylist()[0].values()
    assert (rows[0]["min_value"], rows[0]["max_value"]) == (str(low), str(high))
    # HyperLogLog: within 3% of the exact count, never above the rows counted.
    assert abs(rows[0]["distinct_estimate"] - distinct) <= 0.03 * distinct
    assert rows[0]["distinct_estimate"] <= oracle.count("patients.registry.patients")


def test_declared_checks_pass_on_the_demo(measured):
    rows = _rows(
        measured,
        "SELECT domain, table_name, column_name, check_name, passed, failing_rows, evidence "
        "FROM mesh.meta.quality_checks",
    )
    kinds = {r["check_name"] for r in rows}
    assert {"not_null", "unique", "accepted_values", "range", "min_rows"} <= kinds
    for r in rows:
        assert r["passed"] is True, r
        assert r["evidence"] == "scan", r
    # Every non-nullable demo column carries a not_null check.
    not_null = {(r["table_name"], r["column_name"]) for r in rows if r["check_name"] == "not_null"}
    assert ("patients", "patient_id") in not_null and ("visits", "diagnosis_code") not in not_null
    # A declared primary key is measured as unique and never null (regions declares no
    # check on its key column: the key alone makes them).
    checks = {(r["table_name"], r["column_name"], r["check_name"]) for r in rows}
    for table, column in [("regions", "region"), ("facilities", "facility_id"), ("claims", "claim_id")]:
        assert {(table, column, "unique"), (table, column, "not_null")} <= checks, (table, column)


def test_history_records_why_and_what_it_cost(measured):
    rows = _rows(
        measured,
        "SELECT h.domain, h.product, h.table_name, h.trigger, h.method, h.row_count, h.rows_read, "
        "h.bytes_read, h.data_bytes, h.checks_failed, t.data_files FROM mesh.meta.quality_history h "
        "JOIN mesh.meta.tables t ON t.domain = h.domain AND t.product = h.product "
        "AND t.table_name = h.table_name",
    )
    tables = _rows(measured, "SELECT domain, product, table_name, format, data_bytes FROM mesh.meta.tables")
    sizes = {(r["domain"], r["product"], r["table_name"]): r["data_bytes"] or 0 for r in tables}
    # A virtual table has no bytes of its own: it reads its inputs.
    virtual = {(r["domain"], r["product"], r["table_name"]) for r in tables if r["format"] == "virtual"}
    # Counting a table's orphans reads its key columns once more per reference, and the
    # keys of each table it references; a composite key is counted in two more passes.
    referenced: dict = {}
    for r in _rows(measured, "SELECT domain, product, table_name, references_domain, references_product, "
                             "references_table FROM mesh.meta.relationships"):
        referenced.setdefault((r["domain"], r["product"], r["table_name"]), set()).add(
            (r["references_domain"], r["references_product"], r["references_table"]))
    assert rows
    for r in rows:
        key = (r["domain"], r["product"], r["table_name"])
        targets = referenced.get(key, set())
        bound = r["data_bytes"] * (3 + len(targets)) + sum(sizes.get(t, 0) for t in targets)
        assert r["trigger"] in {"initial", "data_change", "schedule"}, r
        assert r["rows_read"] == r["row_count"], r
        assert 0 < r["bytes_read"] and (key in virtual or r["bytes_read"] <= bound), r
        assert r["checks_failed"] == 0, r


def _persona_conn(server, mint, name: str):
    return adbc_connect(server.uri, mint(*PERSONAS[name].mint_args()))


def test_personas_see_quality_of_what_they_may_read(measured, server, mint):
    # cara (billing) reads billing and reference data only.
    with _persona_conn(server, mint, "cara") as conn:
        tables = _measured_tables(_rows(conn, "SELECT * FROM mesh.meta.quality"))
        history = _measured_tables(_rows(conn, "SELECT * FROM mesh.meta.quality_history"))
    assert tables == history
    assert tables and all(t.split(".")[0] in {"billing", "reference"} for t in tables), tables


def test_values_are_withheld_where_the_persona_sees_masks_or_row_filters(measured, server, mint):
    with _persona_conn(server, mint, "ana") as conn:
        # ana reads patients through a region row filter: no value may show.
        patients = _rows(
            conn,
            "SELECT column_name, min_value, max_value, row_count FROM mesh.meta.quality "
            "WHERE table_name = 'patients'",
        )
        # ana reads lab results unfiltered and unmasked.
        labs = _rows(
            conn,
            "SELECT column_name, min_value FROM mesh.meta.quality WHERE table_name = 'results'",
        )
    assert patients and all(r["min_value"] is None and r["max_value"] is None for r in patients)
    assert all(r["row_count"] is not None for r in patients)
    assert labs and all(r["min_value"] is not None for r in labs), labs
    with _persona_conn(server, mint, "ben") as conn:
        # ben (analyst) sees diagnosis codes hashed: nothing derived from them is shown
        # (not even their checks); the other columns keep theirs.
        value = _rows(
            conn,
            "SELECT column_name, min_value, null_count, distinct_estimate FROM mesh.meta.quality "
            "WHERE table_name = 'visits' AND column_name IN ('diagnosis_code', 'encounter_id')",
        )
        checks = _rows(
            conn,
            "SELECT column_name FROM mesh.meta.quality_checks WHERE table_name = 'visits'",
        )
        # ben reads lab results only in aggregate: no column's values show.
        labs = _rows(
            conn,
            "SELECT column_name, min_value, max_value, null_count FROM mesh.meta.quality "
            "WHERE table_name = 'results'",
        )
    got = {r["column_name"]: r for r in value}
    assert got["diagnosis_code"]["min_value"] is None and got["diagnosis_code"]["null_count"] is None, got
    assert got["diagnosis_code"]["distinct_estimate"] is None, got
    assert got["encounter_id"]["min_value"] is not None and got["encounter_id"]["null_count"] == 0, got
    checked = {r["column_name"] for r in checks}
    assert "encounter_id" in checked and "diagnosis_code" not in checked, checked
    assert labs and all(r["min_value"] is None and r["max_value"] is None and r["null_count"] is None
                        for r in labs), labs


def test_history_survives_a_restart_and_new_data_is_measured(demo, meshgate_bin, mint, tmp_path):
    mesh = tmp_path / "mesh"
    shutil.copytree(demo.mesh_dir, mesh, ignore=shutil.ignore_patterns(".state", "audit.jsonl"))
    # Descriptors name their data by absolute location: point the copy at its own data.
    for descriptor in mesh.glob("*/*.yaml"):
        text = descriptor.read_text()
        descriptor.write_text(text.replace(str(demo.mesh_dir.resolve()), str(mesh.resolve())))
    config = tmp_path / "meshgate.yaml"
    config.write_text(serve_config(mesh / DEMO_SECRET_FILE))
    state = tmp_path / "state"
    argv = [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
            "--config", config, "--state-dir", state]
    token = mint("--sub", "restart", "--role", "admin")
    history_sql = (
        "SELECT measured_at, trigger, row_count FROM mesh.meta.quality_history "
        "WHERE domain = 'billing' AND table_name = 'claims' ORDER BY measured_at"
    )

    first = start_server(argv, "quality-first")
    try:
        with adbc_connect(first.uri, token) as conn:
            before = _wait_for(conn, history_sql, lambda rows: len(rows) >= 1, "claims measured")
    finally:
        assert first.stop() == 0
    assert (state / "quality.redb").is_file()

    second = start_server(argv, "quality-second")
    try:
        with adbc_connect(second.uri, token) as conn:
            after = _rows(conn, history_sql)
            # The measurement from before the restart is still there, unchanged; the
            # data did not change and the schedule is not due, so nothing new yet.
            assert after[: len(before)] == before
            assert [r["trigger"] for r in after] == [r["trigger"] for r in before]

            # New data: one more Parquet file in the claims table.
            folder = data_dir(mesh, "billing.claims.claims")
            part = sorted(Path(folder).glob("*.parquet"))[0]
            shutil.copy(part, Path(folder) / "part-new.parquet")
            grown = _wait_for(
                conn,
                history_sql,
                lambda rows: rows and rows[-1]["trigger"] == "data_change",
                "a measurement triggered by the new file",
            )
            latest = _rows(
                conn,
                "SELECT row_count FROM mesh.meta.quality WHERE table_name = 'claims' LIMIT 1",
            )
    finally:
        second.stop()
    assert grown[-1]["row_count"] > before[-1]["row_count"]
    assert latest[0]["row_count"] == grown[-1]["row_count"]
