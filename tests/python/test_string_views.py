"""Strings that files store as views are computed on as views, and served as declared.

Recent arrow-rs writers (`tpchgen-cli`, DataFusion) and pyarrow's `string_view` store an
Arrow schema naming `Utf8View` in each file. With `engine.parquet_string_views: hinted`
(the default) a column declared `Utf8` (`Binary`) that every file of its table names as a
view is read and computed on as a view; results leave the engine in the declared type.

A gateway of its own over a mesh this module writes: `shop.events` with three tables
holding the same rows, `views` (files naming views), `plain` (plain strings) and `mixed`
(one file of each). Every answer over `views` must be the answer over `plain`, through
every door, under row filters and masks; only `arrow_typeof` shows the difference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import serve_config, start_server
from mesh_helpers import DEMO_SECRET_FILE, adbc_connect, adbc_query

APPLY_WITHIN_S = 30
TABLES = ("views", "plain", "mixed")

DESCRIPTOR = """\
domain: shop
product: events
version: 1.0.0
description: Shop events, the same rows stored three ways.
owner: { team: shop-data, contact: shop@example.org }
tables:
""" + "".join(f"""\
  - name: {table}
    format: parquet
    location: data/{table}/
    columns:
      - {{ name: id, type: Int64, nullable: false }}
      - {{ name: region, type: Utf8, nullable: false }}
      - {{ name: email, type: Utf8 }}
      - {{ name: note, type: Utf8 }}
      - {{ name: payload, type: Binary }}
""" for table in TABLES) + """\
policy:
  read: { any_authenticated: true }
  rows:
    - { filter: "region = principal.region", unless_role: [admin] }
  columns:
    email: { mask: partial, unless_role: [admin] }
