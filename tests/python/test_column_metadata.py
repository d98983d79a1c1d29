"""Flight SQL column metadata (`ARROW:FLIGHT:SQL:*`) on result schemas, as JDBC's
ResultSetMetaData and BI tools' column panels read it: the table a column comes from
(none for computed columns), its SQL type name, and that it is read-only."""

from __future__ import annotations

import pyarrow.flight as flight

from mesh_helpers import command_statement_query

KEY = "ARROW:FLIGHT:SQL:"


def _metadata(field) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (field.metadata or {}).items() if k.decode().startswith(KEY)}


def test_flight_info_schemas_describe_their_columns(flight_client):
    sql = ("SELECT v.region, c.amount, count(*) AS n FROM clinical.encounters.visits v "
           "JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id GROUP BY v.region, c.amount LIMIT 1")
    info = flight_client.get_flight_info(flight.FlightDescriptor.for_command(command_statement_query(sql)))
    region = _metadata(info.schema.field("region"))
    assert (region[KEY + "CATALOG_NAME"], region[KEY + "DB_SCHEMA_NAME"], region[KEY + "TABLE_NAME"]) == (
        "clinical", "encounters", "visits")
    assert region[KEY + "TYPE_NAME"] == "VARCHAR" and region[KEY + "IS_READ_ONLY"] == "1"
    amount = _metadata(info.schema.field("amount"))
    assert amount[KEY + "TABLE_NAME"] == "claims"
    n = _metadata(info.schema.field("n"))
    assert KEY + "TABLE_NAME" not in n, "a computed column comes from no table"
    assert n[KEY + "TYPE_NAME"] == "BIGINT"
    # The rows still arrive as before.
    table = flight_client.do_get(info.endpoints[0].ticket).read_all()
    assert table.column_names == ["region", "amount", "n"]
