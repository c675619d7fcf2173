"""Drives a running `annals serve` through the public API of the Python `kurrentdbclient`.

Usage: client_test.py URL   (e.g. kurrentdb://127.0.0.1:2113?tls=false)
Exits 0 when every check passed; raises (non-zero exit) at the first one that did not.
"""

import json
import sys
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    FailedPreconditionError,
    NotFoundError,
    StreamIsDeletedError,
    WrongCurrentVersionError,
)


def event(kind, n):
    return NewEvent(type=kind, data=json.dumps({"n": n}).encode(), metadata=b"{}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def main(url):
    client = KurrentDBClient(uri=url)
    stream = f"order-{uuid.uuid4().hex}"

    # Append with no_stream, then exact revisions; several events go through BatchAppend.
    first = event("OrderPlaced", 1)
    pos1 = client.append_to_stream(stream, current_version=StreamState.NO_STREAM, events=first)
    check(pos1 > 0, f"append answers a commit position ({pos1})")
    more = [event("ItemAdded", 2), event("ItemAdded", 3)]
    pos2 = client.append_to_stream(stream, current_version=0, events=more)
    check(pos2 > pos1, "a later append has a later position")
    client.append_to_stream(stream, current_version=StreamState.EXISTS, events=event("Paid", 4))
    client.append_to_stream(stream, current_version=StreamState.ANY, events=event("Shipped", 5))

    # Wrong expected version.
    try:
        client.append_to_stream(stream, current_version=1, events=event("Late", 6))
        raise AssertionError("append with a stale revision succeeded")
    except WrongCurrentVersionError:
        print("ok: stale revision is WrongCurrentVersionError")
    try:
        client.append_to_stream(stream, current_version=StreamState.NO_STREAM, events=event("Again", 7))
        raise AssertionError("no_stream append to an existing stream succeeded")
    except WrongCurrentVersionError:
        print("ok: no_stream on an existing stream is WrongCurrentVersionError")

    # Idempotent retry: the same event id again changes nothing.
    client.append_to_stream(stream, current_version=0, events=more)
    recorded = client.get_stream(stream)
    check([e.type for e in recorded] == ["OrderPlaced", "ItemAdded", "ItemAdded", "Paid", "Shipped"],
          "read forwards returns every event once, in order")
    check([e.stream_position for e in recorded] == [0, 1, 2, 3, 4], "revisions are contiguous")
    check(recorded[0].id == first.id, "event ids round-trip")
    check(json.loads(recorded[2].data) == {"n": 3}, "data round-trips")
    backwards = client.get_stream(stream, backwards=True, limit=2)
    check([e.stream_position for e in backwards] == [4, 3], "read backwards with a limit")
    check(client.get_current_version(stream) == 4, "current version")

    # Missing stream.
    try:
        client.get_stream(f"missing-{uuid.uuid4().hex}")
        raise AssertionError("a missing stream was read")
    except NotFoundError:
        print("ok: missing stream is NotFoundError")

    # $all, filtered to this stream by prefix, and a catch-up subscription that goes live.
    all_events = list(client.read_all(filter_include=[stream], filter_by_stream_name=True, filter_by_prefix=True))
    check([e.id for e in all_events] == [e.id for e in recorded], "$all filtered by stream prefix")
    sub = client.subscribe_to_all(filter_include=[stream], filter_by_stream_name=True, filter_by_prefix=True)
    seen = []
    for e in sub:
        seen.append(e.id)
        if len(seen) == len(recorded):
            break
    check(seen == [e.id for e in recorded], "subscription catches up")
    live = event("Delivered", 8)
    client.append_to_stream(stream, current_version=4, events=live)
    for e in sub:
        check(e.id == live.id, "subscription delivers the live event next")
        break
    sub.stop()

    # Stream metadata.
    client.set_stream_metadata(stream, metadata={"$maxCount": 100, "owner": "py"})
    meta, _version = client.get_stream_metadata(stream)
    check(meta.get("owner") == "py" and meta.get("$maxCount") == 100, "stream metadata round-trips")

    # Soft delete, then tombstone.
    client.delete_stream(stream, current_version=5)
    try:
        client.get_stream(stream)
        raise AssertionError("a soft-deleted stream was read")
    except NotFoundError:
        print("ok: soft-deleted stream reads as NotFoundError")
    other = f"gone-{uuid.uuid4().hex}"
    client.append_to_stream(other, current_version=StreamState.ANY, events=event("X", 1))
    client.tombstone_stream(other, current_version=StreamState.ANY)
    try:
        client.append_to_stream(other, current_version=StreamState.ANY, events=event("Y", 2))
        raise AssertionError("append to a tombstoned stream succeeded")
    except (StreamIsDeletedError, FailedPreconditionError) as e:
        # The Append RPC's FAILED_PRECONDITION "... is deleted." surfaces as
        # FailedPreconditionError in this client version (BatchAppend's as StreamIsDeletedError).
        check("is deleted" in str(e), f"tombstoned stream is refused as deleted ({type(e).__name__})")

    deletes_as_kurrentdb_judges_them(client)
    tombstoned_metadata(client)
    system_events_in_all(client)

    # $ce- streams, served from the index: link records ("$>", data "revision@stream") with
    # dense revisions, or the events with their links when resolving.
    cat = f"py{uuid.uuid4().hex[:12]}"
    client.append_to_stream(f"{cat}-1", current_version=StreamState.ANY,
                            events=[event("Placed", 1), event("Paid", 2)])
    client.append_to_stream(f"{cat}-2", current_version=StreamState.ANY, events=event("Placed", 3))
    links = client.get_stream(f"$ce-{cat}")
    check([(e.type, e.stream_name, e.stream_position, e.data) for e in links]
          == [("$>", f"$ce-{cat}", 0, f"0@{cat}-1".encode()),
              ("$>", f"$ce-{cat}", 1, f"1@{cat}-1".encode()),
              ("$>", f"$ce-{cat}", 2, f"0@{cat}-2".encode())],
          "a $ce- stream reads as link records with dense revisions")
    resolved = client.get_stream(f"$ce-{cat}", resolve_links=True, backwards=True)
    check([(e.stream_name, e.stream_position, e.link.stream_position) for e in resolved]
          == [(f"{cat}-2", 0, 2), (f"{cat}-1", 1, 1), (f"{cat}-1", 0, 0)],
          "a $ce- stream read backwards resolves its links")
    # A subscription to a $ce- stream, resolving and not; a $et- stream read resolved.
    sub = client.subscribe_to_stream(f"$ce-{cat}", resolve_links=True)
    seen = []
    for e in sub:
        seen.append((e.stream_name, e.stream_position, e.link.stream_position if e.link else None))
        if len(seen) == 3:
            break
    sub.stop()
    check(seen == [(f"{cat}-1", 0, 0), (f"{cat}-1", 1, 1), (f"{cat}-2", 0, 2)],
          f"a $ce- subscription resolves its links ({seen})")
    sub = client.subscribe_to_stream(f"$ce-{cat}")
    raw = []
    for e in sub:
        raw.append((e.type, e.stream_name))
        if len(raw) == 3:
            break
    sub.stop()
    check(raw == [("$>", f"$ce-{cat}")] * 3, f"a $ce- subscription without resolving gives the links ({raw})")
    et = f"Et{cat}"
    client.append_to_stream(f"{cat}-2", current_version=StreamState.ANY, events=event(et, 4))
    by_type = client.get_stream(f"$et-{et}", resolve_links=True)
    check(len(by_type) == 1 and by_type[0].type == et and by_type[0].link.stream_name == f"$et-{et}",
          "a $et- stream reads resolved")
    refused = None
    try:
        client.append_to_stream(f"$ce-{cat}", current_version=StreamState.ANY, events=event("X", 1))
    except Exception as e:  # noqa: BLE001 - the client's error type for INVALID_ARGUMENT varies
        refused = e
    check(refused is not None and "read-only" in str(refused), f"an append to a $ce- stream is refused ({refused!r})")

    client.close()
    print("all python client checks passed")


def expect_error(kind, what, call):
    try:
        call()
    except kind as e:
        print(f"ok: {what} ({type(e).__name__})")
        return
    raise AssertionError(f"{what}: no {kind.__name__}")


def deletes_as_kurrentdb_judges_them(client):
    # Soft delete of a stream that never existed: not found, whatever the expected version.
    never = f"never-{uuid.uuid4().hex}"
    head = client.get_commit_position(filter_exclude=[])
    for expected in (StreamState.ANY, StreamState.NO_STREAM, StreamState.EXISTS, 0):
        expect_error(NotFoundError, f"delete of a stream that never existed, expecting {expected}",
                     lambda: client.delete_stream(never, current_version=expected))
    check(client.get_commit_position(filter_exclude=[]) == head, "the refused deletes wrote nothing")

    # A soft-deleted stream: deleted for stream_exists, restored by no_stream, revisions go on.
    stream = f"sd-{uuid.uuid4().hex}"
    client.append_to_stream(stream, current_version=StreamState.NO_STREAM, events=[event("A", 0), event("B", 1)])
    client.delete_stream(stream, current_version=1)
    expect_error(StreamIsDeletedError, "delete expecting stream_exists of a soft-deleted stream",
                 lambda: client.delete_stream(stream, current_version=StreamState.EXISTS))
    expect_error(WrongCurrentVersionError, "delete of a soft-deleted stream with a stale revision",
                 lambda: client.delete_stream(stream, current_version=0))
    client.delete_stream(stream, current_version=StreamState.ANY)
    client.delete_stream(stream, current_version=1)
    check(client.get_current_version(stream) == StreamState.NO_STREAM, "a soft-deleted stream has no version")
    client.append_to_stream(stream, current_version=StreamState.NO_STREAM, events=[event("C", 2)])
    check(client.get_current_version(stream) == 2, "no_stream restores a soft-deleted stream at the next revision")
    check([e.stream_position for e in client.get_stream(stream)] == [2], "only the new event reads back")
    client.delete_stream(stream, current_version=StreamState.EXISTS)
    expect_error(NotFoundError, "a stream deleted expecting stream_exists reads as not found",
                 lambda: client.get_stream(stream))


def tombstoned_metadata(client):
    stream = f"tm-{uuid.uuid4().hex}"
    client.append_to_stream(stream, current_version=StreamState.NO_STREAM, events=event("A", 0))
    client.set_stream_metadata(stream, metadata={"foo": "baz"}, current_version=StreamState.NO_STREAM)
    client.tombstone_stream(stream, current_version=StreamState.ANY)
    expect_error(StreamIsDeletedError, "metadata of a tombstoned stream reads as deleted",
                 lambda: client.get_stream_metadata(stream))
    # KurrentDB still takes metadata for a tombstoned stream; the stream stays deleted.
    client.set_stream_metadata(stream, metadata={"foo": "bar"}, current_version=0)
    client.set_stream_metadata(stream, metadata={"foo": "bar"}, current_version=StreamState.ANY)
    expect_error(StreamIsDeletedError, "and still does after metadata was written",
                 lambda: client.get_stream_metadata(stream))
    expect_error(StreamIsDeletedError, "the tombstoned stream itself stays deleted",
                 lambda: client.get_stream(stream))


def system_events_in_all(client):
    stream = f"sys-{uuid.uuid4().hex}"
    client.append_to_stream(stream, current_version=StreamState.NO_STREAM, events=event("A", 0))
    client.set_stream_metadata(stream, metadata={"owner": "py"})
    meta_stream = f"$${stream}"
    unfiltered = [e for e in client.read_all(filter_exclude=[]) if e.stream_name == meta_stream]
    check([e.type for e in unfiltered] == ["$metadata"], "$all without a filter shows the $metadata event")
    default = [e for e in client.read_all() if e.stream_name == meta_stream]
    check(default == [], "the default filter leaves system events out")
    sub = client.subscribe_to_all(filter_exclude=[])
    for e in sub:
        if e.stream_name == meta_stream:
            check(e.type == "$metadata", "an unfiltered $all subscription delivers it too")
            break
    sub.stop()
    head = client.get_commit_position()
    check(head > 0, "get_commit_position with the default filter")
    check(client.get_commit_position(filter_exclude=[".*"]) == 0,
          "get_commit_position with a filter that excludes everything is 0")


if __name__ == "__main__":
    main(sys.argv[1])
