"""Bad input is rejected with the right gRPC status, and the gateway is read-only.

gRPC status -> client exception, as the clients actually map them:
  ADBC (Go Flight SQL driver): INVALID_ARGUMENT / NOT_FOUND -> adbc_driver_manager.ProgrammingError
      with .status_code AdbcStatusCode.INVALID_ARGUMENT / NOT_FOUND.
  pyarrow.flight (a non-Arrow-C++ server sends no x-arrow-status trailer, so the
      plain gRPC code decides): INVALID_ARGUMENT -> pyarrow.ArrowInvalid,
      NOT_FOUND -> pyarrow.ArrowKeyError, UNIMPLEMENTED -> pyarrow.ArrowNotImplementedError,
      INTERNAL -> pyarrow.flight.FlightInternalError, UNKNOWN -> FlightServerError/ArrowException.
After every error the same connection must still answer a good query.
"""

from __future__ import annotations

from pathlib import Path

import adbc_driver_manager as adm
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from mesh_helpers import (
    adbc_query,
    command_prepared_statement_query,
    command_statement_query,
    command_statement_update,
    flight_command_info,
    flight_read_all,
    flight_sql,
    pack_any,
    snapshot_tree,
)

Code = adm.AdbcStatusCode

BAD_SQL = [
    "SELEC 1",
    "SELECT 1 +",
    "SELECT count(* FROM clinical.encounters.visits",
    "SELECT * FROM clinical.encounters.visits WHERE",
]

UNKNOWN_OBJECTS = [
    "SELECT * FROM clinical.encounters.no_such_table",
    "SELECT * FROM clinical.no_such_product.visits",
    "SELECT * FROM no_such_domain.encounters.visits",
]


def _adbc_error(conn, sql, params=None) -> adm.Error:
    with pytest.raises(adm.Error) as info:
        adbc_query(conn, sql, params)
    return info.value


def _flight_healthy(client, oracle) -> None:
    got = flight_sql(client, "SELECT count(*) AS n FROM reference.regions.regions")
    assert got.column("n")[0].as_py() == oracle.count("reference.regions.regions")


# --------------------------------------------------------------------------
# ADBC
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sql", BAD_SQL)
def test_adbc_bad_sql_is_invalid_argument(adbc_conn, healthy, sql):
    healthy(adbc_conn)
    err = _adbc_error(adbc_conn, sql)
    assert isinstance(err, adm.ProgrammingError), f"{type(err).__name__}: {err}"
    assert err.status_code == Code.INVALID_ARGUMENT, f"status {err.status_code.name}: {err}"
    healthy(adbc_conn)


@pytest.mark.parametrize("sql", UNKNOWN_OBJECTS)
def test_adbc_unknown_table_is_not_found(adbc_conn, healthy, sql):
    err = _adbc_error(adbc_conn, sql)
    assert isinstance(err, adm.ProgrammingError), f"{type(err).__name__}: {err}"
    assert err.status_code == Code.NOT_FOUND, f"status {err.status_code.name}: {err}"
    healthy(adbc_conn)


def test_adbc_unknown_column_is_a_client_error(adbc_conn, healthy):
    err = _adbc_error(adbc_conn, "SELECT no_such_column FROM clinical.encounters.visits")
    assert err.status_code in (Code.INVALID_ARGUMENT, Code.NOT_FOUND), f"status {err.status_code.name}: {err}"
    healthy(adbc_conn)


def test_adbc_wrong_parameter_count(adbc_conn, healthy):
    sql = "SELECT count(*) AS n FROM clinical.encounters.visits WHERE patient_id = ?"
    _adbc_error(adbc_conn, sql, (1, 2))
    healthy(adbc_conn)


def test_adbc_execution_error_mid_stream(adbc_conn, oracle, healthy):
    """An error raised while producing batches reaches the client instead of a short result."""
    non_numeric = oracle.scalar(
        "SELECT count(*) FROM clinical.encounters.visits "
        "WHERE diagnosis_code IS NOT NULL AND TRY_CAST(diagnosis_code AS INTEGER) IS NULL"
    )
    if not non_numeric:
        pytest.skip("every diagnosis_code is numeric; no cast failure to provoke")
    _adbc_error(adbc_conn, "SELECT CAST(diagnosis_code AS INTEGER) AS d FROM clinical.encounters.visits")
    healthy(adbc_conn)


