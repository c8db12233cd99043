#!/usr/bin/env node
// GraphQL-over-HTTP audit: runs graphql-http's `serverAudits` against a loopback URL.
//
//   node audit.mjs http://127.0.0.1:4000/graphql [--token JWT]   (or TOKEN=JWT)
//
// One line per audit: `ok`, `warn` (a SHOULD failed), `error` (a MUST failed),
// `notice` (a MAY failed), with the reason when not ok; then a summary line
//   audits: N ok, N warn, N error, N notice
// Exit code 1 when any MUST audit failed or an audit could not run; warnings are allowed.
import { serverAudits } from 'graphql-http';
import { parseArgs, loopbackUrl, token } from './args.mjs';

const args = parseArgs();
const url = loopbackUrl(args._[0] || process.env.GRAPHQL_HTTP_URL, 'HTTP URL');
const bearer = token(args);
const timeoutMs = Number(args['timeout-ms'] || 10000);

const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers || {});
  if (bearer && !headers.has('authorization')) headers.set('authorization', `Bearer ${bearer}`);
  return fetch(input, { ...init, headers, signal: AbortSignal.timeout(timeoutMs) });
};

const audits = serverAudits({ url, fetchFn });
console.log(`# graphql-http serverAudits (${audits.length}) against ${url}${bearer ? ' with a bearer token' : ''}`);

const counts = { ok: 0, warn: 0, error: 0, notice: 0 };
let fatal = 0;
for (const audit of audits) {
  let result;
  try {
    result = await audit.fn();
  } catch (e) {
    fatal++;
    result = { id: audit.id, name: audit.name, status: 'error', reason: `could not run: ${e?.cause?.code || ''} ${e?.message || e}`.trim() };
  }
  counts[result.status] = (counts[result.status] || 0) + 1;
  const reason = result.status === 'ok' ? '' : ` -- ${String(result.reason).replace(/\s+/g, ' ').slice(0, 240)}`;
  console.log(`${result.status.padEnd(6)} ${result.id} ${result.name}${reason}`);
}

console.log(`audits: ${counts.ok} ok, ${counts.warn} warn, ${counts.error} error, ${counts.notice} notice${fatal ? ` (${fatal} could not run)` : ''}`);
if (counts.warn) console.log('(warn = a SHOULD audit failed; allowed)');
process.exit(counts.error > 0 ? 1 : 0);
