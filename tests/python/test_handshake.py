"""The Flight handshake, as BI tools' drivers use it: a user name and a password, where
the password is the JWT. The answer carries the bearer token for the calls that follow;
meshgate stores no password and keeps no session."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from mesh_helpers import CLIENT_TIMEOUT_S, command_statement_query


def _connect(server) -> flight.FlightClient:
    return flight.connect(server.uri)


def _select_one(client: flight.FlightClient, header: tuple[bytes, bytes]) -> pa.Table:
    options = flight.FlightCallOptions(timeout=CLIENT_TIMEOUT_S, headers=[header])
    descriptor = flight.FlightDescriptor.for_command(command_statement_query("SELECT 1 AS one"))
    info = client.get_flight_info(descriptor, options)
    return client.do_get(info.endpoints[0].ticket, options).read_all()


def test_basic_credentials_with_the_token_as_password_return_the_bearer(server, admin_token):
    client = _connect(server)
    try:
        # The user name is ignored: the token alone says who calls.
        header = client.authenticate_basic_token("any name at all", admin_token)
        assert header == (b"authorization", f"Bearer {admin_token}".encode())
        assert _select_one(client, header).column("one").to_pylist() == [1]
    finally:
        client.close()


@pytest.mark.parametrize(
    "password",
    ["not-a-jwt", "", "tampered"],
    ids=["not a token", "empty", "bad signature"],
)
def test_wrong_credentials_are_unauthenticated(server, admin_token, password):
    if password == "tampered":
        password = admin_token[:-4] + ("AAAA" if not admin_token.endswith("AAAA") else "BBBB")
    client = _connect(server)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.authenticate_basic_token("ana", password)
    finally:
        client.close()


def test_basic_credentials_open_only_the_handshake(server, admin_token):
    """Every other call needs the bearer token: basic credentials are refused there."""
    import base64

    basic = base64.b64encode(f"ana:{admin_token}".encode()).decode()
    client = _connect(server)
    try:
        with pytest.raises(flight.FlightUnauthenticatedError):
            _select_one(client, (b"authorization", f"Basic {basic}".encode()))
    finally:
        client.close()


def test_an_empty_user_name_is_accepted(server, admin_token):
    client = _connect(server)
    try:
        header = client.authenticate_basic_token("", admin_token)
        assert header[1] == f"Bearer {admin_token}".encode()
    finally:
        client.close()


def test_unknown_actions_are_unimplemented(flight_client):
    with pytest.raises(pa.ArrowNotImplementedError, match="unknown action 'NoSuchAction'"):
        flight_client.do_action(flight.Action("NoSuchAction", b""))
