"""Derived data products on a mesh of their own: a source product whose policy hides a
column and rows from the owning domain of the derived ones, a materialized table whose
runs are recorded (first, after an input changes, a failed run that keeps the last
version serving, the recovery), a virtual one read with the domain's rights, and one
whose transform needs a column the domain may not see (it cannot serve).

The demo's own derived product (analytics.readmissions) is checked against the
per-persona oracle with every other table (test_queries.py, test_zero_trust.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import serve_config, start_server
from mesh_helpers import DEMO_SECRET_FILE, adbc_connect, adbc_query
from policy_model import PERSONAS, can_read

WAIT_S = 60.0

SOURCE = """\
domain: lab
product: source
version: 2.0.0
description: Readings, one row per reading.
owner: { team: lab, contact: lab@example.org }
tables:
  - name: readings
    format: parquet
    location: {data}/readings
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: num, type: Int64 }
      - { name: den, type: Int64 }
      - { name: secret, type: Utf8 }
      - { name: label, type: Utf8 }
policy:
  read: { any_role: [analyst, admin] }
  rows:
    - { filter: "id < 100", unless_role: [admin] }
  columns:
    secret: { hide: true, unless_role: [admin] }
"""

RATIOS = """\
domain: stats
product: ratios
version: 1.0.0
description: Ratios of readings, computed by the stats domain.
owner: { team: stats, contact: stats@example.org }
tables:
  - name: ratios
    derived:
      mode: materialized
      inputs: [{ table: lab.source.readings, major: 2 }]
      transform: SELECT id, num / den AS ratio FROM lab.source.readings
      refresh: 1h
    format: delta
    location: {data}/ratios
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: ratio, type: Int64 }
  - name: ids
    derived:
      mode: virtual
      inputs: [lab.source.readings]
      transform: SELECT id, num FROM lab.source.readings
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: num, type: Int64 }
  - name: codes
    derived:
      mode: virtual
      inputs: [lab.source.readings]
      transform: SELECT id, CAST(label AS BIGINT) AS code FROM lab.source.readings WHERE label <> 'x'
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: code, type: Int64 }
  - name: raw_codes
    derived:
      mode: virtual
      inputs: [lab.source.readings]
      transform: SELECT id, CAST(label AS BIGINT) AS code FROM lab.source.readings
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: code, type: Int64 }
policy:
  read: { any_role: [analyst, admin, viewer] }
"""

LEAKY = """\
domain: stats
product: leaky
version: 1.0.0
description: Tries to publish a column its domain may not read.
owner: { team: stats, contact: stats@example.org }
tables:
  - name: secrets
    derived:
      mode: virtual
      inputs: [lab.source.readings]
      transform: SELECT id, secret FROM lab.source.readings
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: secret, type: Utf8 }
policy:
  read: { any_role: [admin, viewer] }
"""


TAGS = """\
domain: lab
product: tags
version: 1.0.0
description: Tags of readings; one of them tags a reading that does not exist.
owner: { team: lab, contact: lab@example.org }
tables:
  - name: tags
    format: parquet
    location: {data}/tags
    primary_key: [reading_id, tag]
    references:
      - { columns: [reading_id], table: lab.source.readings, to: [id] }
    columns:
      - { name: reading_id, type: Int64, nullable: false }
      - { name: tag, type: Utf8, nullable: false }
policy:
  read: { any_role: [admin, viewer] }
"""


def write_readings(folder: Path, name: str, rows: list[tuple[int, int, int, str]]):
    """Readings (id, num, den, secret); the label of id 2 is not a number."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "id": pa.array([r[0] for r in rows], pa.int64()),
        "num": pa.array([r[1] for r in rows], pa.int64()),
        "den": pa.array([r[2] for r in rows], pa.int64()),
        "secret": pa.array([r[3] for r in rows], pa.string()),
        "label": pa.array(["x" if r[0] == 2 else str(r[0] * 10) for r in rows], pa.string()),
    })
    # Written beside, then renamed: the gateway never sees half a file.
    staged = folder / f".{name}.tmp"
    pq.write_table(table, staged)
    staged.rename(folder / name)