def test_adbc_errors_in_a_row_then_good_queries(adbc_conn, healthy, oracle):
    for sql in BAD_SQL + UNKNOWN_OBJECTS:
        _adbc_error(adbc_conn, sql)
    for _ in range(3):
        healthy(adbc_conn)
    got = adbc_query(adbc_conn, "SELECT count(*) AS n FROM clinical.labs.results")
    assert got.column("n")[0].as_py() == oracle.count("clinical.labs.results")


# --------------------------------------------------------------------------
# pyarrow.flight with hand-packed commands
# --------------------------------------------------------------------------


def _flight_query_error(client, command: bytes) -> Exception:
    with pytest.raises(pa.ArrowException) as info:
        got = flight_command_info(client, command)
        flight_read_all(client, got)
    return info.value


@pytest.mark.parametrize("sql", BAD_SQL[:2])
def test_pyarrow_bad_sql_is_invalid_argument(flight_client, oracle, sql):
    err = _flight_query_error(flight_client, command_statement_query(sql))
    assert isinstance(err, pa.ArrowInvalid), f"expected INVALID_ARGUMENT (ArrowInvalid), got {type(err).__name__}: {err}"
    _flight_healthy(flight_client, oracle)


@pytest.mark.parametrize("sql", UNKNOWN_OBJECTS[:2])
def test_pyarrow_unknown_table_is_not_found(flight_client, oracle, sql):
    err = _flight_query_error(flight_client, command_statement_query(sql))
    assert isinstance(err, pa.ArrowKeyError), f"expected NOT_FOUND (ArrowKeyError), got {type(err).__name__}: {err}"
    _flight_healthy(flight_client, oracle)


def test_pyarrow_garbage_command(flight_client, oracle):
    err = _flight_query_error(flight_client, b"\xff\xfe definitely not protobuf")
    assert isinstance(err, (pa.ArrowInvalid, pa.ArrowNotImplementedError)), f"{type(err).__name__}: {err}"
    _flight_healthy(flight_client, oracle)


def test_pyarrow_unknown_command_type(flight_client, oracle):
    err = _flight_query_error(flight_client, pack_any("CommandThatDoesNotExist", b""))
    assert isinstance(err, (pa.ArrowInvalid, pa.ArrowNotImplementedError)), f"{type(err).__name__}: {err}"
    _flight_healthy(flight_client, oracle)


def test_pyarrow_unknown_prepared_handle(flight_client, oracle):
    err = _flight_query_error(flight_client, command_prepared_statement_query(b"no-such-handle-\x00\x01"))
    assert isinstance(err, (pa.ArrowKeyError, pa.ArrowInvalid)), f"{type(err).__name__}: {err}"
    _flight_healthy(flight_client, oracle)


def test_pyarrow_bogus_ticket(flight_client, oracle):
    with pytest.raises(pa.ArrowException):
        flight_client.do_get(flight.Ticket(b"\x00 not a ticket \xff")).read_all()
    _flight_healthy(flight_client, oracle)


def test_pyarrow_path_descriptor(flight_client, oracle):
    with pytest.raises(pa.ArrowException):
        flight_client.get_flight_info(flight.FlightDescriptor.for_path("billing", "claims"))
    _flight_healthy(flight_client, oracle)


# --------------------------------------------------------------------------
# flightsql-dbapi / SQLAlchemy
# --------------------------------------------------------------------------


def test_sqlalchemy_bad_sql(sa_engine, oracle):
    from sqlalchemy import text

    with sa_engine.connect() as conn:
        with pytest.raises(Exception) as info:
            conn.execute(text("SELEC 1"))
        err = info.value
        root = getattr(err, "orig", None) or err
        assert isinstance(root, pa.ArrowInvalid), f"{type(root).__name__}: {root}"
        n = conn.execute(text("SELECT count(*) AS n FROM reference.regions.regions")).scalar()
    assert int(n) == oracle.count("reference.regions.regions")


# --------------------------------------------------------------------------
# Read-only
# --------------------------------------------------------------------------


# `meshgate demo` appends its audit log to <dir>/audit.jsonl (unless configured
# otherwise), and keeps its state (quality history, runs, usage: written as queries
# run) in <dir>/.state: the gateway's own files, not part of the mesh.
def _data_files(mesh_dir):
    """The mesh's files but those the gateway and its domain nodes write themselves: the
    audit log, and their state stores (`.state/`, the gateway's and each node's under
    `nodes/<domain>/`, written as queries are counted)."""
    return {path: stat for path, stat in snapshot_tree(mesh_dir, ["audit.jsonl"]).items()
            if ".state" not in Path(path).parts}


@pytest.fixture(scope="module")
def mesh_before(mesh_dir):
    return _data_files(mesh_dir)


