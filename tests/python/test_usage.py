"""Usage the owner can query, and budgets: `mesh.meta.usage`, `column_usage` and
`budgets`, counted from every query's scans, kept in the state directory across
restarts, and shown to owners (their products) and consumers (their own reads) only.

A gateway of its own (`meshgate serve`) over a copy of the demo mesh whose billing
claims name an owner role and a budget for consumers, with the platform's budgets in
its configuration file.
"""

from __future__ import annotations

import email.message
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import start_server
from mesh_helpers import DEMO_SECRET_FILE, FlightConn, command_statement_query, hermetic_env, query_once

FLUSH = "200ms"
CLAIMS_ROWS_PER_CONSUMER = 100
# The clinical visits' files are far larger: any scan of them passes this by estimate.
VISITS_BYTES_PER_CONSUMER = 1024


class Gateway:
    def __init__(self, root: Path, mesh: Path, secret: Path, meshgate_bin, extra: str = ""):
        self.root = root
        self.mesh = mesh
        self.state = root / "state"
        self.config = root / "meshgate.yaml"
        self.bin = meshgate_bin
        self.config.write_text(
            "plaintext: true\n"
            "auth:\n  issuers:\n"
            "    - issuer: meshgate-demo\n      audience: [meshgate]\n      algorithms: [HS256]\n"
            f"      key: {{ secret_file: {json.dumps(str(secret))} }}\n"
            "      roles_claim: roles\n      attribute_claims: { region: region }\n"
            f"usage: {{ flush_interval: {FLUSH}, domain_owners: {{ clinical: [clinical_lead] }} }}\n"
            "quality: { enabled: false }\n"
            "engine:\n  derived:\n"
            "    principals: { analytics: { subject: \"domain:analytics\", roles: [analyst] } }\n"
            "    materialize: false\n"
            + extra
        )
        self.server = None

    def start(self):
        argv = [self.bin, "serve", "--mesh", self.mesh, "--listen", "127.0.0.1:0", "--plaintext",
                "--http-listen", "127.0.0.1:0", "--config", self.config, "--state-dir", self.state]
        self.server = start_server(argv, "usage")
        return self.server

    def stop(self, sig=signal.SIGTERM):
        if sig == signal.SIGTERM:
            self.server.stop()
        else:
            self.server.proc.send_signal(sig)
            self.server.proc.wait(timeout=10)


def _with_owner_and_budget(descriptor: Path, roles: str, budget: str) -> None:
    text = descriptor.read_text()
    owner_end = text.index("}", text.index("owner:"))
    text = text[:owner_end] + f", roles: [{roles}] " + text[owner_end:]
    descriptor.write_text(text + f"serving: {{ budget: {budget} }}\n")


@pytest.fixture(scope="module")
def gateway(demo, meshgate_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("usage")
    mesh = root / "mesh"
    shutil.copytree(demo.mesh_dir, mesh, ignore=shutil.ignore_patterns(".state"))
    _with_owner_and_budget(
        mesh / "billing" / "claims.yaml",
        "revenue_cycle",
        f"{{ per_consumer: {{ rows_returned: {CLAIMS_ROWS_PER_CONSUMER} }} }}",
    )
    _with_owner_and_budget(
        mesh / "clinical" / "encounters.yaml",
        "clinical_data",
        f"{{ per_consumer: {{ bytes_scanned: {VISITS_BYTES_PER_CONSUMER} }} }}",
    )
    gw = Gateway(root, mesh, Path(demo.mesh_dir) / DEMO_SECRET_FILE, meshgate_bin)
    gw.start()
    try:
        yield gw
    finally:
        gw.server.stop()


def rows(gw: Gateway, token: str, sql: str) -> list[dict]:
    return query_once(gw.server.uri, token, sql).to_pylist()


def refusal(gw: Gateway, token: str, sql: str) -> str:
    """The error message of running `sql` (it must fail), read over pyarrow's Flight."""
    conn = FlightConn(gw.server.uri, token)
    with pytest.raises(pa.ArrowException) as failed:
        info = conn.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(sql)))
        for endpoint in info.endpoints:
            conn.do_get(endpoint.ticket).read_all()
    return str(failed.value)


def http_query(gw: Gateway, token: str, sql: str) -> tuple[int, "email.message.Message", dict]:
    """`sql` through the HTTP door: status, headers (names in any case) and JSON body of a failure."""
    request = urllib.request.Request(f"{gw.server.http_url}/v1/query", data=sql.encode(), method="POST")
    request.add_header("Content-Type", "text/plain")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.headers, {}
    except urllib.error.HTTPError as failed:
        return failed.code, failed.headers, json.loads(failed.read())


