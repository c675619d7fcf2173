// Drives persistent subscriptions of a running `annals serve` through the Node
// `@kurrent/kurrentdb-client`.
// Usage: node persistent_test.mjs URL   (e.g. kurrentdb://127.0.0.1:2113?tls=false)
// Exits 0 when every check passed; exits 1 at the first one that did not.
// Covers: create on a stream and on $all, two competing consumers, ack, nack retry, park and
// skip, parking after the last retry, replaying parked events, info, list, update, delete.

import { randomUUID } from "node:crypto";
import {
  KurrentDBClient,
  PARK,
  RETRY,
  ROUND_ROBIN,
  SKIP,
  START,
  jsonEvent,
  persistentSubscriptionToAllSettingsFromDefaults,
  persistentSubscriptionToStreamSettingsFromDefaults,
  streamNameFilter,
} from "@kurrent/kurrentdb-client";

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

const events = (from, count) =>
  Array.from({ length: count }, (_, i) => jsonEvent({ type: "Numbered", data: { n: from + i } }));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// Resolves to the next event of a subscription, or rejects after `ms`.
function nextOf(iterator, ms = 10000) {
  return Promise.race([
    iterator.next().then((r) => {
      if (r.done) throw new Error("subscription ended");
      return r.value;
    }),
    sleep(ms).then(() => {
      throw new Error(`no event within ${ms} ms`);
    }),
  ]);
}

async function main(url) {
  const client = KurrentDBClient.connectionString(url);
  const stream = `task-${randomUUID()}`;

  // Two competing consumers, connected before the events exist.
  await client.createPersistentSubscriptionToStream(
    stream,
    "workers",
    persistentSubscriptionToStreamSettingsFromDefaults({ consumerStrategyName: ROUND_ROBIN }),
  );
  let twice = null;
  try {
    await client.createPersistentSubscriptionToStream(
      stream,
      "workers",
      persistentSubscriptionToStreamSettingsFromDefaults(),
    );
  } catch (e) {
    twice = e;
  }
  check(twice !== null, `creating a group twice fails (${twice?.constructor?.name})`);

  const seen = { a: [], b: [] };
  const subs = {
    a: client.subscribeToPersistentSubscriptionToStream(stream, "workers"),
    b: client.subscribeToPersistentSubscriptionToStream(stream, "workers"),
  };
  const loops = Object.entries(subs).map(async ([name, sub]) => {
    try {
      for await (const e of sub) {
        await sub.ack(e);
        seen[name].push(Number(e.event.data.n));
      }
    } catch {
      // unsubscribed
    }
  });
  await sleep(300);
  await client.appendToStream(stream, events(0, 6));
  for (let i = 0; i < 100 && seen.a.length + seen.b.length < 6; i++) await sleep(100);
  await sleep(300); // a duplicate would arrive now
  const both = [...seen.a, ...seen.b].sort((x, y) => x - y);
  check(JSON.stringify(both) === "[0,1,2,3,4,5]", `each event once across two consumers (${JSON.stringify(seen)})`);
  check(seen.a.length > 0 && seen.b.length > 0, "round robin gives each consumer a share");
  const info = await client.getPersistentSubscriptionToStreamInfo(stream, "workers");
  check(info.groupName === "workers" && info.eventSource === stream, "info names the group and stream");
  check(info.connections.length === 2, `info lists both consumers (${info.connections.length})`);
  check(info.settings.consumerStrategyName === ROUND_ROBIN, "info shows the strategy");
  await subs.a.unsubscribe();
  await subs.b.unsubscribe();
  await Promise.all(loops);

  // Nacks: retry until the last retry parks; park; skip. Replay brings the parked ones back.
  const jobs = `job-${randomUUID()}`;
  await client.appendToStream(jobs, events(0, 3));
  await client.createPersistentSubscriptionToStream(
    jobs,
    "g",
    persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START, maxRetryCount: 1 }),
  );
  const sub = client.subscribeToPersistentSubscriptionToStream(jobs, "g");
  const it = sub[Symbol.asyncIterator]();
  const retries = [];
  const once = new Set();
  while (retries.length < 2 || once.size < 2) {
    const e = await nextOf(it);
    const n = Number(e.event.data.n);
    if (n === 0) {
      retries.push(e.retryCount);
      await sub.nack(RETRY, "still failing", e);
    } else {
      check(!once.has(n), `event ${n} is not delivered again`);
      once.add(n);
      await sub.nack(n === 1 ? PARK : SKIP, "not now", e);
    }
  }
  check(JSON.stringify(retries) === "[0,1]", `a retried event comes back with its retry count (${retries})`);
  let parked = 0n;
  for (let i = 0; i < 50 && parked !== 2n; i++) {
    parked = (await client.getPersistentSubscriptionToStreamInfo(jobs, "g")).stats.parkedMessageCount;
    if (parked !== 2n) await sleep(100);
  }
  check(parked === 2n, `two events parked (${parked})`);
  await client.replayParkedMessagesToStream(jobs, "g");
  const replayed = [];
  while (replayed.length < 2) {
    const e = await nextOf(it);
    await sub.ack(e);
    replayed.push(Number(e.event.data.n));
  }
  check(JSON.stringify(replayed) === "[0,1]", `parked events replay in order (${replayed})`);
  await sub.unsubscribe();

  // $all with a filter; update; list; delete.
  const group = `all-${randomUUID()}`;
  await client.createPersistentSubscriptionToAll(
    group,
    persistentSubscriptionToAllSettingsFromDefaults({ startFrom: START }),
    { filter: streamNameFilter({ prefixes: ["job-"] }) },
  );
  const all = client.subscribeToPersistentSubscriptionToAll(group);
  const allIt = all[Symbol.asyncIterator]();
  const first = await nextOf(allIt);
  check(first.event.streamId.startsWith("job-"), `the $all group filters by stream (${first.event.streamId})`);
  await all.ack(first);
  await all.unsubscribe();

  await client.updatePersistentSubscriptionToStream(
    jobs,
    "g",
    persistentSubscriptionToStreamSettingsFromDefaults({ maxRetryCount: 7 }),
  );
  const updated = await client.getPersistentSubscriptionToStreamInfo(jobs, "g");
  check(updated.settings.maxRetryCount === 7, "update changes settings");
  const listed = (await client.listAllPersistentSubscriptions()).map((i) => `${i.eventSource}/${i.groupName}`);
  check(listed.includes(`${stream}/workers`) && listed.includes(`$all/${group}`), "list shows every group");
  const forJobs = await client.listPersistentSubscriptionsToStream(jobs);
  check(forJobs.length === 1 && forJobs[0].groupName === "g", "list for one stream");
  await client.deletePersistentSubscriptionToStream(jobs, "g");
  let gone = null;
  try {
    await client.getPersistentSubscriptionToStreamInfo(jobs, "g");
  } catch (e) {
    gone = e;
  }
  check(gone !== null, `a deleted group is gone (${gone?.constructor?.name})`);

  await client.dispose();
  console.log("all node persistent subscription checks passed");
}

main(process.argv[2]).then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
