"""Benchmark worker: the Python paths of benches/benches/tpch (ADBC and pyarrow against
the gateway, DuckDB in-process over the same Parquet files), driven by the Rust harness.

Protocol: one JSON object per line on stdin, one reply per line on stdout.
  {"op": "versions"}                         -> versions of the packages and Python
  {"op": "run", "path": P, "sql": S}         -> {"seconds", "rows", "bytes"} for P in
                                                adbc | pyarrow | duckdb, or a peer
                                                (sail | roapi, ADBC), or
                                                flight_ceiling (pyarrow's Flight
                                                server's lineitem); time from
                                                submitting the SQL to holding the whole
                                                result as an Arrow table
  {"op": "check", "sql": S, "order": bool,
   "path": P}                                -> {"ok", "detail", "gateway_rows",
                                                "duckdb_rows"}: P's answer (default
                                                adbc, the gateway) against DuckDB's
  {"op": "quit"}
Errors are replied as {"error": "..."}; the worker keeps serving.
"""

import argparse
import datetime
import decimal
import glob
import importlib.metadata
import json
import math
import os
import platform
import re
import sys
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi
import duckdb
import pyarrow
import pyarrow.flight as flight

FLIGHT_SQL_TYPE_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def statement_command(sql):
    """Any{CommandStatementQuery{query = sql}}, as a Flight SQL client sends it."""
    message = _field(1, sql.encode("utf-8"))
    return _field(1, (FLIGHT_SQL_TYPE_PREFIX + "CommandStatementQuery").encode()) + _field(
        2, message
    )


# Qualified mesh names, which peers serve bare (`tpch.sales.lineitem` -> `lineitem`).
QUALIFIED = re.compile(r"\btpch\.[a-z_]+\.([a-z_]+)\b")


class Paths:
    def __init__(self, addr, token, data, tables, peers, ceiling):
        self.token = token
        # pyarrow's own Flight server holding lineitem in memory (flight_ceiling.py).
        self.ceiling = flight.FlightClient(f"grpc://{ceiling}") if ceiling else None
        auth = f"Bearer {token}"
        opts = adbc_driver_flightsql.DatabaseOptions
        self.adbc = adbc_driver_flightsql.dbapi.connect(
            f"grpc://{addr}",
            db_kwargs={opts.AUTHORIZATION_HEADER.value: auth},
            autocommit=True,
        )
        self.flight = flight.FlightClient(f"grpc://{addr}")
        self.call = flight.FlightCallOptions(headers=[(b"authorization", auth.encode())])
        self.duck = duckdb.connect(":memory:")
        threads = os.cpu_count() or 2
        self.duck.execute(f"SET threads = {threads}")
        try:
            self.duck.execute("SET parquet_metadata_cache = true")
        except duckdb.Error:
            pass
        self.duck.execute("ATTACH ':memory:' AS tpch")
        for table in tables:
            product, name = table["product"], table["name"]
            self.duck.execute(f"CREATE SCHEMA IF NOT EXISTS tpch.{product}")
            files = sorted(glob.glob(os.path.join(data, product, name, "*.parquet")))
            if not files:
                raise RuntimeError(f"no Parquet files for {product}.{name}")
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            self.duck.execute(
                f"CREATE VIEW tpch.{product}.{name} AS SELECT * FROM read_parquet([{listing}])"
            )
        # Peer Flight SQL servers (no authentication), read by the same ADBC driver.
        self.peers = {}
        for name, peer_addr in peers.items():
            conn = adbc_driver_flightsql.dbapi.connect(f"grpc://{peer_addr}", autocommit=True)
            if name == "sail":
                # Sail starts with an empty catalog: register every table's directory.
                with conn.cursor() as cur:
                    for table in tables:
                        location = os.path.join(data, table["product"], table["name"]).replace("'", "\\'")
                        cur.execute(f"CREATE TABLE IF NOT EXISTS {table['name']} USING parquet LOCATION '{location}'")
            self.peers[name] = conn

    def fetch(self, path, sql):
        """The answer of `sql` on `path`, and the seconds it took."""
        started = time.perf_counter()
        if path == "adbc" or path in self.peers:
            conn = self.adbc if path == "adbc" else self.peers[path]
            if path != "adbc":
                sql = QUALIFIED.sub(r"\1", sql)
            with conn.cursor() as cur:
                cur.execute(sql)
                table = cur.fetch_arrow_table()
        elif path == "pyarrow":
            info = self.flight.get_flight_info(
                flight.FlightDescriptor.for_command(statement_command(sql)), self.call
            )
            parts = [
                self.flight.do_get(endpoint.ticket, self.call).read_all()
                for endpoint in info.endpoints
            ]
            table = pyarrow.concat_tables(parts) if len(parts) != 1 else parts[0]
        elif path == "duckdb":
            table = self.duck.execute(sql).to_arrow_table()
        elif path == "flight_ceiling" and self.ceiling is not None:
            table = self.ceiling.do_get(flight.Ticket(b"lineitem")).read_all()
        else:
            raise ValueError(f"unknown path {path}")
        return table, time.perf_counter() - started

    def run(self, path, sql):
        table, seconds = self.fetch(path, sql)
        return {"seconds": seconds, "rows": table.num_rows, "bytes": table.nbytes}

    def check(self, sql, order, path="adbc"):
        """Whether `path`'s answer to `sql` is DuckDB's."""
        got, _ = self.fetch(path, sql)
        want = self.duck.execute(sql).to_arrow_table()
        reply = {"gateway_rows": got.num_rows, "duckdb_rows": want.num_rows}
        if got.num_rows != want.num_rows or got.num_columns != want.num_columns:
            return {
                **reply,
                "ok": False,
                "detail": f"shape {got.num_rows}x{got.num_columns} vs "
                f"{want.num_rows}x{want.num_columns}",
            }
        if got.num_rows > LARGE_RESULT_ROWS:
            # Millions of rows as Python tuples, per path, would not fit in memory.
            mismatch = first_mismatch([fingerprint(got)], [fingerprint(want)])
            if mismatch is None:
                return {**reply, "ok": True, "detail": ""}
            return {**reply, "ok": False, "detail": f"column fingerprints: {mismatch}"}
        got_rows = [tuple(normal(v) for v in row.values()) for row in got.to_pylist()]
        want_rows = [tuple(normal(v) for v in row.values()) for row in want.to_pylist()]
        mismatch = first_mismatch(got_rows, want_rows)
        if mismatch is not None and not order:
            mismatch = first_mismatch(sorted(got_rows, key=key), sorted(want_rows, key=key))
        elif mismatch is not None:
            # Rows tied on the ORDER BY keys may come in any order: accept the same rows
            # in another order, report anything else.
            if first_mismatch(sorted(got_rows, key=key), sorted(want_rows, key=key)) is None:
                mismatch = None
        if mismatch is None:
            return {**reply, "ok": True, "detail": ""}
        return {**reply, "ok": False, "detail": mismatch}