"""

LONG = "a note longer than the twelve bytes a view holds inline"


def rows(first: int, count: int) -> dict[str, list]:
    ids = list(range(first, first + count))
    return {
        "id": ids,
        "region": ["north" if i % 3 else "south" for i in ids],
        "email": [None if i % 7 == 0 else f"user{i}@example.org" for i in ids],
        "note": [None if i % 5 == 0 else (f"{LONG} #{i % 4}" if i % 2 else f"short {i % 3}") for i in ids],
        "payload": [bytes([i % 256, 0, 255]) for i in ids],
    }


def write(path: Path, data: dict[str, list], views: bool) -> None:
    strings, binary = (pa.string_view(), pa.binary_view()) if views else (pa.string(), pa.binary())
    table = pa.table({
        "id": pa.array(data["id"], pa.int64()),
        "region": pa.array(data["region"], strings),
        "email": pa.array(data["email"], strings),
        "note": pa.array(data["note"], strings),
        "payload": pa.array(data["payload"], binary),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    pq.write_table(table, partial, row_group_size=100)
    partial.rename(path)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Path:
    mesh = tmp_path_factory.mktemp("string-views") / "mesh"
    (mesh / "shop").mkdir(parents=True)
    data = mesh / "data"
    for table, kinds in (("views", (True, True)), ("plain", (False, False)), ("mixed", (True, False))):
        for part, views in enumerate(kinds):
            write(data / table / f"part-{part}.parquet", rows(1 + part * 300, 300), views)
    (mesh / "shop" / "events.yaml").write_text(DESCRIPTOR)
    assert pq.read_schema(data / "views" / "part-0.parquet").field("region").type == pa.string_view()
    return mesh


@pytest.fixture(scope="module")
def gateway(demo, meshgate_bin, mesh, tmp_path_factory):
    root = mesh.parent
    config = root / "meshgate.yaml"
    config.write_text(serve_config(Path(demo.mesh_dir) / DEMO_SECRET_FILE)
                      + "quality: { enabled: false }\n"
                      + "reload: { debounce: 100ms }\n")
    argv = [meshgate_bin, "serve", "--mesh", mesh, "--listen", "127.0.0.1:0", "--plaintext",
            "--config", config, "--pg-listen", "127.0.0.1:0"]
    server = start_server(argv, "string-views")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tokens(mint) -> dict[str, str]:
    return {
        "admin": mint("--sub", "root", "--role", "admin"),
        "ana": mint("--sub", "ana", "--role", "analyst", "--attr", "region=north"),
    }


@pytest.fixture(scope="module")
def conns(gateway, tokens):
    opened = {who: adbc_connect(f"grpc://{gateway.address}", token) for who, token in tokens.items()}
    yield opened
    for conn in opened.values():
        conn.close()


def each_table(conn, sql: str) -> dict[str, pa.Table]:
    return {table: adbc_query(conn, sql.format(t=f"shop.events.{table}")) for table in TABLES}


def assert_same_everywhere(conn, sql: str) -> pa.Table:
    answers = each_table(conn, sql)
    for table in ("views", "mixed"):
        assert answers[table].schema == answers["plain"].schema, table
        assert answers[table].to_pylist() == answers["plain"].to_pylist(), table
    return answers["views"]


def test_views_inside_only_where_every_file_names_them(conns):
    sql = "SELECT arrow_typeof(region) AS r, arrow_typeof(payload) AS p, arrow_typeof(id) AS i FROM {t} LIMIT 1"
    types = {table: answer.to_pylist()[0] for table, answer in each_table(conns["admin"], sql).items()}
    assert types["views"] == {"r": "Utf8View", "p": "BinaryView", "i": "Int64"}
    assert types["plain"] == {"r": "Utf8", "p": "Binary", "i": "Int64"}
    assert types["mixed"] == {"r": "Utf8", "p": "Binary", "i": "Int64"}, "one file without the hint"


def test_results_carry_the_declared_types_and_the_stored_values(conns, mesh):
    got = assert_same_everywhere(conns["admin"], "SELECT * FROM {t} ORDER BY id")
    assert got.schema.types == [pa.int64(), pa.string(), pa.string(), pa.string(), pa.binary()]
    expected = rows(1, 300)
    second = rows(301, 300)
    for column in expected:
        expected[column] += second[column]
    assert got.to_pydict() == expected


@pytest.mark.parametrize("sql", [
    "SELECT region, count(*) AS n, min(note) AS lo, max(note) AS hi, count(DISTINCT email) AS e "
    "FROM {t} GROUP BY region ORDER BY region",
    "SELECT note, count(*) AS n FROM {t} WHERE note LIKE '%twelve%' OR note = 'short 1' "
    "GROUP BY note ORDER BY note",
    "SELECT id FROM {t} WHERE region IN ('south') AND email > 'user5' ORDER BY id",
    "SELECT upper(region) || ':' || coalesce(substr(note, 1, 5), '-') AS k, count(*) AS n "
    "FROM {t} GROUP BY 1 ORDER BY 1",
    "SELECT payload, count(*) AS n FROM {t} WHERE payload > X'7F' GROUP BY payload ORDER BY payload LIMIT 5",
    "SELECT a.note, b.region, count(*) AS n FROM {t} a JOIN shop.events.plain b "
    "ON a.note = b.note AND a.region = b.region GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT note FROM {t} UNION SELECT region FROM shop.events.plain ORDER BY 1 NULLS FIRST",
])
def test_queries_answer_as_over_plain_strings(conns, sql):
    got = assert_same_everywhere(conns["admin"], sql)
    assert got.num_rows > 0


def test_row_filters_and_masks_apply_to_views(conns):
    got = assert_same_everywhere(conns["ana"], "SELECT id, region, email FROM {t} ORDER BY id")
    assert set(got.column("region").to_pylist()) == {"north"}
    assert got.num_rows == 400
    emails = got.column("email").to_pylist()
    assert all(e is None or (e.startswith("***") and e.endswith(".org")) for e in emails), emails[:5]
    assert got.schema.field("email").type == pa.string()


@pytest.mark.parametrize("sql", [
    "SELECT email, count(*) AS n FROM {t} GROUP BY email ORDER BY email NULLS FIRST",
    "SELECT count(email) AS e, count(DISTINCT email) AS d, max(email) AS m FROM {t}",
])
def test_masked_columns_aggregate(conns, sql):
    got = assert_same_everywhere(conns["ana"], sql)
    assert got.num_rows > 0
    assert all(t == pa.string() for t in got.schema.types if pa.types.is_string(t) or pa.types.is_string_view(t))


def test_metadata_names_the_declared_types(conns):
    schema = conns["admin"].adbc_get_table_schema("views", catalog_filter="shop", db_schema_filter="events")
    assert schema.field("region").type == pa.string()
    assert schema.field("payload").type == pa.binary()
    columns = adbc_query(conns["admin"], "SELECT column_name, data_type FROM mesh.meta.columns "
                         "WHERE domain = 'shop' AND table_name = 'views' ORDER BY ordinal_position").to_pylist()
    assert [(c["column_name"], c["data_type"]) for c in columns] == [
        ("id", "Int64"), ("region", "Utf8"), ("email", "Utf8"), ("note", "Utf8"), ("payload", "Binary")]
    with conns["admin"].cursor() as cur:
        parameters = cur.adbc_prepare("SELECT id FROM shop.events.views WHERE region = ? AND note LIKE ?")
        assert parameters.types == [pa.string(), pa.string()]
        cur.execute("SELECT id FROM shop.events.views WHERE region = ? AND note LIKE ?", ("south", "short%"))
        assert cur.fetch_arrow_table().num_rows > 0


def test_the_postgres_door_reads_text(gateway, tokens):
    host, port = gateway.pg_address.rsplit(":", 1)
    with psycopg.connect(host=host, port=int(port), dbname="mesh", user="ana", password=tokens["ana"],
                         sslmode="disable", connect_timeout=30, autocommit=True) as conn:
        with conn.cursor() as cur:
            answers = {}
            for table in TABLES:
                cur.execute(f"SELECT id, region, note, email FROM shop.events.{table} "
                            "WHERE note LIKE %s ORDER BY id", ("%twelve%",))
                answers[table] = cur.fetchall()
            assert answers["views"] == answers["plain"] == answers["mixed"]
            assert answers["views"] and all(isinstance(r[2], str) and r[1] == "north" for r in answers["views"])


def test_a_plain_file_added_turns_views_off_and_answers_stay_right(conns, mesh):
    conn = conns["admin"]
    count = "SELECT count(*) AS n, count(DISTINCT note) AS d FROM shop.events.views"
    before = adbc_query(conn, count).to_pylist()[0]
    with conn.cursor() as prepared:
        prepared.adbc_prepare("SELECT region, note FROM shop.events.views WHERE id = 601")
        write(mesh / "data" / "views" / "part-2.parquet", rows(601, 50), views=False)
        deadline = time.monotonic() + APPLY_WITHIN_S
        while adbc_query(conn, count).to_pylist()[0]["n"] == before["n"]:
            assert time.monotonic() < deadline, "the new file was not served in time"
            time.sleep(0.2)
        typeof = "SELECT arrow_typeof(note) AS t FROM shop.events.views LIMIT 1"
        assert adbc_query(conn, typeof).to_pylist() == [{"t": "Utf8"}]
        prepared.execute("SELECT region, note FROM shop.events.views WHERE id = 601")
        got = prepared.fetch_arrow_table()
        assert got.schema.types == [pa.string(), pa.string()]
        assert got.to_pylist() == [{"region": "north", "note": f"{LONG} #1"}]
    after = adbc_query(conn, count).to_pylist()[0]
    assert after["n"] == before["n"] + 50
    (mesh / "data" / "views" / "part-2.parquet").unlink()
    deadline = time.monotonic() + APPLY_WITHIN_S
    while adbc_query(conn, "SELECT arrow_typeof(note) AS t FROM shop.events.views LIMIT 1").to_pylist() != [
            {"t": "Utf8View"}]:
        assert time.monotonic() < deadline, "views did not come back once every file named them"
        time.sleep(0.2)
    assert json.dumps(adbc_query(conn, count).to_pylist()[0]) == json.dumps(before)
