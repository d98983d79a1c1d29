"""Flight SQL sessions: options set once (`SetSessionOptions`) for the calls that follow,
named by the `arrow_flight_session_id` cookie.

ADBC's current catalog and schema go through them (with the driver's cookie
middleware on); raw pyarrow actions check the protocol's per-option errors, that a
session is its principal's alone, and that a closed session is gone.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.flight as flight
import pytest

import adbc_driver_manager as adm
from mesh_helpers import (
    SLOW_QUERY,
    _len_field,
    adbc_query,
    bearer,
    command_statement_query,
)

COOKIE_MIDDLEWARE = "adbc.flight.sql.rpc.with_cookie_middleware"
SESSION_OPTION = "adbc.flight.sql.session.option."
SESSION_OPTIONS = "adbc.flight.sql.session.options"


def session_conn(server, token):
    """An ADBC connection whose driver keeps the session cookie."""
    import adbc_driver_flightsql
    import adbc_driver_flightsql.dbapi

    opts = adbc_driver_flightsql.DatabaseOptions
    return adbc_driver_flightsql.dbapi.connect(
        server.uri,
        db_kwargs={opts.AUTHORIZATION_HEADER.value: bearer(token), COOKIE_MIDDLEWARE: "true"},
        autocommit=True,
    )


def set_session_options(conn, **options: str) -> None:
    """Sets session options through ADBC, one `SetSessionOptions` each, and reads them
    back with `GetSessionOptions`, setting again one the driver lost.

    The Go Flight client (arrow-go 18.8, inside adbc-driver-flightsql 1.13) hands a
    streaming call's headers to its cookie middleware from whichever finishes first of
    the read that ends the stream and a goroutine watching the stream's context; when
    the goroutine wins, the headers (and the new session cookie) are dropped. The
    server answered; the client forgot. Reading the options back makes a test of the
    server independent of that race.
    """
    for name, value in options.items():
        for _ in range(3):
            conn.adbc_connection.set_options(**{SESSION_OPTION + name: value})
            held = json.loads(conn.adbc_connection.get_option(SESSION_OPTIONS))
            if held.get(name) == value:
                break
        else:
            raise AssertionError(f"session option {name} not kept: {held}")


def test_adbc_current_catalog_and_schema_resolve_short_names(server, admin_token, oracle):
    conn = session_conn(server, admin_token)
    try:
        conn.adbc_connection.set_options(**{"adbc.connection.catalog": "clinical"})
        assert conn.adbc_current_catalog == "clinical"
        n = adbc_query(conn, "SELECT count(*) AS n FROM encounters.visits").column("n")[0].as_py()
        assert n == oracle.count("clinical.encounters.visits")
        conn.adbc_connection.set_options(**{"adbc.connection.db_schema": "labs"})
        assert conn.adbc_current_db_schema == "labs"
        n = adbc_query(conn, "SELECT count(*) AS n FROM results").column("n")[0].as_py()
        assert n == oracle.count("clinical.labs.results")
        # Fully qualified names still mean what they say.
        n = adbc_query(conn, "SELECT count(*) AS n FROM billing.claims.claims").column("n")[0].as_py()
        assert n == oracle.count("billing.claims.claims")
    finally:
        conn.close()


def test_a_session_catalog_grants_nothing(server, mint):
    cara = mint("--sub", "cara", "--role", "billing")
    conn = session_conn(server, cara)
    try:
        conn.adbc_connection.set_options(**{"adbc.connection.catalog": "patients"})
        with pytest.raises(adm.Error) as hidden:
            adbc_query(conn, "SELECT * FROM registry.patients")
        assert hidden.value.status_code == adm.AdbcStatusCode.NOT_FOUND
        assert "table 'patients.registry.patients' not found" in str(hidden.value)
    finally:
        conn.close()


def test_a_session_timeout_applies_to_its_queries(server, admin_token):
    conn = session_conn(server, admin_token)
    try:
        conn.adbc_connection.set_options(**{SESSION_OPTION + "timeout": "50ms"})
        with pytest.raises(adm.Error) as late:
            adbc_query(conn, SLOW_QUERY)
        assert late.value.status_code == adm.AdbcStatusCode.TIMEOUT, late.value
        assert adbc_query(conn, "SELECT 1 AS one").column("one").to_pylist() == [1]
    finally:
        conn.close()


# -- the protocol, with pyarrow and a cookie jar of our own ----------------------


class CookieJar(flight.ClientMiddlewareFactory):
    """Keeps the session cookie the server sets, and sends it back."""

    def __init__(self):
        self.cookie: str | None = None

    def start_call(self, info):
        return _CookieCall(self)


class _CookieCall(flight.ClientMiddleware):
    def __init__(self, jar: CookieJar):
        self.jar = jar

    def sending_headers(self):
        return {"cookie": self.jar.cookie} if self.jar.cookie else {}

    def received_headers(self, headers):
        for value in headers.get("set-cookie", []):
            pair = value.split(";", 1)[0]
            name, _, cookie = pair.partition("=")
            self.jar.cookie = pair if cookie else None


def _option(name: str, value: str | None) -> bytes:
    """A map entry of SetSessionOptionsRequest: {1: name, 2: SessionOptionValue}."""
    option_value = b"" if value is None else _len_field(1, value.encode())
    return _len_field(1, _len_field(1, name.encode()) + _len_field(2, option_value))


def _fields(data: bytes):
    """(field number, value) of a protobuf message's varint and length-delimited fields."""
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            length, i = _read_varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            raise ValueError(f"wire type {wire}")
        yield number, value