def normal(value):
    """Values compared across engines: decimals and integers as floats, dates as text."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


# Above this many rows an answer is checked by its columns' fingerprints, not row by row.
LARGE_RESULT_ROWS = 100_000


def fingerprint(table):
    """Per column, in order: its null count, then the sum of its values (numbers; dates
    and times as their integer encoding) or the total length and the least and greatest
    value (text). Independent of row order; no row becomes a Python object."""
    import pyarrow.compute as pc

    out = []
    for column in table.columns:
        kind = column.type
        out.append(float(column.null_count))
        if pyarrow.types.is_date32(kind):
            column, kind = column.cast(pyarrow.int32()), pyarrow.int32()
        elif pyarrow.types.is_date64(kind) or pyarrow.types.is_timestamp(kind):
            column, kind = column.cast(pyarrow.int64()), pyarrow.int64()
        if (pyarrow.types.is_integer(kind) or pyarrow.types.is_floating(kind)
                or pyarrow.types.is_decimal(kind)):
            out.append(float(pc.sum(column.cast(pyarrow.float64())).as_py() or 0.0))
        elif pyarrow.types.is_string(kind) or pyarrow.types.is_large_string(kind) or str(kind) == "string_view":
            text = column.cast(pyarrow.large_string())
            out.append(float(pc.sum(pc.utf8_length(text)).as_py() or 0))
            extremes = pc.min_max(text).as_py()
            out.extend([extremes["min"], extremes["max"]])
    return tuple(out)


def key(row):
    return tuple((v is None, str(type(v)), v if v is not None else 0) for v in row)


def close(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-2)
    return a == b


def first_mismatch(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        if len(g) != len(w) or not all(close(a, b) for a, b in zip(g, w)):
            return f"row {i}: {g!r} vs duckdb {w!r}"
    return None


def versions():
    return {
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__,
        "adbc_driver_flightsql": adbc_driver_flightsql.__version__,
        **{name: _installed(name) for name in ("pysail", "roapi", "tpchgen-cli")},
    }


def _installed(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--data", required=True, help="root of the TPC-H data directories")
    parser.add_argument("--tables", required=True, help="JSON list of {product, name}")
    parser.add_argument("--peer", action="append", default=[], help="NAME=HOST:PORT of a peer Flight SQL server")
    parser.add_argument("--ceiling", help="HOST:PORT of flight_ceiling.py (path flight_ceiling)")
    args = parser.parse_args()
    peers = dict(p.split("=", 1) for p in args.peer)
    paths = Paths(args.addr, args.token, args.data, json.loads(args.tables), peers, args.ceiling)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            op = request["op"]
            if op == "quit":
                break
            if op == "versions":
                reply = versions()
            elif op == "run":
                reply = paths.run(request["path"], request["sql"])
            elif op == "check":
                reply = paths.check(request["sql"], request.get("order", True), request.get("path", "adbc"))
            else:
                reply = {"error": f"unknown op {op}"}
        except Exception as e:  # reported to the harness, which fails the run
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
