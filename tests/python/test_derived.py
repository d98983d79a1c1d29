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
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

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
  - name: scaled
    derived:
      mode: virtual
      inputs: [lab.source.readings]
      transform_file: sql/scaled.sql
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


def write_scaled(mesh: Path, factor: int):
    """The transform file of stats.ratios.scaled: num times `factor`."""
    folder = mesh / "stats" / "sql"
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / ".scaled.sql.tmp"
    staged.write_text(f"-- scaled readings\nSELECT id, num * {factor} AS num FROM lab.source.readings\n")
    staged.rename(folder / "scaled.sql")


class LineageEndpoint:
    """An OpenLineage HTTP endpoint (as Marquez serves `POST /api/v1/lineage`) that
    keeps every event it is sent, and the file the gateway also writes them to."""

    def __init__(self, file: Path):
        self.file = file
        self.events: list[dict] = []
        self.authorizations: list[str | None] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/api/v1/lineage":
                    endpoint.events.append(json.loads(body))
                    endpoint.authorizations.append(self.headers.get("Authorization"))
                    self.send_response(201)
                else:
                    self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/lineage"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def config(self) -> str:
        return (f"openlineage:\n  namespace: mesh-test\n  url: {self.url}\n"
                f"  api_key_env: MESHGATE_TEST_LINEAGE_KEY\n  file: {json.dumps(str(self.file))}\n")

    def file_events(self) -> list[dict]:
        if not self.file.exists():
            return []
        return [json.loads(line) for line in self.file.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def lineage_endpoint(tmp_path_factory):
    endpoint = LineageEndpoint(tmp_path_factory.mktemp("lineage") / "openlineage.jsonl")
    yield endpoint
    endpoint.server.shutdown()


@pytest.fixture(scope="module")
def derived_mesh(demo, tmp_path_factory, meshgate_bin, lineage_endpoint):
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
    write_scaled(mesh, 1)
    config = root / "meshgate.yaml"
    config.write_text(
        serve_config(demo.mesh_dir / DEMO_SECRET_FILE)
        .replace("    principals: { analytics:", "    principals: { stats:")
        .replace('"domain:analytics"', '"domain:stats"')
        .replace("materialize: false", "materialize: true")
        + f"state_dir: {json.dumps(str(root / 'state'))}\n"
        + lineage_endpoint.config()
    )
    srv = start_server(
        [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext", "--config", config],
        "derived", env={"MESHGATE_TEST_LINEAGE_KEY": "lineage-key-1"},
    )
    try:
        yield srv, data, mesh
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
    srv, data, _ = derived_mesh
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


def _spec_validators():
    """A validator of RunEvents (spec 2-0-2), and one per facet schema, by file name."""
    spec = Path(os.environ["MESHGATE_SPEC_SCHEMAS"]) / "openlineage"
    core = json.loads((spec / "OpenLineage.json").read_text())
    registry = Registry().with_resource(core["$id"], Resource.from_contents(core))
    facets = {}
    for path in (spec / "facets").glob("*.json"):
        schema = json.loads(path.read_text())
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
        facets[path.stem] = schema
    event = Draft202012Validator({"$ref": core["$id"] + "#/$defs/RunEvent"}, registry=registry,
                                 format_checker=Draft202012Validator.FORMAT_CHECKER)
    by_name = {name: (schema["$id"], Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{name}"},
                                                          registry=registry,
                                                          format_checker=Draft202012Validator.FORMAT_CHECKER))
               for name, schema in facets.items()}
    return event, by_name


def _facets(event):
    """Every facet of `event`, wherever it sits."""
    yield from event["run"].get("facets", {}).values()
    yield from event["job"].get("facets", {}).values()
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        yield from dataset.get("facets", {}).values()
        yield from dataset.get("inputFacets", {}).values()
        yield from dataset.get("outputFacets", {}).values()


def test_each_run_sends_openlineage_events_that_follow_the_spec(derived_mesh, lineage_endpoint, mint):
    """Runs of stats.ratios.ratios (the first, the one after the input changed, the
    failed one, the recovery): each a START then a COMPLETE or FAIL with the same run id,
    to the HTTP endpoint (with the key) and the file alike, valid against the spec's JSON
    Schemas, their facets against theirs at the very versions they name."""
    srv, _, _ = derived_mesh
    events = _wait("the runs' events", lambda: len([
        e for e in lineage_endpoint.file_events() if e["eventType"] != "START"]) >= 4
        and lineage_endpoint.file_events())
    validate_event, facet_validators = _spec_validators()
    for event in events:
        validate_event.validate(event)
        for facet in _facets(event):
            name = facet["_schemaURL"].rsplit("/", 1)[-1]
            schema_id, validator = facet_validators[name]
            assert facet["_schemaURL"] == f"{schema_id}#/$defs/{name}", facet["_schemaURL"]
            validator.validate(facet)
    runs = {}
    for event in events:
        runs.setdefault(event["run"]["runId"], []).append(event["eventType"])
    assert all(kinds[0] == "START" and kinds[1:] in (["COMPLETE"], ["FAIL"], []) for kinds in runs.values()), runs
    assert sum(kinds == ["START", "FAIL"] for kinds in runs.values()) >= 1

    first = next(e for e in events if e["eventType"] == "COMPLETE")
    assert first["job"] == {**first["job"], "namespace": "mesh-test", "name": "stats.ratios.ratios"}
    assert first["job"]["facets"]["sql"]["query"] == "SELECT id, num / den AS ratio FROM lab.source.readings"
    assert [(i["namespace"], i["name"]) for i in first["inputs"]] == [("mesh-test", "lab.source.readings")]
    output = first["outputs"][0]
    assert output["name"] == "stats.ratios.ratios"
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 2
    assert [f["name"] for f in output["facets"]["schema"]["fields"]] == ["id", "ratio"]
    lineage = {column: sorted(f["field"] for f in spec["inputFields"])
               for column, spec in output["facets"]["columnLineage"]["fields"].items()}
    assert lineage == {"id": ["id"], "ratio": ["den", "num"]}
    failed = next(e for e in events if e["eventType"] == "FAIL")
    assert "failed to compute or write" in failed["run"]["facets"]["errorMessage"]["message"]

    # The endpoint was sent the same events, with the configured key.
    sent = {(e["run"]["runId"], e["eventType"]) for e in lineage_endpoint.events}
    assert {(e["run"]["runId"], e["eventType"]) for e in events} <= sent
    assert lineage_endpoint.authorizations
    assert all(a == "Bearer lineage-key-1" for a in lineage_endpoint.authorizations)
    assert "lineage-key-1" not in srv.output()


def test_a_virtual_table_reads_its_inputs_with_the_domains_rights(derived_mesh, mint):
    srv, _, _ = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    source = {r["id"] for r in _query(srv, admin, "SELECT id FROM lab.source.readings")}
    derived = {r["id"] for r in _query(srv, admin, "SELECT id FROM stats.ratios.ids")}
    assert 150 in source
    # The admin reads the derived table as the stats domain computed it: without the
    # row its domain may not read.
    assert 150 not in derived and {1, 2} <= derived
    # A reader's filters reach the inputs; the answer is the same.
    assert _query(srv, admin, "SELECT num FROM stats.ratios.ids WHERE id = 2") == [{"num": 9}]


def test_a_transform_file_is_read_beside_the_descriptor_and_followed_when_it_changes(derived_mesh, mint):
    srv, _, mesh = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    sql = "SELECT num FROM stats.ratios.scaled WHERE id = 2"
    assert _query(srv, admin, sql) == [{"num": 9}]
    write_scaled(mesh, 3)
    assert _wait("the new transform serving", lambda: _query(srv, admin, sql) == [{"num": 27}] or None)
    write_scaled(mesh, 1)
    assert _wait("the old transform back", lambda: _query(srv, admin, sql) == [{"num": 9}] or None)


def test_a_column_hidden_from_the_domain_cannot_be_published(derived_mesh, mint):
    srv, _, _ = derived_mesh
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
    srv, _, _ = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    assert _query(srv, admin, "SELECT id FROM stats.ratios.codes WHERE code = 10") == [{"id": 1}]
    # A filter on a column passed through unchanged still reaches the inputs.
    assert _query(srv, admin, "SELECT code FROM stats.ratios.codes WHERE id = 1") == [{"code": 10}]


def test_an_error_inside_a_transform_is_not_shown_to_readers(derived_mesh, mint):
    srv, _, _ = derived_mesh
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
    srv, _, _ = derived_mesh
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
    srv, _, _ = derived_mesh
    admin = mint("--sub", "ops", "--role", "admin")
    viewer = mint("--sub", "vi", "--role", "viewer")
    edges = {(r["table_name"], r["column_name"], r["input_column"])
             for r in _query(srv, admin, "SELECT * FROM mesh.meta.lineage WHERE product = 'ratios'")}
    assert edges == {("ratios", None, None), ("ratios", "id", "id"), ("ratios", "ratio", "num"),
                     ("ratios", "ratio", "den"), ("ids", None, None), ("ids", "id", "id"), ("ids", "num", "num"),
                     ("codes", None, None), ("codes", "id", "id"), ("codes", "code", "label"),
                     ("raw_codes", None, None), ("raw_codes", "id", "id"), ("raw_codes", "code", "label"),
                     ("scaled", None, None), ("scaled", "id", "id"), ("scaled", "num", "num")}
    # The viewer reads stats.ratios but not lab.source: no lineage between them.
    assert _query(srv, viewer, "SELECT * FROM mesh.meta.lineage") == []


def test_the_quality_agent_counts_orphans_and_duplicate_composite_keys(derived_mesh, mint):
    """Referential integrity per relationship, and the uniqueness of a composite key,
    as mesh.meta.quality_checks shows them to whoever sees both ends."""
    srv, _, _ = derived_mesh
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


def test_a_materialized_table_before_its_first_run_says_so_and_its_product_serves(demo, tmp_path, meshgate_bin, mint):
    """A gateway that does not materialize (another replica does) over a table no run
    has written yet: its scans fail with UNAVAILABLE and say why; the product is not
    broken, its other tables serve."""
    data = tmp_path / "data"
    mesh = tmp_path / "mesh"
    write_readings(data / "readings", "part-1.parquet", [(1, 10, 2, "s1")])
    for domain, product, text in [("lab", "source", SOURCE), ("stats", "ratios", RATIOS)]:
        (mesh / domain).mkdir(parents=True, exist_ok=True)
        (mesh / domain / f"{product}.yaml").write_text(text.replace("{data}", str(data)))
    write_scaled(mesh, 1)
    config = tmp_path / "meshgate.yaml"
    config.write_text(serve_config(demo.mesh_dir / DEMO_SECRET_FILE)
                      .replace("    principals: { analytics:", "    principals: { stats:")
                      .replace('"domain:analytics"', '"domain:stats"'))
    srv = start_server([meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
                        "--config", config], "unmaterialized")
    try:
        admin = mint("--sub", "ops", "--role", "admin")
        conn = adbc_connect(srv.uri, admin)
        try:
            with pytest.raises(Exception) as failure:
                adbc_query(conn, "SELECT * FROM stats.ratios.ratios")
        finally:
            conn.close()
        message = str(failure.value)
        assert "has not been materialized yet" in message and "Unavailable" in message, message
        assert str(data) not in message, message
        assert _query(srv, admin, "SELECT id FROM stats.ratios.ids") == [{"id": 1}]
        status = _query(srv, admin, "SELECT status FROM mesh.meta.products WHERE product = 'ratios'")
        assert status == [{"status": "ok"}]
        assert _query(srv, admin, "SELECT * FROM mesh.meta.runs") == []
        assert "table storage cannot be read" not in srv.output()
    finally:
        srv.stop()