WRITE_STATEMENTS = [
    "CREATE TABLE scratch_ctas AS SELECT 1 AS a",
    "CREATE TABLE billing.claims.scratch_ctas AS SELECT 1 AS a",
    "CREATE VIEW scratch_view AS SELECT 1 AS a",
    "CREATE SCHEMA billing.scratch_schema",
    "INSERT INTO billing.claims.claims SELECT * FROM billing.claims.claims LIMIT 1",
    "INSERT INTO reference.regions.regions (region, name, population) VALUES ('x', 'y', 1)",
    "DELETE FROM billing.claims.claims",
    "UPDATE billing.claims.claims SET amount = 0",
    "DROP TABLE billing.claims.claims",
    "DROP SCHEMA billing.claims",
    "SET datafusion.execution.batch_size = 1",
    "CREATE EXTERNAL TABLE scratch_ext STORED AS PARQUET LOCATION '{mesh}/data/billing/claims/claims/'",
    "COPY (SELECT 1 AS a) TO '{out}/copy_select.parquet' STORED AS PARQUET",
    "COPY billing.claims.claims TO '{out}/copy_claims.csv' STORED AS CSV",
]


@pytest.mark.parametrize("template", WRITE_STATEMENTS)
def test_write_statements_refused(adbc_conn, healthy, mesh_before, mesh_dir, tmp_path, template):
    sql = template.format(mesh=mesh_dir, out=tmp_path)
    with pytest.raises(adm.Error):
        adbc_query(adbc_conn, sql)
    assert list(tmp_path.iterdir()) == [], f"{sql!r} wrote {list(tmp_path.iterdir())}"
    healthy(adbc_conn)


@pytest.mark.parametrize("name", ["scratch_ctas", "billing.claims.scratch_ctas", "scratch_view", "scratch_ext"])
def test_refused_objects_do_not_exist(adbc_conn, mesh_before, name):
    with pytest.raises(adm.Error):
        adbc_query(adbc_conn, f"SELECT * FROM {name}")


def test_no_direct_file_access(adbc_conn, healthy, tmp_path, mesh_before):
    """A path in FROM must not read arbitrary files around the catalog."""
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": [1, 2, 3]}), outside)
    with pytest.raises(adm.Error):
        adbc_query(adbc_conn, f"SELECT * FROM '{outside}'")
    healthy(adbc_conn)


def test_adbc_bulk_ingest_refused(adbc_conn, healthy, oracle, mesh_before):
    data = pa.table({"a": pa.array([1, 2], pa.int64())})
    with adbc_conn.cursor() as cur:
        with pytest.raises(adm.Error):
            cur.adbc_ingest("scratch_ingest", data, mode="create")
    claims = adbc_query(adbc_conn, "SELECT * FROM billing.claims.claims LIMIT 1")
    with adbc_conn.cursor() as cur:
        with pytest.raises(adm.Error):
            cur.adbc_ingest("claims", claims, mode="append", catalog_name="billing", db_schema_name="claims")
    healthy(adbc_conn)
    got = adbc_query(adbc_conn, "SELECT count(*) AS n FROM billing.claims.claims")
    assert got.column("n")[0].as_py() == oracle.count("billing.claims.claims")


def test_statement_update_refused(flight_client, oracle, mesh_before):
    """DoPut(CommandStatementUpdate), the Flight SQL 'execute update' path."""
    descriptor = flight.FlightDescriptor.for_command(
        command_statement_update("INSERT INTO reference.regions.regions VALUES ('x', 'y', 1)")
    )
    with pytest.raises(pa.ArrowException):
        writer, reader = flight_client.do_put(descriptor, pa.schema([]))
        try:
            writer.done_writing()
            reader.read()
        finally:
            writer.close()
    _flight_healthy(flight_client, oracle)


def test_data_unchanged_after_write_attempts(adbc_conn, oracle, mesh_dir, mesh_before):
    for fqtn in ["billing.claims.claims", "reference.regions.regions"]:
        got = adbc_query(adbc_conn, f"SELECT count(*) AS n FROM {fqtn}")
        assert got.column("n")[0].as_py() == oracle.count(fqtn), fqtn
    after = _data_files(mesh_dir)
    added = sorted(set(after) - set(mesh_before))
    removed = sorted(set(mesh_before) - set(after))
    changed = sorted(k for k in set(after) & set(mesh_before) if after[k] != mesh_before[k])
    assert not (added or removed or changed), f"mesh dir modified: added {added}, removed {removed}, changed {changed}"
