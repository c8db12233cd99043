// Argument parsing and the loopback guard shared by audit.mjs and ws.mjs.

/** `--key value`, `--key=value`, `--flag`; positionals in `_`. */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) { out._.push(arg); continue; }
    const eq = arg.indexOf('=');
    if (eq > 0) out[arg.slice(2, eq)] = arg.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[arg.slice(2)] = argv[++i];
    else out[arg.slice(2)] = true;
  }
  return out;
}

/** These checks open many connections: only ever point them at this machine. */
export function loopbackUrl(raw, what) {
  if (!raw) fail(`missing ${what}`);
  let url;
  try { url = new URL(raw); } catch { fail(`invalid ${what}: ${raw}`); }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!(host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host))) {
    fail(`refusing non-loopback ${what} ${raw}`);
  }
  return url.toString();
}

/** Bearer token from --token or $TOKEN, without a `Bearer ` prefix; '' when none. */
export function token(args) {
  return String(args.token || process.env.TOKEN || '').replace(/^Bearer\s+/i, '');
}

export function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}
