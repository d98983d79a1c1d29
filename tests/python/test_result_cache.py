"""The result cache: a statement asked again is answered from the answer kept for it,
and only while that is the answer its caller would get now.

A gateway of its own (`meshgate serve`) over a small mesh this module writes and changes:
`shop.orders` (cached; a row filter binds the caller's region, analysts included) and
`shop.orders_live`, the same files and policy with `serving: {result_cache: false}`
(`shop.orders_until` adds `now()` to its row filter). The
live twin shows when the gateway has seen a change; the cached product must show it from
then on, never its kept answer. Audit records (`cache: hit|miss`) and the metrics say
which answers came from the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import serve_config, start_server
from mesh_helpers import DEMO_SECRET_FILE, ServerProcess, adbc_connect, adbc_query, free_port

APPLY_WITHIN_S = 30

DESCRIPTOR = """\
domain: shop
product: {product}
version: 1.0.0
description: Orders, one row per order.
owner: {{ team: shop-data, contact: shop@example.org }}
tables:
  - name: orders
    format: parquet
    location: data/orders/
    columns:
      - {{ name: id, type: Int64, nullable: false }}
      - {{ name: region, type: Utf8, nullable: false }}
      - {{ name: note, type: Utf8 }}
      - {{ name: amount, type: Int64 }}
policy:
  read: {{ any_authenticated: true }}
  rows:
    - {{ filter: "{filter}", unless_role: [admin] }}
  columns: {columns}
{serving}"""

REGION = "region = principal.region"
SUM = "SELECT region, count(*) AS n, sum(amount) AS total FROM shop.{product}.orders GROUP BY region ORDER BY region"


@dataclass
class Shop:
    mesh: Path
    audit: Path
    metrics_url: str
    server: ServerProcess

    def write_descriptors(self, columns: str = "{}") -> None:
        for product, serving, filter in [
            ("orders", "", REGION),
            ("orders_live", "serving: { result_cache: false }\n", REGION),
            ("orders_until", "", REGION + " AND now() < TIMESTAMP '2200-01-01 00:00:00'"),
        ]:
            text = DESCRIPTOR.format(product=product, columns=columns, serving=serving, filter=filter)
            (self.mesh / "shop" / f"{product}.yaml").write_text(text)

    def write_orders(self, name: str, first_id: int, rows: int) -> None:
        ids = list(range(first_id, first_id + rows))
        table = pa.table({
            "id": pa.array(ids, pa.int64()),
            "region": pa.array(["north" if i % 2 else "south" for i in ids]),
            "note": pa.array([f"note {i}" for i in ids]),
            "amount": pa.array([i * 10 for i in ids], pa.int64()),
        })
        target = self.mesh / "data" / "orders" / name
        partial = target.with_suffix(".tmp")
        pq.write_table(table, partial)
        partial.rename(target)

    def records(self, sql: str, subject: str | None = None) -> list[dict]:
        digest = hashlib.sha256(sql.encode()).hexdigest()
        records = [json.loads(line) for line in self.audit.read_text().splitlines() if line]
        return [
            r for r in records
            if r.get("rpc") == "DoGet/TicketStatementQuery"
            and r.get("statement_sha256") == digest
            and (subject is None or r.get("subject") == subject)
        ]

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=10).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def shop(demo, meshgate_bin, tmp_path_factory) -> Shop:
    root = tmp_path_factory.mktemp("result-cache")
    mesh = root / "mesh"
    (mesh / "shop").mkdir(parents=True)
    (mesh / "data" / "orders").mkdir(parents=True)
    audit = root / "audit.jsonl"
    config = root / "meshgate.yaml"
    config.write_text(
        serve_config(Path(demo.mesh_dir) / DEMO_SECRET_FILE)
        + f"audit: {{ file: {json.dumps(str(audit))} }}\n"
        + "quality: { enabled: false }\n"
        + "reload: { debounce: 100ms }\n"
    )
    metrics = f"127.0.0.1:{free_port()}"
    shop = Shop(mesh=mesh, audit=audit, metrics_url=f"http://{metrics}", server=None)  # type: ignore[arg-type]
    shop.write_orders("part-0.parquet", 1, 40)
    shop.write_descriptors()
    argv = [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
            "--config", config, "--metrics-listen", metrics]
    shop.server = start_server(argv, "result-cache")
    try:
        yield shop
    finally:
        shop.server.stop()


@pytest.fixture(scope="module")
def tokens(mint) -> dict[str, str]:
    return {
        "ana": mint("--sub", "ana", "--role", "analyst", "--attr", "region=north"),
        "ann": mint("--sub", "ann", "--role", "analyst", "--attr", "region=north"),
        "bob": mint("--sub", "bob", "--role", "analyst", "--attr", "region=south"),
        "admin": mint("--sub", "root", "--role", "admin"),
    }


def ask(shop: Shop, token: str, sql: str, params=None) -> list[dict]:
    conn = adbc_connect(shop.server.uri, token)
    try:
        return adbc_query(conn, sql, params).to_pylist()
    finally:
        conn.close()


def cache_notes(shop: Shop, sql: str, subject: str | None = None) -> list[str | None]:
    """The `cache` field of the statement's executions, in order (waits for the audit)."""
    deadline = time.monotonic() + 10
    while True:
        records = shop.records(sql, subject)
        if records or time.monotonic() > deadline:
            return [r.get("cache") for r in records]
        time.sleep(0.1)


