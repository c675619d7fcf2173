// Drives a running `annals serve` through the public API of the Node `@kurrent/kurrentdb-client`.
// Usage: node client_test.mjs URL   (e.g. kurrentdb://127.0.0.1:2113?tls=false)
// Exits 0 when every check passed; exits 1 at the first one that did not.

import { randomUUID } from "node:crypto";
import {
  ANY,
  BACKWARDS,
  END,
  FORWARDS,
  KurrentDBClient,
  NO_STREAM,
  START,
  STREAM_EXISTS,
  StreamDeletedError,
  StreamNotFoundError,
  UnknownError,
  WrongExpectedVersionError,
  jsonEvent,
  streamNameFilter,
} from "@kurrent/kurrentdb-client";

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

async function expectError(promise, type, what) {
  try {
    await promise;
  } catch (e) {
    check(e instanceof type, `${what} (${e.constructor.name}: ${e.message})`);
    return;
  }
  throw new Error(`check failed: ${what}: no error`);
}

async function collect(iterable, max = Infinity) {
  const out = [];
  for await (const e of iterable) {
    out.push(e);
    if (out.length >= max) break;
  }
  return out;
}

async function main(url) {
  const client = KurrentDBClient.connectionString(url);
  const stream = `order-${randomUUID()}`;
  const ev = (type, n) => jsonEvent({ type, data: { n } });

  const first = ev("OrderPlaced", 1);
  const r1 = await client.appendToStream(stream, first, { streamState: NO_STREAM });
  check(r1.success && r1.nextExpectedRevision === 0n, "append with no_stream answers revision 0");
  const r2 = await client.appendToStream(stream, [ev("ItemAdded", 2), ev("ItemAdded", 3)], { streamState: 0n });
  check(r2.nextExpectedRevision === 2n, "append at exact revision 0 answers revision 2");
  check(r2.position.commit > r1.position.commit, "a later append has a later position");
  await client.appendToStream(stream, ev("Paid", 4), { streamState: STREAM_EXISTS });
  await client.appendToStream(stream, ev("Shipped", 5), { streamState: ANY });

  await expectError(
    client.appendToStream(stream, ev("Late", 6), { streamState: 1n }),
    WrongExpectedVersionError,
    "a stale revision is WrongExpectedVersionError",
  );

  const events = await collect(client.readStream(stream, { direction: FORWARDS, fromRevision: START }));
  check(
    JSON.stringify(events.map((e) => e.event.type)) ===
      JSON.stringify(["OrderPlaced", "ItemAdded", "ItemAdded", "Paid", "Shipped"]),
    "read forwards returns every event in order",
  );
  check(events[0].event.id === first.id, "event ids round-trip");
  check(events[2].event.data.n === 3, "data round-trips");
  const back = await collect(client.readStream(stream, { direction: BACKWARDS, fromRevision: END, maxCount: 2 }));
  check(back.map((e) => e.event.revision).join(",") === "4,3", "read backwards with a count");

  await expectError(
    collect(client.readStream(`missing-${randomUUID()}`)),
    StreamNotFoundError,
    "a missing stream is StreamNotFoundError",
  );

  const filter = streamNameFilter({ prefixes: [stream] });
  const all = await collect(client.readAll({ fromPosition: START, direction: FORWARDS, filter }));
  check(all.filter((e) => e.event).map((e) => e.event.id).join() === events.map((e) => e.event.id).join(),
    "$all filtered by stream prefix");

  const sub = client.subscribeToAll({ fromPosition: START, filter });
  const seen = [];
  let live = null;
  for await (const e of sub) {
    if (!e.event) continue;
    seen.push(e.event.id);
    if (seen.length === events.length) {
      live = ev("Delivered", 6);
      await client.appendToStream(stream, live, { streamState: 4n });
    }
    if (seen.length === events.length + 1) break;
  }
  await sub.unsubscribe();
  check(seen.slice(0, events.length).join() === events.map((e) => e.event.id).join(), "subscription catches up");
  check(seen[events.length] === live.id, "subscription then delivers the live event");

  await client.setStreamMetadata(stream, { maxCount: 100, custom: { owner: "node" } });
  const meta = await client.getStreamMetadata(stream);
  check(meta.metadata.maxCount === 100, "stream metadata round-trips");

  await client.deleteStream(stream);
  await expectError(collect(client.readStream(stream)), StreamNotFoundError, "a soft-deleted stream reads as not found");

  const other = `gone-${randomUUID()}`;
  await client.appendToStream(other, ev("X", 1));
  await client.tombstoneStream(other);
  await expectError(client.appendToStream(other, ev("Y", 2)), StreamDeletedError, "a tombstoned stream is StreamDeletedError");

  // $ce- streams, served from the index: link records with dense revisions, or resolved.
  const cat = `node${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  await client.appendToStream(`${cat}-1`, [ev("Placed", 1), ev("Paid", 2)]);
  await client.appendToStream(`${cat}-2`, ev("Placed", 3));
  const links = await collect(client.readStream(`$ce-${cat}`));
  check(
    links.map((e) => `${e.event.type} ${e.event.streamId} ${e.event.revision} ${Buffer.from(e.event.data).toString()}`).join()
      === [`$> $ce-${cat} 0 0@${cat}-1`, `$> $ce-${cat} 1 1@${cat}-1`, `$> $ce-${cat} 2 0@${cat}-2`].join(),
    "a $ce- stream reads as link records with dense revisions",
  );
  const resolved = await collect(client.readStream(`$ce-${cat}`, { resolveLinkTos: true, direction: BACKWARDS, fromRevision: END }));
  check(
    resolved.map((e) => `${e.event.streamId} ${e.event.revision} ${e.link.revision}`).join()
      === [`${cat}-2 0 2`, `${cat}-1 1 1`, `${cat}-1 0 0`].join(),
    "a $ce- stream read backwards resolves its links",
  );
  // A subscription to a $ce- stream, resolving and not; a $et- stream read resolved.
  const ceSub = client.subscribeToStream(`$ce-${cat}`, { fromRevision: START, resolveLinkTos: true });
  const subscribed = await collect(ceSub, 3);
  await ceSub.unsubscribe();
  check(
    subscribed.map((e) => `${e.event.streamId} ${e.event.revision} ${e.link.revision}`).join()
      === [`${cat}-1 0 0`, `${cat}-1 1 1`, `${cat}-2 0 2`].join(),
    "a $ce- subscription resolves its links",
  );
  const rawSub = client.subscribeToStream(`$ce-${cat}`, { fromRevision: START });
  const raw = await collect(rawSub, 3);
  await rawSub.unsubscribe();
  check(raw.every((e) => e.event.type === "$>" && e.event.streamId === `$ce-${cat}`), "a $ce- subscription without resolving gives the links");
  const et = `Et${cat}`;
  await client.appendToStream(`${cat}-2`, ev(et, 4));
  const byType = await collect(client.readStream(`$et-${et}`, { resolveLinkTos: true }));
  check(
    byType.length === 1 && byType[0].event.type === et && byType[0].link.streamId === `$et-${et}` && byType[0].link.revision === 0n,
    "a $et- stream reads resolved",
  );
  // An append to a `$ce-` stream is refused, through the client's own error (not a TypeError).
  await expectError(
    client.appendToStream(`$ce-${cat}`, jsonEvent({ type: "X", data: {} })),
    UnknownError,
    "an append to a $ce- stream is refused",
  );

  await client.dispose();
  console.log("all node client checks passed");
}

main(process.argv[2]).then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