def _read_varint(data: bytes, i: int):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _map(result: bytes) -> dict:
    """A map<string, message> field 1 as {key: inner message bytes}."""
    out = {}
    for _, entry in _fields(result):
        fields = dict(_fields(entry))
        out[fields[1].decode()] = fields.get(2, b"")
    return out


class Session:
    def __init__(self, server, token):
        self.jar = CookieJar()
        self.client = flight.connect(server.uri, middleware=[self.jar])
        self.options = flight.FlightCallOptions(headers=[(b"authorization", bearer(token).encode())])

    def action(self, name: str, body: bytes = b"") -> bytes:
        return next(iter(self.client.do_action(flight.Action(name, body), self.options))).body.to_pybytes()

    def set(self, **options) -> dict:
        body = b"".join(_option(k, v) for k, v in options.items())
        errors = _map(self.action("SetSessionOptions", body))
        return {name: dict(_fields(error)).get(1, 0) for name, error in errors.items()}

    def get(self) -> dict:
        return {k: dict(_fields(v))[1].decode() for k, v in _map(self.action("GetSessionOptions")).items()}

    def count(self, sql: str) -> int:
        descriptor = flight.FlightDescriptor.for_command(command_statement_query(sql))
        info = self.client.get_flight_info(descriptor, self.options)
        return self.client.do_get(info.endpoints[0].ticket, self.options).read_all().column(0)[0].as_py()


def test_unknown_options_and_bad_values_fail_alone(server, admin_token):
    session = Session(server, admin_token)
    errors = session.set(catalog="billing", colour="blue", timeout="soon", max_staleness="1h")
    assert errors == {"colour": 1, "timeout": 2}  # INVALID_NAME, INVALID_VALUE
    assert session.jar.cookie and session.jar.cookie.startswith("arrow_flight_session_id=")
    assert session.get() == {"catalog": "billing", "max_staleness": "1h"}
    assert session.set(catalog=None) == {}
    assert session.get() == {"max_staleness": "1h"}


def test_a_session_is_its_principals_alone(server, admin_token, mint):
    mine = Session(server, admin_token)
    mine.set(catalog="reference", schema="regions")
    assert mine.count("SELECT count(*) FROM regions") > 0
    other = Session(server, mint("--sub", "mallory", "--role", "admin"))
    other.jar.cookie = mine.jar.cookie
    with pytest.raises(pa.ArrowKeyError, match="session is unknown or expired"):
        other.count("SELECT count(*) FROM regions")
    with pytest.raises(pa.ArrowKeyError, match="session is unknown or expired"):
        other.get()


def test_a_closed_session_is_gone_and_a_new_one_can_start(server, admin_token):
    session = Session(server, admin_token)
    session.set(catalog="reference", schema="regions")
    old = session.jar.cookie
    closed = dict(_fields(session.action("CloseSession")))
    assert closed.get(1) == 1  # CLOSED
    assert session.jar.cookie is None, "the cookie is cleared"
    session.jar.cookie = old
    with pytest.raises(pa.ArrowKeyError, match="session is unknown or expired"):
        session.count("SELECT count(*) FROM regions")
    # Setting options with the stale cookie starts a new session (as after expiry).
    assert session.set(catalog="reference", schema="regions") == {}
    assert session.jar.cookie and session.jar.cookie != old
    assert session.count("SELECT count(*) FROM regions") > 0


def test_short_names_are_held_to_the_freshness_bound(server, admin_token):
    """A table named through the session's catalog and schema is the product's table:
    the freshness bound holds for it as for its full name."""
    session = Session(server, admin_token)
    session.set(catalog="clinical", schema="labs", max_staleness="1ms")
    with pytest.raises(pa.ArrowException, match="staler") as refused:
        session.count("SELECT count(*) FROM results")
    assert "clinical.labs" in str(refused.value)
    session.set(max_staleness="3650days")
    assert session.count("SELECT count(*) FROM results") > 0


def test_list_actions_names_the_session_actions(flight_client):
    names = {a.type for a in flight_client.raw.list_actions(flight_client.options())}
    assert {"SetSessionOptions", "GetSessionOptions", "CloseSession", "CancelFlightInfo"} <= names
