"""What a virtual derived table costs: one readmission summary read through
`analytics.readmissions.stays` (by an admin) against its transform written inline (by an
analyst, the rights the derived table reads its inputs with), on the demo mesh, through
ADBC, interleaved query by query, answers checked equal first.

    python benches/python/derived.py [--scale 0.2] [--pairs 60]

Needs MESHGATE_BIN (a built `meshgate`) and the suite's virtual environment (pyarrow, ADBC).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql

TRANSFORM = """
SELECT v.encounter_id, v.patient_id, v.region, p.sex, v.admitted_at, v.discharged_at, v.diagnosis_code,
       coalesce(v.next_admitted_at <= v.discharged_at + INTERVAL '30 days', false) AS readmitted_30d
FROM (SELECT encounter_id, patient_id, region, admitted_at, discharged_at, diagnosis_code,
             lead(admitted_at) OVER (PARTITION BY patient_id ORDER BY admitted_at) AS next_admitted_at
      FROM clinical.encounters.visits WHERE kind = 'inpatient') v
JOIN patients.registry.patients p ON p.patient_id = v.patient_id"""


def summary(source: str) -> str:
    return (f"SELECT region, count(*) AS n, sum(CASE WHEN readmitted_30d THEN 1 ELSE 0 END) AS r "
            f"FROM {source} WHERE region IN ('north', 'south') GROUP BY region ORDER BY region")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--scale", default="0.2")
    args.add_argument("--pairs", type=int, default=60)
    opts = args.parse_args()
    binary = os.environ["MESHGATE_BIN"]
    with tempfile.TemporaryDirectory() as work:
        mesh = Path(work) / "mesh"
        # Every pair executes both statements: an answer kept from an earlier pair would
        # time the result cache (benches/result_cache.sh measures it).
        config = Path(work) / "gateway.yaml"
        config.write_text("engine: { result_cache: { enabled: false } }\n")
        server = subprocess.Popen(
            [binary, "demo", "--dir", str(mesh), "--scale", opts.scale, "--config", str(config),
             "--listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            uri = None
            for line in server.stdout:
                if line.startswith("meshgate: serving Flight SQL on "):
                    uri = line.split(" on ", 1)[1].strip()
                    break
            assert uri, "the demo did not start"

            def connect(role: str):
                token = subprocess.check_output(
                    [binary, "token", "--demo-dir", str(mesh), "--sub", "bench", "--role", role]).decode().strip()
                return flightsql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": "Bearer " + token})

            connections = [connect("admin"), connect("analyst")]
            derived, inline = (c.cursor() for c in connections)
            # The product serves once its materialized table has its first version.
            deadline = time.monotonic() + 120
            while True:
                derived.execute("SELECT status FROM mesh.meta.products WHERE domain = 'analytics'")
                if derived.fetchall() == [("ok",)]:
                    break
                assert time.monotonic() < deadline, "analytics.readmissions does not serve"
                time.sleep(0.2)
            queries = {"derived": (derived, summary("analytics.readmissions.stays")),
                       "inline": (inline, summary(f"({TRANSFORM}) s"))}

            def run(name: str):
                cursor, sql = queries[name]
                started = time.perf_counter()
                cursor.execute(sql)
                rows = cursor.fetchall()
                return time.perf_counter() - started, rows

            # Answers first, and a warm-up of both.
            assert run("derived")[1] == run("inline")[1], "the derived table and its transform disagree"
            ratios, times = [], {"derived": [], "inline": []}
            for _ in range(opts.pairs):
                a, _ = run("derived")
                b, _ = run("inline")
                times["derived"].append(a)
                times["inline"].append(b)
                ratios.append(a / b)
            print(f"scale {opts.scale}, {opts.pairs} interleaved pairs")
            for name, ts in times.items():
                print(f"{name:8} median {statistics.median(ts) * 1000:.1f} ms")
            q = statistics.quantiles(ratios, n=4)
            print(f"derived / inline: median {statistics.median(ratios):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
            for cursor in (derived, inline):
                cursor.close()
            for connection in connections:
                connection.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