def wait_for(what: str, check) -> None:
    deadline = time.monotonic() + APPLY_WITHIN_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {APPLY_WITHIN_S}s")
        time.sleep(0.2)


def test_a_statement_asked_again_is_answered_from_the_cache(shop, tokens):
    sql = SUM.format(product="orders") + " -- again"
    first = ask(shop, tokens["admin"], sql)
    hits_before = shop.metric('meshgate_result_cache_lookups_total{result="hit"}')
    second = ask(shop, tokens["admin"], sql)
    assert first == second
    assert [r["n"] for r in first] == [20, 20]
    assert cache_notes(shop, sql) == ["miss", "hit"]
    assert shop.metric('meshgate_result_cache_lookups_total{result="hit"}') == hits_before + 1
    assert shop.metric("meshgate_result_cache_entries") >= 1
    assert shop.metric("meshgate_result_cache_bytes") > 0


def test_principals_whose_row_filters_bind_other_values_never_share_an_answer(shop, tokens):
    sql = "SELECT id, region FROM shop.orders.orders ORDER BY id"
    ana = ask(shop, tokens["ana"], sql)
    bob = ask(shop, tokens["bob"], sql)
    assert {r["region"] for r in ana} == {"north"} and len(ana) == 20
    assert {r["region"] for r in bob} == {"south"} and len(bob) == 20
    assert ask(shop, tokens["bob"], sql) == bob
    # Ann sees exactly what Ana sees (the same roles, the same region): she may share it.
    assert ask(shop, tokens["ann"], sql) == ana
    assert cache_notes(shop, sql, "ana") == ["miss"]
    assert cache_notes(shop, sql, "bob") == ["miss", "hit"]
    assert cache_notes(shop, sql, "ann") == ["hit"]


def test_bound_values_are_part_of_the_key(shop, tokens):
    sql = "SELECT id, note FROM shop.orders.orders WHERE id = $1"
    assert ask(shop, tokens["admin"], sql, [3]) == [{"id": 3, "note": "note 3"}]
    assert ask(shop, tokens["admin"], sql, [4]) == [{"id": 4, "note": "note 4"}]
    assert ask(shop, tokens["admin"], sql, [3]) == [{"id": 3, "note": "note 3"}]
    assert cache_notes(shop, sql) == ["miss", "miss", "hit"]


def test_functions_whose_result_changes_are_never_kept(shop, tokens):
    sql = "SELECT count(*) AS n, now() AS at FROM shop.orders.orders"
    first = ask(shop, tokens["admin"], sql)
    time.sleep(0.01)
    second = ask(shop, tokens["admin"], sql)
    assert first[0]["at"] != second[0]["at"]
    assert cache_notes(shop, sql) == [None, None]


def test_a_row_filter_that_changes_with_time_keeps_no_answer(shop, tokens):
    sql = "SELECT count(*) AS n FROM shop.orders_until.orders"
    assert ask(shop, tokens["ana"], sql) == ask(shop, tokens["ana"], sql) == [{"n": 20}]
    assert cache_notes(shop, sql, "ana") == [None, None]
    # The same statement over a table whose filter is immutable is kept.
    plain = sql.replace("orders_until", "orders")
    assert ask(shop, tokens["ana"], plain) == ask(shop, tokens["ana"], plain)
    assert cache_notes(shop, plain, "ana") == ["miss", "hit"]


def test_a_product_that_opts_out_is_never_served_from_the_cache(shop, tokens):
    sql = SUM.format(product="orders_live")
    assert ask(shop, tokens["admin"], sql) == ask(shop, tokens["admin"], sql)
    assert cache_notes(shop, sql) == [None, None]


def test_new_data_gives_the_fresh_answer_at_once(shop, tokens):
    cached = SUM.format(product="orders") + " -- data"
    live = SUM.format(product="orders_live") + " -- data"
    before = ask(shop, tokens["admin"], cached)
    assert ask(shop, tokens["admin"], cached) == before
    shop.write_orders("part-1.parquet", 1001, 10)

    def live_sees_it() -> bool:
        return ask(shop, tokens["admin"], live) != before

    wait_for("the new file reaching the live twin", live_sees_it)
    # From the moment the gateway serves the new data, the cached product does too.
    after = ask(shop, tokens["admin"], cached)
    assert after == ask(shop, tokens["admin"], live)
    assert sum(r["n"] for r in after) == sum(r["n"] for r in before) + 10
    notes = cache_notes(shop, cached)
    assert notes[:2] == ["miss", "hit"] and notes[-1] == "miss", notes


def test_a_changed_policy_never_serves_an_answer_kept_under_the_old_one(shop, tokens):
    cached = "SELECT id, note FROM shop.orders.orders WHERE id < 5 ORDER BY id"
    live = cached.replace("shop.orders.", "shop.orders_live.")
    clear = ask(shop, tokens["admin"], cached)
    assert ask(shop, tokens["admin"], cached) == clear
    assert clear[0]["note"] == "note 1"
    shop.write_descriptors(columns="{ note: { mask: redact } }")
    try:
        wait_for(
            "the mask reaching the live twin",
            lambda: ask(shop, tokens["admin"], live)[0]["note"] == "REDACTED",
        )
        masked = ask(shop, tokens["admin"], cached)
        assert [r["note"] for r in masked] == ["REDACTED"] * len(clear)
        assert cache_notes(shop, cached)[-1] == "miss"
    finally:
        shop.write_descriptors()
