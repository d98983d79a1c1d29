"""Queries bigger than their memory: the answers equal DuckDB's over the same files.

A gateway of its own (`meshgate serve`) over a demo mesh of its own at scale 0.5 (three
million rows), whose queries may hold 16 MiB each (the join of visits and claims needs
several times that for its hash table). The cross-domain join runs again as a sort-merge join once its hash join's build
side is refused memory; sorts, windows and DISTINCT spill. Each answer is compared with
DuckDB's over the same files; the audit and the metrics say which executions spilled, and
no spill file is left once the queries end.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import serve_config, start_server
from mesh_helpers import DEMO_SECRET_FILE, assert_rows_equal, data_dir, free_port, query_once

QUERY_MEMORY = 16 * 1024 * 1024
SCALE = "0.5"

READ = ["clinical.encounters.visits", "billing.claims.claims"]

# Each spills at 16 MiB, and is ordered to compare as is.
BIGGER_THAN_MEMORY = {
    "cross-domain join": """
        SELECT v.region, count(*) AS visits, sum(c.amount) AS billed
        FROM clinical.encounters.visits v
        JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id
        GROUP BY v.region ORDER BY v.region""",
    "window": """
        SELECT count(*) AS first_visits, sum(encounter_id) AS ids FROM (
          SELECT encounter_id, row_number() OVER
            (PARTITION BY patient_id ORDER BY encounter_id) AS n
          FROM clinical.encounters.visits) WHERE n = 1""",
    "distinct": """
        SELECT count(*) AS pairs FROM
          (SELECT DISTINCT encounter_id, patient_id FROM clinical.encounters.visits)""",
    "sort": """
        SELECT claim_id, payer, amount FROM (
          SELECT claim_id, payer, amount,
                 row_number() OVER (ORDER BY payer, amount DESC, claim_id) AS n
          FROM billing.claims.claims) WHERE n BETWEEN 100001 AND 100005 ORDER BY n""",
}


@pytest.fixture(scope="module")
def larger_mesh(meshgate_bin, tmp_path_factory) -> Path:
    """A demo mesh at scale 0.5, its base products (the demo writes it, and is stopped
    once it serves)."""
    mesh = tmp_path_factory.mktemp("spill-demo") / "mesh"
    argv = [meshgate_bin, "demo", "--dir", mesh, "--scale", SCALE, "--listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0",
            "--portal-listen", "127.0.0.1:0"]
    start_server(argv, "spill-demo").stop()
    # Its base products only: the derived one is materialized by a gateway over time.
    shutil.rmtree(mesh / "analytics")
    return mesh


@pytest.fixture(scope="module")
def duckdb_over_files(larger_mesh):
    """DuckDB over the Parquet files of the tables the queries read, by their names."""
    import duckdb

    con = duckdb.connect(":memory:")
    for fqtn in READ:
        domain, product, table = fqtn.split(".")
        files = data_dir(larger_mesh, fqtn) / "**" / "*.parquet"
        con.execute(f'ATTACH IF NOT EXISTS \':memory:\' AS "{domain}"')
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{domain}"."{product}"')
        con.execute(f'CREATE VIEW "{domain}"."{product}"."{table}" AS '
                    f"SELECT * FROM read_parquet('{files}', hive_partitioning = true)")
    return con


@pytest.fixture(scope="module")
def small(demo, larger_mesh, meshgate_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("spill")
    audit = root / "audit.jsonl"
    spill = root / "spill"
    config = root / "meshgate.yaml"
    engine = (
        "engine:\n"
        f"  query_memory_limit: {QUERY_MEMORY}\n"
        "  batch_size: 1024\n"
        # Operators' memory depends on the partitions: pinned, so the outcome does not
        # depend on the machine's cores.
        "  target_partitions: 2\n"
        f"  spill_dir: {json.dumps(str(spill))}\n"
    )
    config.write_text(
        serve_config(Path(demo.mesh_dir) / DEMO_SECRET_FILE).replace("engine:\n", engine, 1)
        + f"audit: {{ file: {json.dumps(str(audit))}, statements: full }}\n"
        + "quality: { enabled: false }\n"
    )
    metrics = f"127.0.0.1:{free_port()}"
    argv = [meshgate_bin, "serve", "--mesh", larger_mesh, "--listen", "127.0.0.1:0",
            "--plaintext", "--config", config, "--metrics-listen", metrics]
    server = start_server(argv, "spill")
    try:
        yield server, audit, spill, f"http://{metrics}"
    finally:
        server.stop()


def _spill_files(root: Path) -> list[Path]:
    return [p for p in root.glob("gateway-*/*") if p.name != "lock"]


@pytest.mark.parametrize("name", sorted(BIGGER_THAN_MEMORY))
def test_a_query_bigger_than_its_memory_answers_as_duckdb_does(
    small, admin_token, duckdb_over_files, name
):
    server, audit, spill, _ = small
    sql = BIGGER_THAN_MEMORY[name]
    got = query_once(server.uri, admin_token, sql)
    assert_rows_equal(got, duckdb_over_files.execute(sql).to_arrow_table(), ordered=True)
    # The audit says it spilled.
    deadline = time.monotonic() + 20
    while True:
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        done = [r for r in records
                if r.get("rpc") == "DoGet/TicketStatementQuery" and r.get("statement") == sql]
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done and done[-1]["outcome"] == "ok", done
    assert done[-1]["spilled"]["files"] > 0 and done[-1]["spilled"]["bytes"] > 0, done[-1]
    # Nothing of it is left on disk.
    deadline = time.monotonic() + 10
    while _spill_files(spill) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _spill_files(spill) == []


def test_metrics_count_what_spilled(small, admin_token):
    server, _, _, metrics_url = small
    query_once(server.uri, admin_token, BIGGER_THAN_MEMORY["sort"])
    text = urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10).read().decode()
    values = {line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line and not line.startswith("#")}
    spilled = [v for k, v in values.items() if k.startswith("meshgate_spilled_bytes_total")]
    assert spilled and sum(spilled) > 0, text
    assert values.get("meshgate_spill_files_in_use") is not None, text
    # The allocator's own totals sit beside the pool's: what the process really holds.
    allocated = values["meshgate_allocator_allocated_bytes"]
    resident = values["meshgate_allocator_resident_bytes"]
    assert 1 << 20 < allocated <= resident, text
