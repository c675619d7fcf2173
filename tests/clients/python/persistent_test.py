"""Drives persistent subscriptions of a running `annals serve` through the Python `kurrentdbclient`.

Usage: persistent_test.py URL   (e.g. kurrentdb://127.0.0.1:2113?tls=false)
Exits 0 when every check passed; raises (non-zero exit) at the first one that did not.
Covers: create on a stream and on $all, two competing consumers, ack, nack retry and park,
parking after the last retry, replaying parked events, info, list, update, delete.
"""

import json
import os
import sys
import threading
import time
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import AlreadyExistsError, NotFoundError


def event(n):
    return NewEvent(type="Numbered", data=json.dumps({"n": n}).encode(), metadata=b"{}")


def number(recorded):
    return json.loads(recorded.data)["n"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def main(url):
    client = KurrentDBClient(uri=url)
    stream = f"task-{uuid.uuid4().hex}"

    client.create_subscription_to_stream("workers", stream, consumer_strategy="RoundRobin")
    try:
        client.create_subscription_to_stream("workers", stream)
        check(False, "creating a group twice fails")
    except AlreadyExistsError:
        check(True, "creating a group twice fails with AlreadyExistsError")

    # Two competing consumers, connected before the events exist: every event reaches exactly
    # one of them, and round robin gives each a share.
    a = client.read_subscription_to_stream("workers", stream)
    b = client.read_subscription_to_stream("workers", stream)
    seen = {"a": [], "b": []}
    lock = threading.Lock()

    def consume(name, sub):
        try:
            for e in sub:
                sub.ack(e)
                with lock:
                    seen[name].append(number(e))
        except Exception:  # stopped from the main thread
            pass

    threads = [
        threading.Thread(target=consume, args=("a", a), daemon=True),
        threading.Thread(target=consume, args=("b", b), daemon=True),
    ]
    for t in threads:
        t.start()
    client.append_to_stream(stream, current_version=StreamState.ANY, events=[event(n) for n in range(6)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if len(seen["a"]) + len(seen["b"]) >= 6:
                break
        time.sleep(0.05)
    time.sleep(0.3)  # a duplicate would arrive now
    with lock:
        both = seen["a"] + seen["b"]
        check(sorted(both) == list(range(6)), f"each event once across two consumers ({seen})")
        check(seen["a"] and seen["b"], f"round robin gives each consumer a share ({seen})")
    info = client.get_subscription_info("workers", stream)
    check(info.group_name == "workers", "info names the group")
    check(info.event_source == stream, "info names the stream")
    check(info.consumer_strategy == "RoundRobin", f"info shows the strategy ({info.consumer_strategy})")
    check(len(info.connections) == 2, f"info lists both consumers ({len(info.connections)})")
    a.stop()
    b.stop()
    for t in threads:
        t.join(timeout=5)

    # Nacks: retry until the last retry parks it; park at once; replay brings both back.
    jobs = f"job-{uuid.uuid4().hex}"
    client.append_to_stream(jobs, current_version=StreamState.ANY, events=[event(0), event(1)])
    client.create_subscription_to_stream("g", jobs, max_retry_count=1)
    sub = client.read_subscription_to_stream("g", jobs)
    retries = []
    parked_at_once = False
    while len(retries) < 2 or not parked_at_once:
        e = next(sub)
        if number(e) == 0:
            retries.append(e.retry_count)
            sub.nack(e, "retry")
        else:
            check(not parked_at_once, "a parked event is not delivered again")
            parked_at_once = True
            sub.nack(e, "park")
    check(retries == [0, 1], f"a retried event comes back with its retry count ({retries})")
    info = None
    for _ in range(50):
        info = client.get_subscription_info("g", jobs)
        if info.parked_message_count == 2:
            break
        time.sleep(0.1)
    check(info.parked_message_count == 2, f"two events parked ({info.parked_message_count})")
    client.replay_parked_events("g", jobs)
    replayed = []
    while len(replayed) < 2:
        e = next(sub)
        sub.ack(e)
        replayed.append(number(e))
    check(replayed == [0, 1], f"parked events replay in order ({replayed})")
    sub.stop()

    # PinnedByCorrelation: each correlation id's events go to one consumer, across streams.
    tag = uuid.uuid4().hex
    corr_group = f"corr-{tag}"
    client.create_subscription_to_all(
        corr_group,
        filter_include=[f"corr{tag}-.*"],
        filter_by_stream_name=True,
        consumer_strategy="PinnedByCorrelation",
    )
    c1 = client.read_subscription_to_all(corr_group)
    c2 = client.read_subscription_to_all(corr_group)
    owners = {}
    olock = threading.Lock()

    def consume_corr(name, sub):
        try:
            for e in sub:
                sub.ack(e)
                corr = json.loads(e.metadata)["$correlationId"]
                with olock:
                    owners.setdefault(corr, set()).add(name)
        except Exception:  # stopped from the main thread
            pass

    corr_threads = [
        threading.Thread(target=consume_corr, args=("c1", c1), daemon=True),
        threading.Thread(target=consume_corr, args=("c2", c2), daemon=True),
    ]
    for t in corr_threads:
        t.start()
    for s_i in range(4):
        client.append_to_stream(
            f"corr{tag}-{s_i}",
            current_version=StreamState.ANY,
            events=[
                NewEvent(
                    type="Numbered",
                    data=json.dumps({"n": n}).encode(),
                    metadata=json.dumps({"$correlationId": f"c{n % 2}"}).encode(),
                )
                for n in range(4)
            ],
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with olock:
            if len(owners) == 2:
                break
        time.sleep(0.05)
    time.sleep(0.5)
    with olock:
        check(
            len(owners) == 2 and all(len(v) == 1 for v in owners.values()),
            f"PinnedByCorrelation keeps each correlation id on one consumer ({owners})",
        )
    c1.stop()
    c2.stop()

    # $all with a filter, update, list, delete.
    group = f"all-{uuid.uuid4().hex}"
    client.create_subscription_to_all(group, filter_include=[r"task-.*"], filter_by_stream_name=True)
    s = client.read_subscription_to_all(group)
    e = next(s)
    check(e.stream_name.startswith("task-"), f"the $all group filters by stream ({e.stream_name})")
    s.ack(e)
    s.stop()
    client.update_subscription_to_stream("g", jobs, max_retry_count=7)
    check(client.get_subscription_info("g", jobs).max_retry_count == 7, "update changes settings")
    names = {(i.event_source, i.group_name) for i in client.list_subscriptions()}
    check((stream, "workers") in names and ("$all", group) in names, "list shows every group")
    check(
        [i.group_name for i in client.list_subscriptions_to_stream(jobs)] == ["g"],
        "list for one stream",
    )
    client.delete_subscription("g", jobs)
    try:
        client.get_subscription_info("g", jobs)
        check(False, "a deleted group is gone")
    except NotFoundError:
        check(True, "a deleted group is gone (NotFoundError)")

    print("all python persistent subscription checks passed")


if __name__ == "__main__":
    # Consumers still reading on their threads would keep the interpreter from exiting: leave
    # with the outcome at once.
    code = 0
    try:
        main(sys.argv[1])
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
