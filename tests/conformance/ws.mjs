#!/usr/bin/env node
// GraphQL-over-WebSocket checks (graphql-transport-ws; optionally the legacy graphql-ws).
//
//   node ws.mjs ws://127.0.0.1:4000/graphql/ws --query '{ __typename }' \
//       --sub 'subscription { <one that completes> }' --long-sub 'subscription { <one that stays open> }' \
//       [--token JWT | TOKEN=JWT] [--expect-auth] [--init-timeout-ms MS] [--legacy] [--wait-ms MS]
//
// With a token, connection_init carries connectionParams {Authorization: 'Bearer <token>'}.
// --expect-auth     : connection_init without / with a bad token must close 4403
// --init-timeout-ms : the server's init timeout; a socket without connection_init must close 4408
// --legacy          : also check the legacy `graphql-ws` subprotocol (start/data/complete/stop)
// Prints `ok|FAIL <check> (detail)` per check, then `N passed, N failed`; exit 1 on any failure.
import WebSocket from 'ws';
import { createClient } from 'graphql-ws';
import { parseArgs, loopbackUrl, token as tokenArg, fail } from './args.mjs';

const args = parseArgs();
const url = loopbackUrl(args._[0] || process.env.GRAPHQL_WS_URL, 'WS URL');
const QUERY = args.query || '{ __typename }';
const SUB = args.sub || fail('--sub is required (a subscription that completes by itself)');
const LONG_SUB = args['long-sub'] || fail('--long-sub is required (a subscription that stays open)');
const TOKEN = tokenArg(args);
const WAIT = Number(args['wait-ms'] || 5000);
const TRANSPORT = 'graphql-transport-ws';
const LEGACY = 'graphql-ws';

const initPayload = (t = TOKEN) => (t ? { Authorization: `Bearer ${t}` } : {});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let passed = 0;
let failed = 0;
async function check(name, fn) {
  let outcome;
  try {
    outcome = await fn();
  } catch (e) {
    outcome = { pass: false, detail: `threw: ${e?.message || e}` };
  }
  if (outcome.pass) passed++; else failed++;
  console.log(`${outcome.pass ? 'ok  ' : 'FAIL'} ${name}${outcome.detail ? ` (${outcome.detail})` : ''}`);
}
const expect = (pass, detail) => ({ pass: !!pass, detail });

// ------------------------------------------------------------------ raw sockets
/** A raw socket: `opened`, `send`, `next(pred)`, `closed(ms)` → close event or null. */
function raw(protocols = [TRANSPORT], headers = undefined) {
  const ws = headers ? new WebSocket(url, { headers }) : new WebSocket(url, protocols);
  const inbox = [];
  let waiter = null;
  let close = null;
  const poke = () => { const w = waiter; waiter = null; w?.(); };
  ws.on('message', (data) => {
    let message;
    try { message = JSON.parse(String(data)); } catch { message = { type: '<not json>', raw: String(data) }; }
    inbox.push(message);
    poke();
  });
  ws.on('close', (code, reason) => { close = { code, reason: String(reason) }; poke(); });
  ws.on('error', () => {});
  const opened = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const wait = (ms) => new Promise((r) => { waiter = r; setTimeout(r, ms).unref(); });
  return {
    ws,
    opened,
    send: (m) => ws.send(typeof m === 'string' ? m : JSON.stringify(m)),
    async next(pred = () => true, ms = WAIT) {
      const deadline = Date.now() + ms;
      for (;;) {
        const i = inbox.findIndex(pred);
        if (i >= 0) return inbox.splice(i, 1)[0];
        if (close) throw new Error(`closed ${close.code} ${close.reason} while waiting for a message`);
        if (Date.now() >= deadline) throw new Error(`no message within ${ms} ms`);
        await wait(deadline - Date.now());
      }
    },
    async closed(ms = WAIT) {
      const deadline = Date.now() + ms;
      while (!close && Date.now() < deadline) await wait(deadline - Date.now());
      return close;
    },
    end: () => ws.terminate(),
  };
}

async function acked(protocols = [TRANSPORT], payload = initPayload()) {
  const c = raw(protocols);
  await c.opened;
  c.send({ type: 'connection_init', payload });
  await c.next((m) => m.type === 'connection_ack');
  return c;
}

async function expectClose(c, code) {
  const ev = await c.closed();
  c.end();
  if (!ev) return expect(false, `not closed within ${WAIT} ms, expected ${code}`);
  return expect(ev.code === code, `close ${ev.code} "${ev.reason}", expected ${code}`);
}