@pytest.fixture(scope="module")
def derived_mesh(demo, tmp_path_factory, meshgate_bin):
    root = tmp_path_factory.mktemp("derived")
    data = root / "data"
    mesh = root / "mesh"
    write_readings(data / "readings", "part-1.parquet", [(1, 10, 2, "s1"), (2, 9, 3, "s2"), (150, 1, 1, "s150")])
    (data / "tags").mkdir(parents=True)
    pq.write_table(pa.table({"reading_id": pa.array([1, 1, 2, 999], pa.int64()),
                             "tag": pa.array(["a", "b", "a", "a"], pa.string())}), data / "tags" / "part-1.parquet")
    for domain, product, text in [("lab", "source", SOURCE), ("stats", "ratios", RATIOS), ("stats", "leaky", LEAKY),
                                  ("lab", "tags", TAGS)]:
        (mesh / domain).mkdir(parents=True, exist_ok=True)
        (mesh / domain / f"{product}.yaml").write_text(text.replace("{data}", str(data)))
    config = root / "meshgate.yaml"
    config.write_text(
        serve_config(demo.mesh_dir / DEMO_SECRET_FILE)
        .replace("    principals: { analytics:", "    principals: { stats:")
        .replace('"domain:analytics"', '"domain:stats"')
        .replace("materialize: false", "materialize: true")
        + f"state_dir: {json.dumps(str(root / 'state'))}\n"
    )
    srv = start_server(
        [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext", "--config", config],
        "derived",
    )
    try:
        yield srv, data
    finally:
        srv.stop()


def _query(srv, token, sql):
    conn = adbc_connect(srv.uri, token)
    try:
        return adbc_query(conn, sql).to_pylist()
    finally:
        conn.close()


def _wait(what, probe):
    deadline = time.monotonic() + WAIT_S
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001  not ready yet
            last = exc
        time.sleep(0.2)
    pytest.fail(f"{what} within {WAIT_S}s: last saw {last}", pytrace=False)


def _runs(srv, token):
    return _query(srv, token, "SELECT trigger, outcome, delta_version, rows_written, inputs, hidden_inputs, "
                              "failure FROM mesh.meta.runs WHERE table_name = 'ratios' ORDER BY ended_at")


def _ratios(srv, token):
    return sorted((r["id"], r["ratio"]) for r in _query(srv, token, "SELECT id, ratio FROM stats.ratios.ratios"))


def test_runs_materialize_on_start_after_input_changes_and_survive_a_failure(derived_mesh, mint):
    srv, data = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    # The first run: only the rows the stats domain (an analyst) may read: not id 150.
    runs = _wait("the first run", lambda: [r for r in _runs(srv, admin) if r["outcome"] == "succeeded"])
    assert runs[0]["trigger"] == "first" and runs[0]["delta_version"] == 0
    assert runs[0]["rows_written"] == 2
    assert runs[0]["inputs"] == ["lab.source.readings"] and runs[0]["hidden_inputs"] == 0
    assert _wait("the first version serving", lambda: _ratios(srv, admin)) == [(1, 5), (2, 3)]

    # An input changes: a run on its own, one more version.
    write_readings(data / "readings", "part-2.parquet", [(3, 9, 3, "s3")])
    _wait("a run after the input changed",
          lambda: [r for r in _runs(srv, admin) if r["trigger"] == "input_changed" and r["outcome"] == "succeeded"])
    assert _wait("version 1 serving", lambda: _ratios(srv, admin) == [(1, 5), (2, 3), (3, 3)] or None)

    # A run that fails (a division by zero in the transform) leaves version 1 serving.
    write_readings(data / "readings", "part-3.parquet", [(4, 1, 0, "s4")])
    failed = _wait("a failed run", lambda: [r for r in _runs(srv, admin) if r["outcome"] == "failed"])
    assert failed[0]["failure"] == "failed to compute or write"
    assert failed[0]["delta_version"] is None and failed[0]["rows_written"] is None
    assert _ratios(srv, admin) == [(1, 5), (2, 3), (3, 3)]
    status = _query(srv, admin, "SELECT status FROM mesh.meta.products WHERE product = 'ratios'")
    assert status == [{"status": "ok"}]

    # The bad reading goes: the next run succeeds with version 2.
    (data / "readings" / "part-3.parquet").unlink()
    _wait("a run after the failure", lambda: [r for r in _runs(srv, admin)
                                              if r["outcome"] == "succeeded" and r["delta_version"] == 2])
    assert _ratios(srv, admin) == [(1, 5), (2, 3), (3, 3)]
    history = srv.output()
    assert "Divide by zero" in history or "divide by zero" in history.lower()


def test_a_virtual_table_reads_its_inputs_with_the_domains_rights(derived_mesh, mint):
    srv, _ = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    source = {r["id"] for r in _query(srv, admin, "SELECT id FROM lab.source.readings")}
    derived = {r["id"] for r in _query(srv, admin, "SELECT id FROM stats.ratios.ids")}
    assert 150 in source
    # The admin reads the derived table as the stats domain computed it: without the
    # row its domain may not read.
    assert 150 not in derived and {1, 2} <= derived
    # A reader's filters reach the inputs; the answer is the same.
    assert _query(srv, admin, "SELECT num FROM stats.ratios.ids WHERE id = 2") == [{"num": 9}]


def test_a_column_hidden_from_the_domain_cannot_be_published(derived_mesh, mint):
    srv, _ = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    viewer = mint("--sub", "vi", "--role", "viewer")
    for token in (admin, viewer):
        conn = adbc_connect(srv.uri, token)
        try:
            with pytest.raises(Exception) as failure:
                adbc_query(conn, "SELECT * FROM stats.leaky.secrets")
        finally:
            conn.close()
        message = str(failure.value)
        assert "cannot be computed" in message, message
        assert "s150" not in message and "lab.source" not in message, message
    status = _query(srv, viewer, "SELECT status, status_reason FROM mesh.meta.products WHERE product = 'leaky'")
    assert status[0]["status"] == "broken"
    assert "lab.source" not in status[0]["status_reason"]
    # The operator learns why, in the server log.
    assert "secret" in srv.output()


def test_a_readers_filter_on_a_computed_column_never_sees_rows_the_transform_leaves_out(derived_mesh, mint):
    """`code = 10` cannot fail, but `code` is computed (a cast): planned into the
    transform, below its `WHERE label <> 'x'`, it would fail on the row that WHERE leaves
    out and name its label. It stays above the derived table."""
    srv, _ = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    assert _query(srv, admin, "SELECT id FROM stats.ratios.codes WHERE code = 10") == [{"id": 1}]
    # A filter on a column passed through unchanged still reaches the inputs.
    assert _query(srv, admin, "SELECT code FROM stats.ratios.codes WHERE id = 1") == [{"code": 10}]


def test_an_error_inside_a_transform_is_not_shown_to_readers(derived_mesh, mint):
    srv, _ = derived_mesh
    viewer = mint("--sub", "vi", "--role", "viewer")
    conn = adbc_connect(srv.uri, viewer)
    try:
        with pytest.raises(Exception) as failure:
            adbc_query(conn, "SELECT * FROM stats.ratios.raw_codes")
    finally:
        conn.close()
    message = str(failure.value)
    assert "derived table stats.ratios.raw_codes cannot be computed" in message, message
    assert "FailedPrecondition" in message, message  # the gRPC status, as ADBC reports it
    assert "'x'" not in message and "lab.source" not in message, message
    # The operator sees the cast that failed.
    assert "a derived table cannot be computed" in srv.output()
    # A filter on a column passed through reaches the input's scan: the cast then sees
    # only the row kept, and does not fail.
    assert _query(srv, viewer, "SELECT code FROM stats.ratios.raw_codes WHERE id = 1") == [{"code": 10}]


def test_runs_show_only_the_inputs_the_reader_may_see(derived_mesh, mint):
    srv, _ = derived_mesh
    viewer = mint("--sub", "vi", "--role", "viewer")
    runs = _wait("a run", lambda: _runs(srv, viewer))
    assert all(r["inputs"] == [] and r["hidden_inputs"] == 1 for r in runs)
    # Nor when the hidden input's data is from.
    dated = _query(srv, viewer, "SELECT data_as_of FROM mesh.meta.runs")
    assert dated and all(r["data_as_of"] is None for r in dated)
    admin = mint("--sub", "ops", "--role", "admin")
    assert all(r["data_as_of"] is not None
               for r in _query(srv, admin, "SELECT data_as_of FROM mesh.meta.runs WHERE outcome = 'succeeded'"))
    outsider = mint("--sub", "bo", "--role", "billing")
    assert _query(srv, outsider, "SELECT * FROM mesh.meta.runs") == []


# The demo's lineage, as its transforms compute each column (window and aggregate
# arguments included; count(*) reads no column).
_VISITS = ("clinical", "encounters", "visits")
_PATIENTS = ("patients", "registry", "patients")
DEMO_LINEAGE = {
    ("stays", None, _VISITS, None), ("stays", None, _PATIENTS, None),
    ("stays", "encounter_id", _VISITS, "encounter_id"),
    ("stays", "patient_id", _VISITS, "patient_id"),
    ("stays", "region", _VISITS, "region"),
    ("stays", "sex", _PATIENTS, "sex"),
    ("stays", "admitted_at", _VISITS, "admitted_at"),
    ("stays", "discharged_at", _VISITS, "discharged_at"),
    ("stays", "diagnosis_code", _VISITS, "diagnosis_code"),
    *{("stays", "readmitted_30d", _VISITS, c) for c in ("admitted_at", "discharged_at", "patient_id")},
    ("monthly", None, _VISITS, None),
    ("monthly", "region", _VISITS, "region"),
    ("monthly", "admit_month", _VISITS, "admit_month"),
    *{("monthly", out, _VISITS, c) for out in ("readmissions", "rate")
      for c in ("admitted_at", "discharged_at", "patient_id")},
}


@pytest.mark.parametrize("name", sorted(PERSONAS))
def test_lineage_is_read_from_the_plans_and_shown_between_visible_tables(server, mint, name):
    persona = PERSONAS[name]
    rows = _query(server, mint(*persona.mint_args()),
                  "SELECT domain, product, table_name, column_name, input_domain, input_product, "
                  "input_table, input_column FROM mesh.meta.lineage")
    seen = {(r["table_name"], r["column_name"], (r["input_domain"], r["input_product"], r["input_table"]),
             r["input_column"]) for r in rows}
    assert {(r["domain"], r["product"]) for r in rows} <= {("analytics", "readmissions")}
    want = {e for e in DEMO_LINEAGE
            if can_read(persona, f"analytics.readmissions.{e[0]}") and can_read(persona, ".".join(e[2]))}
    assert seen == want


def test_lineage_to_a_table_the_reader_may_not_see_is_not_shown(derived_mesh, mint):
    srv, _ = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    viewer = mint("--sub", "vi", "--role", "viewer")
    edges = {(r["table_name"], r["column_name"], r["input_column"])
             for r in _query(srv, admin, "SELECT * FROM mesh.meta.lineage WHERE product = 'ratios'")}
    assert edges == {("ratios", None, None), ("ratios", "id", "id"), ("ratios", "ratio", "num"),
                     ("ratios", "ratio", "den"), ("ids", None, None), ("ids", "id", "id"), ("ids", "num", "num"),
                     ("codes", None, None), ("codes", "id", "id"), ("codes", "code", "label"),
                     ("raw_codes", None, None), ("raw_codes", "id", "id"), ("raw_codes", "code", "label")}
    # The viewer reads stats.ratios but not lab.source: no lineage between them.
    assert _query(srv, viewer, "SELECT * FROM mesh.meta.lineage") == []


def test_the_quality_agent_counts_orphans_and_duplicate_composite_keys(derived_mesh, mint):
    """Referential integrity per relationship, and the uniqueness of a composite key,
    as mesh.meta.quality_checks shows them to whoever sees both ends."""
    srv, _ = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    sql = ("SELECT check_name, column_name, expectation, passed, failing_rows, failing_fraction "
           "FROM mesh.meta.quality_checks WHERE table_name = 'tags' ORDER BY check_name")
    checks = {r["check_name"]: r for r in _wait("the tags measured", lambda: _query(srv, admin, sql))}
    reference = checks["references"]
    assert reference["expectation"] == "(reading_id) found in lab.source.readings(id)"
    assert reference["passed"] is False and reference["failing_rows"] == 1
    assert reference["failing_fraction"] == pytest.approx(0.25)
    unique = checks["unique"]
    assert unique["expectation"] == "no duplicate keys (reading_id, tag)" and unique["passed"] is True
    # The viewer reads the tags but not the readings: the orphan count describes a table
    # it may not see, so it does not see it.
    viewer = mint("--sub", "vi", "--role", "viewer")
    names = {r["check_name"] for r in _query(srv, viewer, sql)}
    assert "references" not in names and "unique" in names
