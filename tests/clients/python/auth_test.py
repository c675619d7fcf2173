"""Drives `annals serve --auth --admin-password changeit` over TLS through the Python `kurrentdbclient`.

Usage: auth_test.py PORT CA_FILE   (the server's certificate is for localhost, signed by CA_FILE)
Exits 0 when every check passed; raises (non-zero exit) at the first one that did not.
"""

import base64
import json
import ssl
import sys
import urllib.error
import urllib.request
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import AccessDeniedError, UnauthenticatedError


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def event(n):
    return NewEvent(type="Entry", data=json.dumps({"n": n}).encode(), metadata=b"{}")


def http(port, ca, method, path, user, password, body=None):
    """One HTTPS request with basic credentials; returns (status, parsed body)."""
    ctx = ssl.create_default_context(cafile=ca)
    req = urllib.request.Request(f"https://localhost:{port}{path}", method=method)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, context=ctx, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def main(port, ca):
    def client(user, password):
        return KurrentDBClient(
            uri=f"kurrentdb://{user}:{password}@localhost:{port}?tls=true&tlsCaFile={ca}"
        )

    admin = client("admin", "changeit")
    status, _ = http(port, ca, "POST", "/users", "admin", "changeit",
                     {"login": "writer", "password": "pw", "groups": ["writers"]})
    check(status == 200, "the admin creates a user over HTTP")
    status, _ = http(port, ca, "POST", "/users", "admin", "changeit",
                     {"login": "reader", "password": "pw", "groups": []})
    check(status == 200, "and another")

    stream = f"ledger-{uuid.uuid4().hex}"
    admin.append_to_stream(stream, current_version=StreamState.NO_STREAM, events=event(1))
    admin.set_stream_metadata(stream, metadata={"$acl": {"$w": ["writers"], "$r": ["$all"]}})

    writer = client("writer", "pw")
    reader = client("reader", "pw")
    writer.append_to_stream(stream, current_version=StreamState.ANY, events=event(2))
    check(len(writer.get_stream(stream)) == 2, "a user the access list names writes")

    try:
        reader.append_to_stream(stream, current_version=StreamState.ANY, events=event(3))
        raise AssertionError("a write the access list does not give succeeded")
    except AccessDeniedError:
        print("ok: a write the access list does not give is AccessDeniedError")
    check(len(admin.get_stream(stream)) == 2, "the refused append changed nothing")
    check(len(reader.get_stream(stream)) == 2, "the same user still reads where the list allows")

    try:
        list(reader.read_all(limit=1))
        raise AssertionError("reading $all without the right succeeded")
    except AccessDeniedError:
        print("ok: $all without the right is AccessDeniedError")
    check(len(list(admin.read_all(limit=1))) == 1, "the admin reads $all")

    # Subscription groups: operators manage them; any user lists them.
    try:
        writer.create_subscription_to_stream(group_name="g", stream_name=stream)
        raise AssertionError("a user outside $admins and $ops created a group")
    except AccessDeniedError:
        print("ok: creating a group needs $admins or $ops")
    admin.create_subscription_to_stream(group_name="g", stream_name=stream)
    check(len(writer.list_subscriptions()) == 1, "any user lists the groups")

    try:
        client("reader", "wrong").get_stream(stream)
        raise AssertionError("a wrong password was accepted")
    except UnauthenticatedError:
        print("ok: a wrong password is UnauthenticatedError")

    status, _ = http(port, ca, "POST", "/users/reader/disable", "admin", "changeit")
    check(status == 200, "the admin disables a user")
    try:
        reader.get_stream(stream)
        raise AssertionError("a disabled user was served")
    except UnauthenticatedError:
        print("ok: a disabled user is UnauthenticatedError")

    status, body = http(port, ca, "GET", "/users/writer", "writer", "pw")
    check(status == 200 and body["groups"] == ["writers"], "a user reads its own details")
    status, _ = http(port, ca, "GET", "/users/admin", "writer", "pw")
    check(status == 403, "but not another user's")
    status, _ = http(port, ca, "POST", "/users/writer/password", "writer", "pw",
                     {"currentPassword": "pw", "newPassword": "pw2"})
    check(status == 200, "a user changes its own password")
    try:
        writer.get_stream(stream)
        raise AssertionError("the old password still worked")
    except UnauthenticatedError:
        print("ok: the old password is refused at once")
    check(len(client("writer", "pw2").get_stream(stream)) == 2, "the new one works")
    print("all python auth checks passed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
