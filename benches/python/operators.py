"""Every operator against its memory limit: the check of issue 26's last part.

Over the demo mesh at each scale given (16: 96 million rows; 64: 384 million), one
gateway under its default configuration (1 GiB per query) runs once each query below,
chosen so that the operator named needs more than the limit: sort, aggregate, window,
DISTINCT, UNION, nested-loop joins, and statements whose parameters are bound through
DoPut (ADBC's prepared statements), beside the spill benchmark's own queries. Each
either answers, and the answer must equal DuckDB's (`memory_limit='1GB'`, same files),
or is refused with an error that names a limit; anything else fails the check. After
every query the gateway must still answer `SELECT 1`, and once all have run no spill
file may be left.

Called by `spill.py --operators 16,64`; the report is a table per scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_manager
import duckdb

from result_cache import agree

VISITS = "clinical.encounters.visits"
CLAIMS = "billing.claims.claims"


@dataclass(frozen=True)
class Check:
    """One query and the operator it is there for. `parameters` are bound through DoPut
    (`$1`, `$2` in the text); `limit_expected`: no engine can answer it in reasonable time, so
    only a refusal naming a limit (or the query deadline) passes."""

    operator: str
    sql: str
    parameters: tuple | None = None
    limit_expected: bool = False


CHECKS = {
    "sort_wide_rows": Check("sort", f"""
        SELECT count(*) AS n, sum(encounter_id) AS ids FROM (
          SELECT encounter_id, row_number() OVER (
            ORDER BY diagnosis_code NULLS FIRST, admitted_at DESC, encounter_id) AS r
          FROM {VISITS}) WHERE r % 1000000 = 0"""),
    "sort_large_offset": Check("sort", f"""
        SELECT encounter_id, diagnosis_code FROM {VISITS}
        ORDER BY diagnosis_code NULLS FIRST, encounter_id LIMIT 5 OFFSET 20000000"""),
    "aggregate_many_groups": Check("aggregate", f"""
        SELECT count(*) AS groups, sum(n) AS rows, sum(total) AS billed FROM (
          SELECT encounter_id, count(*) AS n, sum(amount) AS total
          FROM {CLAIMS} GROUP BY encounter_id)"""),
    "aggregate_string_keys": Check("aggregate", f"""
        SELECT count(*) AS groups, max(first_seen) AS latest FROM (
          SELECT patient_id, diagnosis_code, min(admitted_at) AS first_seen
          FROM {VISITS} GROUP BY patient_id, diagnosis_code)"""),
    "window_lead_strings": Check("window", f"""
        SELECT count(*) AS repeats FROM (
          SELECT diagnosis_code, lead(diagnosis_code) OVER (
            PARTITION BY patient_id ORDER BY admitted_at, encounter_id) AS next_code
          FROM {VISITS}) WHERE next_code = diagnosis_code"""),
    "distinct_strings": Check("DISTINCT", f"""
        SELECT count(*) AS combinations FROM (
          SELECT DISTINCT patient_id, diagnosis_code, kind FROM {VISITS})"""),
    "union_distinct": Check("UNION", f"""
        SELECT count(*) AS pairs FROM (
          SELECT encounter_id, patient_id FROM {VISITS}
          UNION SELECT encounter_id, patient_id FROM {CLAIMS})"""),
    "union_all_sorted": Check("UNION", f"""
        SELECT count(*) AS repeated FROM (
          SELECT encounter_id, lag(encounter_id) OVER (ORDER BY patient_id, encounter_id) AS prev
          FROM (SELECT encounter_id, patient_id FROM {VISITS}
                UNION ALL SELECT encounter_id, patient_id FROM {CLAIMS}))
        WHERE prev = encounter_id"""),
    "nested_loop_small_build": Check("nested-loop join", f"""
        SELECT r.region, count(*) AS claims FROM {CLAIMS} c
        JOIN (SELECT DISTINCT region FROM {VISITS}) r ON c.payer < r.region
        GROUP BY r.region"""),
    "nested_loop_large_build": Check("nested-loop join", f"""
        SELECT count(*) AS pairs, max(v.kind) AS kind, max(v.region) AS region,
               max(v.admitted_at) AS admitted, max(v.discharged_at) AS discharged,
               max(c.payer) AS payer, max(c.amount) AS amount, max(c.submitted_on) AS submitted
        FROM {VISITS} v JOIN {CLAIMS} c
          ON v.encounter_id = c.encounter_id OR v.diagnosis_code = c.status""",
        limit_expected=True),
    "parameters_join": Check("join, parameters bound through DoPut", f"""
        SELECT v.region, count(*) AS visits, sum(c.amount) AS billed
        FROM {VISITS} v JOIN {CLAIMS} c ON c.encounter_id = v.encounter_id
        WHERE v.facility_id >= $1 AND v.kind <> $2
        GROUP BY v.region""", parameters=(0, "nothing")),
    "parameters_distinct": Check("DISTINCT, parameters bound through DoPut", f"""
        SELECT count(*) AS pairs FROM (
          SELECT DISTINCT encounter_id, patient_id FROM {VISITS} WHERE facility_id >= $1)""",
        parameters=(0,)),
}

# A refusal for want of a resource: gRPC RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED, which
# ADBC's Flight SQL driver names at the end of its message (its status is INTERNAL).
LIMIT_CODES = ("(ResourceExhausted;", "(DeadlineExceeded;")


@dataclass
class Outcome:
    name: str
    check: Check
    result: str
    seconds: float
    duckdb_seconds: float | None
    pool_mib: float
    allocated_mib: float
    peak_mib: float
    spilled_mib: float
    passed: bool


def run(gateway, con, queries: dict[str, Check], memory_peaks) -> list[Outcome]:
    """Runs each check once on `gateway` (spill.Gateway) and, where an answer is
    expected, on DuckDB's connection `con`; `memory_peaks(gateway)` (spill.MemoryPeaks)
    watches the gateway's memory during each."""
    outcomes = []
    for name, check in queries.items():
        gateway.peak_reset()
        started = time.perf_counter()
        with memory_peaks(gateway) as memory:
            try:
                got = gateway.query(check.sql, check.parameters)
                error = None
            except adbc_driver_manager.Error as e:
                got, error = None, str(e).splitlines()[0]
        seconds = time.perf_counter() - started
        peak, spilled = gateway.peak_mib(), gateway.spilled_mib(check.sql)
        duck_seconds = None
        if error is None:
            if check.limit_expected:
                result, passed = "answered", True
            else:
                started = time.perf_counter()
                try:
                    want = con.execute(check.sql, check.parameters or ()).to_arrow_table()
                    duck_seconds = time.perf_counter() - started
                    passed = agree(got, want)
                    result = "answered, equal to DuckDB" if passed else "answered, DIFFERS from DuckDB"
                except duckdb.Error as e:
                    # Nothing to compare with: the gateway's answer stands.
                    passed = True
                    result = f"answered, unverified: DuckDB failed: {str(e).splitlines()[0]}"
        else:
            passed = any(code in error for code in LIMIT_CODES)
            result = f"refused: {error}"
        # The server keeps serving.
        alive = gateway.query("SELECT 1 AS alive").column(0).to_pylist() == [1]
        if not alive:
            result, passed = result + "; the gateway then stopped answering", False
        outcomes.append(Outcome(name, check, result, seconds, duck_seconds, memory.peaks["pool"],
                                memory.peaks["allocated"], peak, spilled, passed))
        print(f"{name}: {result} in {seconds:.1f} s, peak {peak:.0f} MiB", flush=True)
    return outcomes


def table(title: str, outcomes: list[Outcome], spill_left: list[Path]) -> str:
    lines = [f"### {title}", "",
             "| query | operator | outcome | meshgate (s) | DuckDB (s) | peak pool (MiB) "
             "| peak allocated (MiB) | peak RSS (MiB) | spilled (MiB) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for o in outcomes:
        duck = f"{o.duckdb_seconds:.1f}" if o.duckdb_seconds is not None else "-"
        result = (o.result if len(o.result) <= 300 else o.result[:300] + " ...").replace("|", "\\|")
        lines.append(f"| {o.name} | {o.check.operator} | {result} | {o.seconds:.1f} | {duck} | "
                     f"{o.pool_mib:.0f} | {o.allocated_mib:.0f} | {o.peak_mib:.0f} | {o.spilled_mib:.0f} |")
    passed = sum(o.passed for o in outcomes)
    lines += ["", f"{passed} of {len(outcomes)} passed; spill files left after the last: "
              f"{len(spill_left)}.", ""]
    return "\n".join(lines)