// ------------------------------------------------------------------ graphql-ws client
function client(t = TOKEN) {
  return createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams: initPayload(t),
    lazy: true,
    retryAttempts: 0,
    shouldRetry: () => false,
    connectionAckWaitTimeout: WAIT,
  });
}

/** Runs one operation; resolves { results, outcome } after `complete`, an error, `take` results or WAIT. */
function run(c, query, take = Infinity) {
  return new Promise((resolve) => {
    const results = [];
    const timer = setTimeout(() => { dispose(); resolve({ results, outcome: 'timeout' }); }, WAIT * 2);
    const dispose = c.subscribe({ query }, {
      next: (r) => { results.push(r); if (results.length >= take) { clearTimeout(timer); dispose(); resolve({ results, outcome: 'taken' }); } },
      error: (e) => { clearTimeout(timer); resolve({ results, outcome: `error ${e?.code || ''} ${e?.reason || e?.message || JSON.stringify(e)}` }); },
      complete: () => { clearTimeout(timer); resolve({ results, outcome: 'complete' }); },
    });
  });
}

console.log(`# GraphQL over WebSocket checks against ${url}${TOKEN ? ' with a bearer token' : ''}`);

await check('graphql-ws client: query', async () => {
  const c = client();
  try {
    const { results, outcome } = await run(c, QUERY);
    const [r] = results;
    return expect(outcome === 'complete' && results.length === 1 && r.data && !r.errors, `${outcome}: ${JSON.stringify(results).slice(0, 160)}`);
  } finally { await c.dispose(); }
});

await check('graphql-ws client: subscription completes', async () => {
  const c = client();
  try {
    const { results, outcome } = await run(c, SUB);
    const clean = results.every((r) => r.data && !r.errors);
    return expect(outcome === 'complete' && results.length > 0 && clean, `${outcome} after ${results.length} events: ${JSON.stringify(results).slice(0, 160)}`);
  } finally { await c.dispose(); }
});

await check('graphql-ws client: long subscription streams until disposed', async () => {
  const c = client();
  try {
    const { results, outcome } = await run(c, LONG_SUB, 2);
    return expect(outcome === 'taken' && results.every((r) => r.data && !r.errors), `${outcome} after ${results.length} events`);
  } finally { await c.dispose(); }
});

await check('selects subprotocol graphql-transport-ws', async () => {
  const c = raw();
  await c.opened;
  const selected = c.ws.protocol;
  c.end();
  return expect(selected === TRANSPORT, `selected "${selected}"`);
});

await check('unsupported subprotocol is refused (HTTP 4xx or close 4406)', async () => {
  const c = raw(undefined, { 'Sec-WebSocket-Protocol': 'not-a-graphql-protocol' });
  try {
    await c.opened;
  } catch (e) {
    return expect(/Unexpected server response: 4\d\d/.test(e.message), `handshake: ${e.message}`);
  }
  return expectClose(c, 4406);
});

await check('connection_init -> connection_ack; ping -> pong', async () => {
  const c = await acked();
  try {
    c.send({ type: 'ping', payload: { n: 1 } });
    const pong = await c.next((m) => m.type === 'pong');
    return expect(true, JSON.stringify(pong));
  } finally { c.end(); }
});

await check('query -> next + complete', async () => {
  const c = await acked();
  try {
    c.send({ id: 'q', type: 'subscribe', payload: { query: QUERY } });
    const first = await c.next((m) => m.id === 'q');
    const second = await c.next((m) => m.id === 'q');
    return expect(first.type === 'next' && first.payload?.data && second.type === 'complete', `${first.type}, ${second.type}`);
  } finally { c.end(); }
});

await check('invalid document -> error message, socket stays open', async () => {
  const c = await acked();
  try {
    c.send({ id: 'bad', type: 'subscribe', payload: { query: '{ __noSuchField_conformance }' } });
    const m = await c.next((x) => x.id === 'bad');
    c.send({ type: 'ping' });
    await c.next((x) => x.type === 'pong');
    return expect(m.type === 'error' && Array.isArray(m.payload) && m.payload.length > 0, `${m.type}: ${JSON.stringify(m.payload).slice(0, 120)}`);
  } finally { c.end(); }
});