def usage_of(gw: Gateway, token: str, where: str = "true", *, settled=None) -> list[dict]:
    """The caller's view of `mesh.meta.usage` where `where`. A query's use is recorded
    when the server has finished its stream, which may be just after the client read
    the last batch: with `settled`, asked again (for up to 10 s) until it holds."""
    sql = f"SELECT * FROM mesh.meta.usage WHERE {where} ORDER BY domain, product, table_name, subject"
    deadline = time.monotonic() + 10
    while True:
        got = rows(gw, token, sql)
        if settled is None or settled(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def returned(gw: Gateway, token: str, n: int) -> None:
    """Waits until the caller's usage counts `n` rows returned in all."""
    usage_of(gw, token, settled=lambda r: sum(x["rows_returned"] for x in r) == n)


def one_row(got: list[dict]) -> bool:
    return len(got) == 1


def wait_flushed() -> None:
    time.sleep(1.0)


def test_a_read_is_counted_per_table_and_column(gateway, mint):
    reader = mint("--sub", "usage-counted", "--role", "analyst")
    got = rows(gateway, reader, "SELECT claim_id, amount FROM billing.claims.claims WHERE claim_id <= 10")
    assert len(got) == 10
    [row] = usage_of(gateway, reader, "table_name = 'claims'", settled=one_row)
    assert (row["domain"], row["product"], row["subject"]) == ("billing", "claims", "usage-counted")
    assert row["queries"] == 1
    assert row["rows_returned"] == 10
    assert row["rows_read"] >= 10
    assert row["bytes_scanned"] > 0
    assert sorted(row["columns"]) == ["amount", "claim_id"]
    columns = rows(gateway, reader, "SELECT column_name, queries FROM mesh.meta.column_usage "
                                    "WHERE table_name = 'claims' ORDER BY column_name")
    assert columns == [{"column_name": "amount", "queries": 1}, {"column_name": "claim_id", "queries": 1}]
    # A second read adds to the same day's tally.
    rows(gateway, reader, "SELECT count(*) FROM billing.claims.claims")
    [row] = usage_of(gateway, reader, "table_name = 'claims'", settled=lambda r: r and r[0]["queries"] == 2)
    assert row["queries"] == 2
    assert row["rows_returned"] == 11


def test_the_bytes_counted_are_those_the_scan_read(gateway, mint, demo):
    # An owner: not held to the consumers' row budget.
    reader = mint("--sub", "usage-bytes", "--role", "billing", "--role", "revenue_cycle")
    rows(gateway, reader, "SELECT * FROM billing.claims.claims")
    [row] = usage_of(gateway, reader, "subject = 'usage-bytes'", settled=one_row)
    on_disk = sum(p.stat().st_size for p in (gateway.mesh / "data" / "billing" / "claims" / "claims").rglob("*.parquet"))
    assert 0 < row["bytes_scanned"] <= on_disk
    # Reading one column reads fewer bytes.
    narrow = mint("--sub", "usage-bytes-narrow", "--role", "billing", "--role", "revenue_cycle")
    rows(gateway, narrow, "SELECT sum(amount) FROM billing.claims.claims")
    [small] = usage_of(gateway, narrow, "subject = 'usage-bytes-narrow'", settled=one_row)
    assert 0 < small["bytes_scanned"] < row["bytes_scanned"]


def test_a_row_filtered_reader_is_charged_the_stored_size_and_learns_nothing_of_hidden_rows(gateway, mint):
    # Pruning reads the statistics of every row, hidden ones too: what a scan read would
    # tell a reader behind a row filter whether hidden rows hold a value. Such a read is
    # charged the table's stored size, whatever its WHERE, and its rows are not counted.
    clinician = mint("--sub", "usage-filtered", "--role", "clinician", "--attr", "region=north")
    stored = rows(gateway, clinician, "SELECT data_bytes FROM mesh.meta.tables "
                                      "WHERE product = 'registry' AND table_name = 'patients'")[0]["data_bytes"]
    rows(gateway, clinician, "SELECT count(*) FROM patients.registry.patients WHERE patient_id < 5")
    [first] = usage_of(gateway, clinician, settled=one_row)
    rows(gateway, clinician, "SELECT count(*) FROM patients.registry.patients WHERE patient_id > 1000000000")
    [second] = usage_of(gateway, clinician, settled=lambda r: r and r[0]["bytes_scanned"] == 2 * stored)
    assert (first["bytes_scanned"], first["rows_read"]) == (stored, 0)
    assert (second["bytes_scanned"], second["rows_read"]) == (2 * stored, 0)


def test_consumers_see_their_own_usage_and_owners_that_of_their_products(gateway, mint):
    analyst = mint("--sub", "usage-analyst", "--role", "analyst")
    biller = mint("--sub", "usage-biller", "--role", "billing")
    rows(gateway, analyst, "SELECT count(*) FROM billing.claims.claims")
    rows(gateway, analyst, "SELECT count(*) FROM clinical.labs.results")
    rows(gateway, biller, "SELECT count(*) FROM billing.claims.claims")

    seen = {(r["subject"], r["product"]) for r in usage_of(gateway, analyst, settled=lambda r: len(r) == 2)}
    assert seen == {("usage-analyst", "claims"), ("usage-analyst", "labs")}
    seen = {r["subject"] for r in usage_of(gateway, biller, settled=one_row)}
    assert seen == {"usage-biller"}

    # The claims' owner role (owner.roles in the descriptor) sees every consumer of
    # claims, and nothing of the clinical products.
    owner = mint("--sub", "usage-claims-owner", "--role", "revenue_cycle")
    seen = {(r["subject"], r["product"]) for r in usage_of(gateway, owner, "subject LIKE 'usage-%'")}
    assert ("usage-analyst", "claims") in seen and ("usage-biller", "claims") in seen
    assert {p for _, p in seen} == {"claims"}
    # The clinical domain's owner role (usage.domain_owners in the configuration).
    lead = mint("--sub", "usage-clinical-lead", "--role", "clinical_lead")
    seen = {(r["subject"], r["product"]) for r in usage_of(gateway, lead, "subject LIKE 'usage-%'")}
    assert ("usage-analyst", "labs") in seen
    assert {p for _, p in seen} <= {"encounters", "labs"}
    # Someone who reads nothing sees nothing.
    stranger = mint("--sub", "usage-stranger", "--role", "nobody")
    assert usage_of(gateway, stranger) == []


def test_an_owners_row_budget_stops_a_consumer_and_says_when_it_resets(gateway, mint):
    consumer = mint("--sub", "budget-rows", "--role", "billing")
    sql = "SELECT claim_id FROM billing.claims.claims ORDER BY claim_id LIMIT 60"
    assert len(rows(gateway, consumer, sql)) == 60
    returned(gateway, consumer, 60)
    # The second pass goes over the budget of 100 rows while it streams.
    message = refusal(gateway, consumer, sql)
    assert "resource exhausted" in message.lower(), message
    assert "billing.claims's budget per consumer (serving.budget.per_consumer)" in message
    assert "resets at" in message and "T00:00:00Z" in message
    # What it did not return is not counted: 40 rows are left.
    assert len(rows(gateway, consumer, "SELECT claim_id FROM billing.claims.claims LIMIT 40")) == 40
    returned(gateway, consumer, 100)
    # Spent now: refused before it runs, whatever it reads of claims.
    message = refusal(gateway, consumer, "SELECT claim_id FROM billing.claims.claims LIMIT 1")
    assert "is spent" in message and "100 rows returned per day" in message, message
    # The HTTP door says when to come back.
    status, headers, body = http_query(gateway, consumer, "SELECT claim_id FROM billing.claims.claims LIMIT 1")
    assert status == 429 and body["error"]["code"] == "ResourceExhausted", body
    assert 0 < int(headers["Retry-After"]) <= 86_400
    # Other products still answer, and the owner is not held to its consumers' budget.
    assert rows(gateway, consumer, "SELECT count(*) AS n FROM reference.regions.regions")[0]["n"] > 0
    owner = mint("--sub", "budget-rows-owner", "--role", "revenue_cycle", "--role", "billing")
    assert len(rows(gateway, owner, "SELECT claim_id FROM billing.claims.claims LIMIT 150")) == 150
    # The budget table shows what was spent against the limit.
    [budget] = rows(gateway, consumer, "SELECT * FROM mesh.meta.budgets "
                                       "WHERE budget = 'serving.budget.per_consumer'")
    assert budget["product"] == "billing.claims"
    assert budget["rows_returned_limit"] == CLAIMS_ROWS_PER_CONSUMER
    assert budget["rows_returned_today"] == CLAIMS_ROWS_PER_CONSUMER


def test_a_bytes_budget_refuses_a_scan_that_would_pass_it(gateway, mint):
    consumer = mint("--sub", "budget-bytes", "--role", "analyst")
    message = refusal(gateway, consumer, "SELECT count(*) FROM clinical.encounters.visits")
    assert "clinical.encounters's budget per consumer" in message, message
    assert "would scan up to" in message
    # Nothing was read, so nothing is counted.
    assert usage_of(gateway, consumer) == []


def test_usage_and_budgets_survive_restarts(gateway, mint):
    consumer = mint("--sub", "budget-restart", "--role", "billing")
    rows(gateway, consumer, "SELECT claim_id FROM billing.claims.claims LIMIT 100")
    returned(gateway, consumer, 100)
    refusal(gateway, consumer, "SELECT claim_id FROM billing.claims.claims LIMIT 1")
    before = usage_of(gateway, consumer, settled=one_row)
    assert [r["rows_returned"] for r in before] == [100]

    # A clean stop writes what was counted.
    gateway.stop()
    gateway.start()
    assert usage_of(gateway, consumer) == before
    message = refusal(gateway, consumer, "SELECT claim_id FROM billing.claims.claims LIMIT 1")
    assert "is spent" in message

    # A crash loses at most the last flush interval.
    later = mint("--sub", "usage-crash", "--role", "billing")
    rows(gateway, later, "SELECT count(*) FROM billing.claims.claims")
    usage_of(gateway, later, settled=one_row)
    wait_flushed()
    gateway.stop(signal.SIGKILL)
    gateway.start()
    [row] = usage_of(gateway, later)
    assert row["queries"] == 1


def test_the_platforms_budget_per_principal_holds_across_products(gateway, mint, demo, meshgate_bin, tmp_path):
    platform = Gateway(tmp_path, gateway.mesh, Path(demo.mesh_dir) / DEMO_SECRET_FILE, meshgate_bin,
                       extra="budgets: { per_principal: { rows_returned: 50 } }\n")
    platform.start()
    try:
        # An owner of claims: only the platform's budget applies.
        owner = mint("--sub", "platform-rows", "--role", "billing", "--role", "revenue_cycle")
        assert len(rows(platform, owner, "SELECT claim_id FROM billing.claims.claims LIMIT 30")) == 30
        returned(platform, owner, 30)
        message = refusal(platform, owner, "SELECT claim_id FROM billing.claims.claims LIMIT 30")
        assert "the platform's budget per principal (budgets.per_principal)" in message, message
        [budget] = rows(platform, owner, "SELECT * FROM mesh.meta.budgets WHERE budget = 'budgets.per_principal'")
        assert (budget["subject"], budget["rows_returned_limit"], budget["rows_returned_today"]) == \
            ("platform-rows", 50, 30)
        # Another principal has its own.
        other = mint("--sub", "platform-rows-2", "--role", "billing", "--role", "revenue_cycle")
        assert len(rows(platform, other, "SELECT claim_id FROM billing.claims.claims LIMIT 30")) == 30
    finally:
        platform.server.stop()


def test_lint_names_the_consumers_a_breaking_change_affects(gateway, mint, meshgate_bin, tmp_path):
    """`lint --against <previous> --usage <state dir>`, beside the running gateway."""
    amounts = mint("--sub", "impact-amounts", "--role", "analyst")
    counts = mint("--sub", "impact-counts", "--role", "analyst")
    rows(gateway, amounts, "SELECT claim_id, amount FROM billing.claims.claims WHERE claim_id <= 3")
    rows(gateway, counts, "SELECT count(*) FROM billing.claims.claims")
    usage_of(gateway, amounts, settled=one_row)
    usage_of(gateway, counts, settled=one_row)
    wait_flushed()
    changed = tmp_path / "mesh"
    shutil.copytree(gateway.mesh, changed, ignore=shutil.ignore_patterns(".state", "data"))
    claims = changed / "billing" / "claims.yaml"
    text = claims.read_text()
    readers = "any_role: [billing, analyst, admin]"
    assert "Decimal128(12, 2)" in text and readers in text and "version: 1.0.0" in text
    claims.write_text(text.replace("Decimal128(12, 2)", "Decimal128(10, 2)")
                      .replace(readers, "any_role: [billing, admin]").replace("version: 1.0.0", "version: 2.0.0"))
    run = subprocess.run([meshgate_bin, "lint", changed, "--against", gateway.mesh, "--usage", gateway.state],
                         capture_output=True, text=True, timeout=120, env=hermetic_env())
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    lines = out.splitlines()

    def consumers_after(change: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if change in line)
        block = []
        for line in lines[start + 1:]:
            if not line.startswith("    "):
                break
            block.append(line.strip())
        return block

    narrowed = consumers_after("claims.amount: type Decimal128(12, 2) -> Decimal128(10, 2)")
    assert any("|impact-amounts reads billing.claims.claims (1 query, last read 20" in c for c in narrowed), out
    assert not any("impact-counts" in c for c in narrowed), out
    tightened = consumers_after("policy.read")
    assert any("impact-amounts" in c for c in tightened) and any("impact-counts" in c for c in tightened), out
    assert "consumer(s) on record affected by the breaking changes" in out
    # The gateway kept serving and counting meanwhile.
    rows(gateway, counts, "SELECT count(*) FROM billing.claims.claims")
    # Without usage recorded there: a clear error, and the lint fails.
    empty = tmp_path / "no-state"
    empty.mkdir()
    run = subprocess.run([meshgate_bin, "lint", changed, "--against", gateway.mesh, "--usage", empty],
                         capture_output=True, text=True, timeout=120, env=hermetic_env())
    assert run.returncode == 1 and "error: --usage:" in run.stdout and "usage.redb" in run.stdout, run.stdout
