"""The Flight ceiling of the performance harness: pyarrow's own Flight server, in its own
process, serving one table held in memory (strings as plain Utf8, as the gateway sends
them) to any DoGet. Reading it with pyarrow's Flight client measures what the transport
alone achieves on this machine, the bound a gateway's `SELECT *` is held to.

    python flight_ceiling.py --files 'DIR/*.parquet'

prints {"ready": true, "port": N, "rows": R, "bytes": B} once serving, and serves until
its standard input closes.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import threading

import pyarrow
import pyarrow.flight as flight
import pyarrow.parquet as pq


def plain(table: pyarrow.Table) -> pyarrow.Table:
    """`table` with string and binary views as plain Utf8 and Binary."""
    fields = []
    for field in table.schema:
        if pyarrow.types.is_string_view(field.type):
            field = field.with_type(pyarrow.string())
        elif pyarrow.types.is_binary_view(field.type):
            field = field.with_type(pyarrow.binary())
        fields.append(field)
    return table.cast(pyarrow.schema(fields))


class Server(flight.FlightServerBase):
    def __init__(self, table: pyarrow.Table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", required=True, help="glob of the Parquet files of the table")
    args = parser.parse_args()
    files = sorted(glob.glob(args.files))
    if not files:
        raise SystemExit(f"no files match {args.files}")
    # Batches of the gateway's size (8192 rows), so both streams carry as many messages.
    table = plain(pyarrow.concat_tables(pq.read_table(f) for f in files)).combine_chunks()
    table = pyarrow.Table.from_batches(table.to_batches(max_chunksize=8192))
    server = Server(table)
    threading.Thread(target=server.serve, daemon=True).start()
    print(json.dumps({"ready": True, "port": server.port, "rows": table.num_rows, "bytes": table.nbytes}), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