await check('client complete stops a subscription', async () => {
  const c = await acked();
  try {
    c.send({ id: 'long', type: 'subscribe', payload: { query: LONG_SUB } });
    const first = await c.next((m) => m.id === 'long');
    if (first.type !== 'next') return expect(false, `first message ${first.type}`);
    c.send({ id: 'long', type: 'complete' });
    // a later query is a barrier: whatever of "long" was in flight arrives before its result
    c.send({ id: 'barrier', type: 'subscribe', payload: { query: QUERY } });
    await c.next((m) => m.id === 'barrier' && m.type === 'complete');
    while (true) { try { await c.next((m) => m.id === 'long', 0); } catch { break; } }
    await sleep(500);
    let late = 0;
    while (true) { try { await c.next((m) => m.id === 'long', 0); late++; } catch { break; } }
    return expect(late === 0, `${late} messages for "long" after complete`);
  } finally { c.end(); }
});

await check('unknown message type closes 4400', async () => {
  const c = await acked();
  c.send({ type: 'no_such_type' });
  return expectClose(c, 4400);
});

await check('invalid JSON closes 4400', async () => {
  const c = await acked();
  c.send('{this is not json');
  return expectClose(c, 4400);
});

await check('subscribe before connection_init closes 4401', async () => {
  const c = raw();
  await c.opened;
  c.send({ id: 'early', type: 'subscribe', payload: { query: QUERY } });
  return expectClose(c, 4401);
});

await check('duplicate connection_init closes 4429', async () => {
  const c = await acked();
  c.send({ type: 'connection_init', payload: initPayload() });
  return expectClose(c, 4429);
});

await check('duplicate subscription id closes 4409', async () => {
  const c = await acked();
  c.send({ id: 'twice', type: 'subscribe', payload: { query: LONG_SUB } });
  c.send({ id: 'twice', type: 'subscribe', payload: { query: LONG_SUB } });
  return expectClose(c, 4409);
});

if (args['expect-auth']) {
  for (const [name, payload] of [['no token', {}], ['a bad token', initPayload('not.a.valid.token')]]) {
    await check(`connection_init with ${name} closes 4403`, async () => {
      const c = raw();
      await c.opened;
      c.send({ type: 'connection_init', payload });
      return expectClose(c, 4403);
    });
  }
  await check('graphql-ws client without a token is refused', async () => {
    const c = client('');
    try {
      const { outcome } = await run(c, QUERY);
      return expect(/4403/.test(outcome), outcome);
    } finally { await c.dispose(); }
  });
}

if (args['init-timeout-ms']) {
  const ms = Number(args['init-timeout-ms']);
  await check(`no connection_init closes 4408 after ~${ms} ms`, async () => {
    const c = raw();
    await c.opened;
    const started = Date.now();
    const ev = await c.closed(ms + WAIT);
    c.end();
    const took = Date.now() - started;
    return expect(ev?.code === 4408 && took >= ms * 0.8, ev ? `close ${ev.code} "${ev.reason}" after ${took} ms` : 'never closed');
  });
}

if (args.legacy) {
  await check('legacy graphql-ws: query start -> data + complete', async () => {
    const c = await acked([LEGACY]);
    try {
      if (c.ws.protocol !== LEGACY) return expect(false, `selected "${c.ws.protocol}"`);
      c.send({ id: '1', type: 'start', payload: { query: QUERY } });
      const data = await c.next((m) => m.id === '1');
      const done = await c.next((m) => m.id === '1');
      return expect(data.type === 'data' && data.payload?.data && done.type === 'complete', `${data.type}, ${done.type}`);
    } finally { c.end(); }
  });
  await check('legacy graphql-ws: subscription data, stop', async () => {
    const c = await acked([LEGACY]);
    try {
      c.send({ id: '2', type: 'start', payload: { query: LONG_SUB } });
      const data = await c.next((m) => m.id === '2');
      c.send({ id: '2', type: 'stop' });
      c.send({ id: 'barrier', type: 'start', payload: { query: QUERY } });
      await c.next((m) => m.id === 'barrier' && m.type === 'complete');
      while (true) { try { await c.next((m) => m.id === '2', 0); } catch { break; } }
      await sleep(300);
      let late = 0;
      while (true) { try { await c.next((m) => m.id === '2', 0); late++; } catch { break; } }
      return expect(data.type === 'data' && data.payload?.data && late === 0, `${data.type}, ${late} late messages`);
    } finally { c.end(); }
  });
  await check('legacy graphql-ws: connection_terminate closes', async () => {
    const c = await acked([LEGACY]);
    c.send({ type: 'connection_terminate' });
    const ev = await c.closed();
    c.end();
    return expect(ev, ev ? `close ${ev.code}` : 'not closed');
  });
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
