// End-to-end check of the web client in a real browser (Debian's Chromium via playwright-core).
//
//   node e2e.mjs <base-url> [--screenshot <png>] [--chromium /usr/bin/chromium] [--headed]
//                [--scenario main|runs|previews|api-keys] [--other-preview <url>]
//
// Signs up, sees the offline banner, builds "a todo app with dark mode", waits for the reply and
// its fragment (title, preview URL, files tab with app/page.tsx), sends follow-ups, restores the
// first version (restoreFragment), renames the project, reloads and checks the conversation is
// still there and the latest version is shown at the live URL of openPreview (also from the
// reload button, with its "waking" state), signs out and in again, and saves screenshots.
// `runs`: cancel and retry. `previews`: a preview reads nothing of the web client's storage nor of
// another preview's (`--other-preview`). `api-keys`: create a key (its secret shown once, copied),
// use it, revoke it; create a webhook (its secret shown once, copied), see a delivery, delete it.
// Exits 0 when every step passed.

import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const base = args[0] && !args[0].startsWith('--') ? args[0].replace(/\/$/, '') : null;
if (!base) {
  console.error('usage: node e2e.mjs <base-url> [--screenshot file.png] [--chromium path]');
  process.exit(2);
}
const screenshot = opt('screenshot', 'web-client.png');
const executablePath = opt('chromium', process.env.CHROMIUM || '/usr/bin/chromium');
const TIMEOUT = Number(opt('timeout-ms', 30000));
const scenario = opt('scenario', 'main');

const userDataDir = mkdtempSync(join(tmpdir(), 'codekraft-e2e-'));
const pageErrors = [];
let step = 'launch';

function check(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

/** The text the Code tab shows for `path`, once its content has loaded. */
async function shownFile(page, path) {
  const viewer = page.locator(`[data-testid="file-content"][data-path="${path}"][data-loaded="true"]`);
  await viewer.waitFor();
  return viewer.textContent();
}

async function main() {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: !args.includes('--headed'),
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
      '--disable-dev-shm-usage',
      // Chrome's default: a third-party frame (a preview in the web client) gets storage of its
      // own, partitioned. This Chromium blocks it by default, as browsers do that block
      // third-party cookies (see the README on previews).
      ...(scenario === 'previews' ? ['--disable-features=TrackingProtection3pcd'] : []),
    ],
    viewport: { width: 1440, height: 900 },
    colorScheme: opt('color-scheme', 'light'),
    timeout: TIMEOUT,
  });
  context.setDefaultTimeout(TIMEOUT);
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/fake-sandbox|ERR_NAME_NOT_RESOLVED|Failed to load resource/.test(msg.text())) {
      pageErrors.push(`console: ${msg.text()}`);
    }
  });
  const t = (id) => page.getByTestId(id);
  // What the web client sends over graphql-transport-ws (to check it resumes with `after`).
  const wsSent = [];
  page.on('websocket', (socket) => {
    // A preview in the iframe opens sockets of its own (Next's HMR), on its own origin.
    if (new URL(socket.url()).host !== new URL(base).host) return;
    check(socket.url().endsWith('/graphql/ws'), `the socket URL is /graphql/ws: ${socket.url()}`);
    socket.on('framesent', (frame) => {
      try {
        wsSent.push(JSON.parse(frame.payload));
      } catch {
        /* not JSON */
      }
    });
  });

  // The URLs `openPreview` answered, in order (to check the iframe uses the live one).
  const previews = [];
  page.on('response', async (response) => {
    if (!response.url().endsWith('/graphql') || !/openPreview/.test(response.request().postData() || '')) return;
    try {
      const body = await response.json();
      previews.push(body.data?.openPreview?.url ?? `error: ${JSON.stringify(body.errors)}`);
    } catch {
      previews.push('error: no JSON');
    }
  });

  try {
    if (scenario === 'runs') await runsScenario(page, t);
    else if (scenario === 'previews') await previewsScenario(page, t);
    else if (scenario === 'api-keys') await apiKeysScenario(page, t);
    else await happyPath(page, t, wsSent, previews);

    check(pageErrors.length === 0, `no page errors: ${pageErrors.join(' | ')}`);
    console.log(`e2e: all steps passed; screenshot ${screenshot}`);
  } catch (err) {
    console.error(`e2e: FAILED at step "${step}": ${err.message}`);
    if (pageErrors.length) console.error(`page errors:\n  ${pageErrors.join('\n  ')}`);
    try {
      const debug = await page.evaluate(() => {
        const s = window.codekraft?.state;
        if (!s) return null;
        return {
          url: location.pathname,
          messages: s.messages.map((m) => `${m.role}/${m.type} run=${m.run ? `${m.run.id}:${m.run.status}` : '-'} fragment=${m.fragment ? m.fragment.title : '-'}`),
          lastEvents: s.activity.slice(-12).map((a) => `${a.seq} ${a.kind} ${a.runId} ${JSON.stringify(a.data).slice(0, 120)}`),
        };
      });
      if (debug) console.error(`client state: ${JSON.stringify(debug, null, 2)}`);
    } catch {
      /* no page */
    }
    try {
      const failure = screenshot.replace(/\.png$/, '-failure.png');
      mkdirSync(dirname(failure), { recursive: true });
      await page.screenshot({ path: failure, fullPage: true });
      console.error(`e2e: failure screenshot ${failure}`);
    } catch {
      /* the browser may be gone */
    }
    process.exitCode = 1;
  } finally {
    await context.close();
  }
}

/** Sign up, build an app, follow up, resume the stream, rename, reload, sign out/in, delete, credits. */
async function happyPath(page, t, wsSent, previews) {
  step = 'open the app';
  await page.goto(`${base}/`);
  await t('auth-form').waitFor();
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-signin.png') });

  step = 'sign up';
  const email = `e2e-${Date.now()}@example.com`;
  const password = 'correct horse battery staple';
  await t('auth-mode-signup').click();
  await t('auth-email').fill(email);
  await t('auth-password').fill(password);
  await t('auth-submit').click();
  await t('home-prompt').waitFor();
  check((await t('user-email').textContent()) === email, 'the signed-in email is shown');
  check(await page.evaluate(() => Boolean(localStorage.getItem('codekraft.token'))), 'the token is in localStorage');

  await page.screenshot({ path: screenshot.replace(/\.png$/, '-home.png') });

  step = 'offline banner, usage and server info';
  await t('offline-banner').waitFor({ state: 'visible' });
  check(/offline/i.test(await t('offline-banner').textContent()), 'the banner says the model is offline');
  await t('usage').waitFor();
  const usageBefore = await t('usage-remaining').textContent();
  check(/\d+ \/ \d+ credits/.test(usageBefore), `usage shows remaining / limit: ${usageBefore}`);
  check(/fake/.test(await t('server-info').textContent()), 'server info names the sandbox provider');

  step = 'create a project from a prompt';
  await t('home-prompt').fill('a todo app with dark mode');
  await t('home-submit').click();
  await page.waitForURL(/\/projects\/[^/]+$/);
  const projectUrl = page.url();
  await t('project-name').filter({ hasText: /todo/ }).waitFor();

  step = 'wait for the assistant reply and the fragment';
  const assistant = page.locator('[data-testid="message"][data-role="ASSISTANT"]');
  await assistant.first().waitFor();
  await t('fragment-card').first().waitFor();
  const title = (await t('preview-title').textContent()).trim();
  check(title.length > 0, 'the fragment has a title');
  const previewUrl = (await t('preview-url').textContent()).trim();
  check(previewUrl.startsWith('http://fake-sandbox/'), `the preview URL is the sandbox's: ${previewUrl}`);
  check((await t('preview-frame').getAttribute('src')) === previewUrl, 'the iframe shows the preview URL');
  check((await t('preview-open').getAttribute('href')) === previewUrl, '"open in new tab" links the preview');
  check((await t('preview-open').getAttribute('target')) === '_blank', '"open in new tab" opens a new tab');

  step = 'run status, tokens and cost';
  const runMeta = assistant.first().getByTestId('run-meta');
  await runMeta.and(page.locator('[data-status="SUCCEEDED"]')).waitFor();
  // Numbers are formatted for the locale ("1,043", "1 043").
  check(/\d[\d.,\u00a0\u202f ]* in · \d[\d.,\u00a0\u202f ]* out/.test(await runMeta.getByTestId('run-tokens').textContent()), 'tokens are shown');
  check(/^\$\d/.test(await runMeta.getByTestId('run-cost').textContent()), 'the cost is shown');
  await page.waitForFunction(
    (before) => document.querySelector('[data-testid="usage-remaining"]')?.textContent !== before,
    usageBefore,
  );

  step = 'activity feed from the subscription';
  await page.locator('[data-testid="activity-item"][data-kind="RUN_FINISHED"]').first().waitFor({ state: 'attached' });
  await page.locator('[data-testid="activity-item"][data-kind="FILE_WRITTEN"]').first().waitFor({ state: 'attached' });
  const written = await page.locator('[data-testid="activity-item"][data-kind="FILE_WRITTEN"]').allTextContents();
  check(written.some((text) => text.includes('app/page.tsx')), `a FILE_WRITTEN item names its path: ${written}`);
  const finished = await page.locator('[data-testid="activity-item"][data-kind="RUN_FINISHED"]').first().textContent();
  check(finished.includes('succeeded'), `the RUN_FINISHED item shows the status: ${finished}`);
  await page.locator('[data-testid="live-status"][data-state="connected"]').waitFor();

  step = 'files tab shows app/page.tsx';
  await t('tab-code').click();
  const pageFile = page.locator('[data-testid="file-item"][data-path="app/page.tsx"]');
  await pageFile.waitFor();
  await pageFile.click();
  check((await t('file-path').textContent()) === 'app/page.tsx', 'the viewer shows app/page.tsx');
  const firstPage = await shownFile(page, 'app/page.tsx');
  check(firstPage.length > 50, 'app/page.tsx has content');
  await t('tab-preview').click();
  await t('preview-frame').waitFor();

  step = 'send a follow-up';
  await t('composer-input').fill('add a button that clears completed todos');
  await t('composer-send').click();
  await page.locator('[data-testid="message"][data-role="USER"]').nth(1).waitFor();
  await assistant.nth(1).waitFor();
  await assistant.nth(1).getByTestId('run-meta').and(page.locator('[data-status="SUCCEEDED"]')).waitFor();
  check((await t('fragment-card').count()) === 2, 'each reply carries a fragment');
  check(
    (await page.locator('[data-testid="fragment-card"][aria-pressed="true"]').getAttribute('data-fragment-id')) ===
      (await t('fragment-card').nth(1).getAttribute('data-fragment-id')),
    'the latest fragment is selected',
  );

  step = 'the event stream resumes after a dropped connection';
  const seqsBefore = await page.locator('[data-testid="activity-item"]').count();
  const initsBefore = wsSent.filter((m) => m.type === 'connection_init').length;
  const lastSeq = await page.evaluate(() => window.codekraft.state.lastSeq);
  check(Number.isInteger(lastSeq), 'the client remembers the last seq');
  await page.evaluate(() => window.codekraft.ws.socket.close());
  await page.waitForFunction(() => window.codekraft.ws.state !== 'connected');
  await page.locator('[data-testid="live-status"][data-state="connected"]').waitFor();
  check(wsSent.filter((m) => m.type === 'connection_init').length === initsBefore + 1, 'the client connected again');
  const init = wsSent.filter((m) => m.type === 'connection_init').pop();
  check(/^Bearer .+/.test(init.payload?.Authorization || ''), 'connection_init carries the bearer token');
  const resubscribe = wsSent.filter((m) => m.type === 'subscribe').pop();
  check(
    resubscribe.payload.variables.after === lastSeq,
    `the client resumes after seq ${lastSeq}: ${JSON.stringify(resubscribe.payload.variables)}`,
  );
  await t('composer-input').fill('make the header sticky');
  await t('composer-send').click();
  await assistant.nth(2).getByTestId('run-meta').and(page.locator('[data-status="SUCCEEDED"]')).waitFor();
  await page.locator('[data-testid="activity-item"][data-kind="RUN_FINISHED"]').nth(2).waitFor({ state: 'attached' });
  const seqs = await page.locator('[data-testid="activity-item"]').evaluateAll((els) => els.map((e) => e.dataset.seq));
  check(seqs.length > seqsBefore, 'new events arrived after the reconnect');
  check(new Set(seqs).size === seqs.length, `no event is shown twice after resuming: ${seqs.join(',')}`);

  step = 'restore the first version';
  const projectId = new URL(projectUrl).pathname.split('/').pop();
  check((await t('restore-fragment').count()) === 2, 'every version but the latest can be restored');
  check(
    (await t('fragment-card').last().locator('xpath=..').getByTestId('restore-fragment').count()) === 0,
    'the latest version has no Restore button',
  );
  const firstTitle = (await t('fragment-card').first().getByTestId('fragment-title').textContent()).trim();
  await t('tab-code').click();
  await page.locator('[data-testid="file-item"][data-path="app/page.tsx"]').click();
  const latestPage = await shownFile(page, 'app/page.tsx');
  await t('tab-preview').click();
  // A second tab on the same project sees the restore arrive live, without a reload.
  const otherTab = await page.context().newPage();
  await otherTab.goto(projectUrl);
  const otherAssistant = otherTab.locator('[data-testid="message"][data-role="ASSISTANT"]');
  await otherAssistant.nth(2).waitFor();
  await otherTab.locator('[data-testid="live-status"][data-state="connected"]').waitFor();
  await assistant.first().getByTestId('restore-fragment').click();
  await assistant.nth(3).waitFor();
  await otherAssistant.nth(3).waitFor();
  check(
    (await otherAssistant.nth(3).getByTestId('message-content').textContent()).trim().startsWith('Restored the version'),
    'the other tab shows the restored version',
  );
  await otherTab.close();
  const restored = (await assistant.nth(3).getByTestId('message-content').textContent()).trim();
  check(restored === `Restored the version “${firstTitle}”.`, `the conversation says what was restored: ${restored}`);
  check((await t('fragment-card').count()) === 4, 'the restored version is a new fragment');
  check(
    (await page.locator('[data-testid="fragment-card"][aria-pressed="true"]').getAttribute('data-fragment-id')) ===
      (await t('fragment-card').last().getAttribute('data-fragment-id')),
    'the restored version is selected',
  );
  check((await t('restore-fragment').count()) === 3, 'the versions before the restored one can be restored');
  await t('tab-code').click();
  await page.locator('[data-testid="file-item"][data-path="app/page.tsx"]').click();
  const restoredPage = await shownFile(page, 'app/page.tsx');
  check(restoredPage === firstPage, 'the Code tab shows the first version\'s app/page.tsx again');
  check(latestPage !== firstPage, 'the follow-ups changed app/page.tsx (so the restore is visible)');
  await t('tab-preview').click();

  step = 'the project list, rename';
  const item = t('project-item');
  check((await item.count()) === 1, 'one project in the list');
  await item.first().hover();
  await item.first().getByTestId('project-rename').click();
  await t('project-rename-input').fill('My todo app');
  await t('project-rename-input').press('Enter');
  await t('project-name').filter({ hasText: 'My todo app' }).waitFor();
  await page.locator('[data-testid="project-link"]', { hasText: 'My todo app' }).waitFor();

  step = 'reload keeps the conversation';
  await page.reload();
  check(page.url() === projectUrl, 'the URL survives a reload');
  await t('project-name').filter({ hasText: 'My todo app' }).waitFor();
  await assistant.nth(3).waitFor();
  check((await t('message').count()) === 7, 'three prompts, three replies and a restore after a reload');
  check(
    (await t('message').first().getByTestId('message-content').textContent()) === 'a todo app with dark mode',
    'the first prompt is there',
  );
  check((await t('preview-url').textContent()).startsWith('http://fake-sandbox/'), 'the preview is restored');

  step = 'the project view opens a live preview';
  await page.waitForFunction(() => window.codekraft.state.preview.status === 'ready');
  check(previews.length >= 1, 'openPreview was called when the project opened');
  const live = previews[previews.length - 1];
  check(live === `http://fake-sandbox/${projectId}/`, `openPreview answered the fake sandbox's URL: ${live}`);
  await page.waitForFunction((url) => document.querySelector('[data-testid="preview-frame"]').getAttribute('src') === url, live);
  check((await t('preview-url').textContent()) === live, 'the header shows the live URL');
  check((await t('preview-waking').count()) === 0, 'no "waking" state once the preview is live');
  const callsBefore = previews.length;
  // Hold the next openPreview answer back to see the "waking" state.
  let release;
  const held = new Promise((resolve) => (release = resolve));
  await page.route('**/graphql', async (route) => {
    if (/openPreview/.test(route.request().postData() || '')) await held;
    await route.continue();
  });
  await t('preview-reload').click();
  await t('preview-waking').waitFor();
  await t('preview-waking-overlay').waitFor({ state: 'visible' });
  check(await t('preview-reload').isDisabled(), 'no second reload while the preview wakes up');
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-waking.png') });
  release();
  for (let i = 0; i < 200 && previews.length === callsBefore; i++) await page.waitForTimeout(50);
  await page.unroute('**/graphql');
  await t('preview-waking-overlay').waitFor({ state: 'hidden' });
  await page.waitForFunction(() => window.codekraft.state.preview.status === 'ready');
  check(previews.length === callsBefore + 1, 'the reload button asks for a live preview again');
  await page.waitForFunction((url) => document.querySelector('[data-testid="preview-frame"]').getAttribute('src') === url, live);
  await page.locator('[data-testid="activity-item"][data-kind="RUN_FINISHED"]').nth(2).waitFor({ state: 'attached' });

  step = 'screenshot';
  await t('activity-panel').evaluate((el) => {
    el.open = true;
  });
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot });
  await t('tab-code').click();
  await t('file-content').waitFor();
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-code.png') });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-dark.png') });
  await page.setViewportSize({ width: 390, height: 844 });
  await t('tab-preview').click();
  await page.evaluate(() => document.getElementById('content').scrollTo(0, 0));
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-mobile.png') });
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.emulateMedia({ colorScheme: 'light' });

  step = 'the Changes tab shows what the selected version changed';
  await t('tab-changes').click();
  const changedPage = page.locator('[data-testid="file-diff"][data-path="app/page.tsx"][data-status="CHANGED"]');
  await changedPage.waitFor();
  check(/^-/m.test(await changedPage.textContent()) || (await changedPage.locator('.diff-del').count()) > 0, 'the patch shows removed lines');
  await t('tab-preview').click();

  step = 'download the project as a zip';
  const [download] = await Promise.all([page.waitForEvent('download'), t('download-zip').click()]);
  check(download.suggestedFilename() === 'My-todo-app.zip', `the zip is named after the project: ${download.suggestedFilename()}`);
  const zip = readFileSync(await download.path());
  check(zip.length > 100 && zip.subarray(0, 2).toString() === 'PK', `a zip archive was saved (${zip.length} bytes)`);

  step = 'fork the first version';
  check((await t('fork-fragment').count()) === 4, 'every version can be forked');
  await t('fork-fragment').first().click();
  await page.waitForURL((url) => url.pathname.startsWith('/projects/') && url.href !== projectUrl);
  await t('project-name').filter({ hasText: 'My todo app-fork' }).waitFor();
  await assistant.first().waitFor();
  check((await assistant.count()) === 1, 'the fork starts with one version');
  const forkedFrom = (await assistant.first().getByTestId('message-content').textContent()).trim();
  check(forkedFrom === `Forked from the version “${firstTitle}” of My todo app.`, `the fork says where it came from: ${forkedFrom}`);
  await t('tab-code').click();
  await page.locator('[data-testid="file-item"][data-path="app/page.tsx"]').click();
  check((await shownFile(page, 'app/page.tsx')) === firstPage, 'the fork has the first version\'s app/page.tsx');
  await t('tab-preview').click();
  await t('project-item').first().hover();
  await t('project-delete').first().click();
  await t('project-delete-confirm').click();
  await t('home-prompt').waitFor();
  check((await t('project-item').count()) === 1, 'the original project is still there');
  await page.goto(projectUrl);
  await assistant.nth(3).waitFor();
  check((await t('message').count()) === 7, 'the original conversation is unchanged');

  step = 'sign out and in again';
  await t('sign-out').click();
  await t('auth-form').waitFor();
  check(await page.evaluate(() => !localStorage.getItem('codekraft.token')), 'the token is gone');
  await t('auth-email').fill(email);
  await t('auth-password').fill(password);
  await t('auth-submit').click();
  await page.locator('[data-testid="project-link"]', { hasText: 'My todo app' }).click();
  await page.waitForURL(projectUrl);
  await assistant.nth(1).waitFor();

  step = 'delete the project';
  await t('project-item').first().hover();
  await t('project-delete').first().click();
  await t('project-delete-confirm').click();
  await t('home-prompt').waitFor();
  await t('project-list-empty').waitFor();
  check(new URL(page.url()).pathname === '/', 'back home after deleting the open project');

  step = 'no credits left: the error says when they renew';
  for (let i = 0; i < 20; i++) {
    const code = await page.evaluate(async () => {
      const response = await fetch('/graphql', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${localStorage.getItem('codekraft.token')}` },
        body: JSON.stringify({ query: 'mutation { createProject(prompt: "a counter") { project { id } } }' }),
      });
      const body = await response.json();
      return body.errors ? body.errors[0].extensions.code : 'OK';
    });
    if (code === 'CREDITS_EXHAUSTED') break;
    check(code === 'OK', `createProject answered ${code}`);
  }
  await t('home-prompt').fill('one app too many');
  await t('home-submit').click();
  await page.locator('[data-testid="error-banner"][data-code="CREDITS_EXHAUSTED"]').waitFor();
  check(/renew/.test(await t('error-text').textContent()), 'the error says when credits renew');
  check(new URL(page.url()).pathname === '/', 'no project was opened');
  await t('usage').and(page.locator('.usage-empty')).waitFor();

  step = 'an unknown session goes back to sign-in';
  await page.evaluate(() => localStorage.setItem('codekraft.token', 'not-a-valid-token'));
  await page.reload();
  await t('auth-form').waitFor();
}

/** The API keys page: create a key, see and copy its secret once, use it, revoke it. */
async function apiKeysScenario(page, t) {
  step = 'sign up and open the API keys page';
  const email = `keys-${Date.now()}@example.com`;
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  await page.goto(`${base}/`);
  await t('auth-mode-signup').click();
  await t('auth-email').fill(email);
  await t('auth-password').fill('correct horse battery');
  await t('auth-submit').click();
  await t('api-keys-link').click();
  await t('api-keys-page').waitFor();
  await t('api-key-list-empty').waitFor();
  check(new URL(page.url()).pathname === '/settings/api-keys', 'the page has its own URL');

  step = 'create a key: its secret is shown once';
  await t('api-key-name').fill('nightly CI');
  await t('api-key-scope-GENERATE').check();
  await t('api-key-create').click();
  const secret = (await t('api-key-secret').textContent()).trim();
  check(/^ckp_[0-9A-Za-z]{38}$/.test(secret), `a ckp_ secret: ${secret}`);
  await t('api-key-item').waitFor();
  check(/READ \+ GENERATE/.test(await t('api-key-item').textContent()), 'the list shows the scopes');

  step = 'copy the secret';
  await t('api-key-copy').click();
  await page.locator('[data-testid="api-key-copied"]', { hasText: 'Copied' }).waitFor();
  check((await page.evaluate(() => navigator.clipboard.readText())) === secret, 'the clipboard holds the secret');

  step = 'the key works';
  const meWith = (key) =>
    page.evaluate(async (key) => {
      const response = await fetch('/graphql', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
        body: JSON.stringify({ query: '{ me { email } }' }),
      });
      const body = await response.json();
      return body.errors ? body.errors[0].extensions.code : body.data.me.email;
    }, key);
  check((await meWith(secret)) === email, 'the key speaks for its owner');

  step = 'after a reload the secret is gone';
  await page.reload();
  await t('api-key-item').waitFor();
  check((await t('api-key-secret').count()) === 0, 'no secret shown');
  check(!(await page.content()).includes(secret.slice(4)), 'the secret is nowhere in the page');
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot });

  step = 'revoke the key';
  await t('api-key-revoke').click();
  await page.locator('[data-testid="api-key-item-state"]', { hasText: 'revoked' }).waitFor();
  check((await meWith(secret)) === 'UNAUTHENTICATED', 'a revoked key is refused');

  step = 'a webhook needs an http(s) URL';
  await t('webhook-list-empty').waitFor();
  await t('webhook-url').fill('ftp://example.com/hook');
  await t('webhook-create').click();
  await page.locator('[data-testid="webhook-error"]', { hasText: 'BAD_USER_INPUT' }).waitFor();

  step = 'create a webhook: its secret is shown once';
  // The server allows loopback targets (WEBHOOK_ALLOW_PRIVATE): deliveries go to itself, which
  // answers 404, so they are retried.
  await t('webhook-url').fill(`${base}/webhook-sink`);
  await t('webhook-event-RUN_QUEUED').check();
  await t('webhook-create').click();
  const hookSecret = (await t('webhook-secret').textContent()).trim();
  check(/^whsec_[A-Za-z0-9+/=]{40,}$/.test(hookSecret), `a whsec_ secret: ${hookSecret}`);
  check(/RUN_QUEUED \+ RUN_FINISHED/.test(await t('webhook-item').textContent()), 'the list shows the events');
  await t('webhook-copy').click();
  await page.locator('[data-testid="webhook-copied"]', { hasText: 'Copied' }).waitFor();
  check((await page.evaluate(() => navigator.clipboard.readText())) === hookSecret, 'the clipboard holds the webhook secret');

  step = 'a build shows up in the recent deliveries';
  await page.evaluate(async () => {
    const response = await fetch('/graphql', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${localStorage.getItem('codekraft.token')}` },
      body: JSON.stringify({ query: 'mutation { createProject(prompt: "a todo app") { project { id } } }' }),
    });
    const body = await response.json();
    if (body.errors) throw new Error(JSON.stringify(body.errors));
  });
  // Listed once attempted, with the answer's status.
  const delivery = page.locator('[data-testid="webhook-delivery"]', { hasText: /RUN_QUEUED .* HTTP \d{3}/ });
  for (let tries = 0; (await delivery.count()) === 0; tries++) {
    check(tries < 100, 'an attempted delivery is listed');
    await t('webhook-refresh').click();
    await page.waitForTimeout(100);
  }

  step = 'delete the webhook';
  await t('webhook-delete').click();
  await t('webhook-list-empty').waitFor();
}

/**
 * Cancel and Retry, against a server whose model blocks on its first call and refuses the
 * second (see tests/it/web_client.rs), then works offline.
 */
async function runsScenario(page, t) {
  step = 'sign up';
  await page.goto(`${base}/`);
  await t('auth-mode-signup').click();
  await t('auth-email').fill(`runs-${Date.now()}@example.com`);
  await t('auth-password').fill('correct horse battery staple');
  await t('auth-submit').click();

  step = 'a running generation can be cancelled';
  await t('home-prompt').fill('a slow app');
  await t('home-submit').click();
  await page.waitForURL(/\/projects\/[^/]+$/);
  const pending = page.locator('[data-testid="pending-run"][data-status="RUNNING"]');
  await pending.waitFor();
  await pending.getByTestId('cancel-run').click();
  await page.locator('[data-testid="pending-run"][data-status="CANCELLED"]').waitFor();
  check((await t('cancel-run').count()) === 0, 'no Cancel button on a cancelled run');
  await page.locator('[data-testid="activity-item"][data-kind="RUN_FINISHED"]').first().waitFor({ state: 'attached' });

  step = 'a failed generation can be retried';
  await t('composer-input').fill('try again please');
  await t('composer-send').click();
  const failed = page.locator('[data-testid="run-meta"][data-status="FAILED"]');
  await failed.first().waitFor();
  await page.locator('[data-testid="message"][data-type="ERROR"]').first().waitFor();
  const failedRunId = await failed.first().getAttribute('data-run-id');
  await failed.first().getByTestId('retry-run').click();
  // The run is queued again and picked up. (Whether it can then store its result depends on the
  // server: see the note in tests/it/web_client.rs.)
  await page.locator('[data-testid="activity-item"][data-kind="RUN_QUEUED"]').nth(2).waitFor({ state: 'attached' });
  check((await page.locator('[data-testid="activity-item"][data-kind="RUN_QUEUED"]').nth(2).textContent()).includes('retry'), 'the activity says it is a retry');
  await page
    .locator(`[data-testid="run-meta"][data-run-id="${failedRunId}"]:is([data-status="RUNNING"], [data-status="QUEUED"], [data-status="SUCCEEDED"])`)
    .first()
    .waitFor();
  check((await t('retry-run').count()) === 0, 'no Retry button once the run is queued again');
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot });
}

/**
 * Previews are origins of their own, against a server with local sandboxes whose dev server is a
 * stand-in (see tests/it/web_client.rs): the app built here, in the web client's iframe and
 * opened on its own like a shared link, cannot read the web client's storage (the session
 * token) nor that of another preview (`--other-preview`), which keeps secrets of its own.
 */
async function previewsScenario(page, t) {
  const other = opt('other-preview');
  check(other, '--other-preview <url> is given');

  step = 'sign up: the session lives in the web client\'s storage';
  await page.goto(`${base}/`);
  await t('auth-mode-signup').click();
  await t('auth-email').fill(`previews-${Date.now()}@example.com`);
  await t('auth-password').fill('correct horse battery staple');
  await t('auth-submit').click();
  await t('home-prompt').waitFor();
  const token = await page.evaluate(() => localStorage.getItem('codekraft.token'));
  check(token, 'the token is in localStorage');
  await page.evaluate(() => {
    sessionStorage.setItem('web-client-secret', 'web-client-session-secret');
    document.cookie = 'web_client_secret=web-client-cookie-secret; path=/';
  });
  check(/web-client-cookie-secret/.test(await page.evaluate(() => document.cookie)), 'the web client keeps a cookie');

  step = 'another preview keeps secrets of its own';
  const otherTab = await page.context().newPage();
  await otherTab.goto(other);
  await otherTab.evaluate(() => {
    localStorage.setItem('other-preview-secret', 'other-preview-local-secret');
    sessionStorage.setItem('other-preview-secret', 'other-preview-session-secret');
    document.cookie = 'other_preview_secret=other-preview-cookie-secret; path=/';
  });
  await otherTab.reload();
  const kept = await otherTab.evaluate(() => `${localStorage.getItem('other-preview-secret')} ${document.cookie}`);
  check(/other-preview-local-secret/.test(kept) && /other-preview-cookie-secret/.test(kept), `the other preview reads its secrets back: ${kept}`);
  const secrets = [
    token,
    'web-client-session-secret',
    'web-client-cookie-secret',
    'other-preview-local-secret',
    'other-preview-session-secret',
    'other-preview-cookie-secret',
  ];

  step = 'build an app: its preview is on an origin of its own';
  await t('home-prompt').fill('a counter');
  await t('home-submit').click();
  await page.waitForURL(/\/projects\/[^/]+$/);
  await t('fragment-card').first().waitFor();
  const previewUrl = (await t('preview-url').textContent()).trim();
  check(new URL(previewUrl).hostname.endsWith('.localhost'), `the preview is on a *.localhost origin: ${previewUrl}`);
  await page.waitForFunction(
    (url) => document.querySelector('[data-testid="preview-frame"]').getAttribute('src') === url,
    previewUrl,
  );

  step = 'the preview renders in the iframe, its HMR socket connected';
  const frame = await (await t('preview-frame').elementHandle()).contentFrame();
  await frame.locator('#hmr', { hasText: '{"action":"built"}' }).waitFor();
  check(frame.url() === previewUrl, `the iframe shows the preview: ${frame.url()}`);

  step = 'in the iframe, the preview reads nothing of the web client nor of the other preview';
  const framed = await frame.evaluate(probeStorage, other);
  check(framed.origin === new URL(previewUrl).origin, `the iframe keeps the preview's origin: ${framed.origin}`);
  checkIsolated(framed, secrets, 'in the iframe');
  check(framed.top.startsWith('blocked'), `the web client's storage is out of reach: ${framed.top}`);
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot });

  step = 'opened like a shared link, the preview reads nothing either';
  const shared = await page.context().newPage();
  await shared.goto(previewUrl);
  await shared.locator('#hmr', { hasText: '{"action":"built"}' }).waitFor();
  checkIsolated(await shared.evaluate(probeStorage, other), secrets, 'opened on its own');
}

/** Runs in a preview: what it can read of its own storage, of the top window's and of another preview's. */
async function probeStorage(otherUrl) {
  const attempt = (read) => {
    try {
      return read();
    } catch (err) {
      return `blocked: ${err.name}`;
    }
  };
  const dump = (w) => JSON.stringify({ local: { ...w.localStorage }, session: { ...w.sessionStorage }, cookie: w.document.cookie });
  localStorage.setItem('own', 'works');
  const frame = document.createElement('iframe');
  const loaded = new Promise((resolve) => frame.addEventListener('load', resolve, { once: true }));
  frame.src = otherUrl;
  document.body.append(frame);
  await loaded;
  return {
    origin: self.origin,
    own: attempt(() => dump(window)),
    top: attempt(() => dump(window.top)),
    other: attempt(() => dump(frame.contentWindow)),
  };
}

function checkIsolated(seen, secrets, where) {
  const everything = JSON.stringify(seen);
  for (const secret of secrets) check(!everything.includes(secret), `${where}: the preview read a secret: ${everything}`);
  check(seen.own.includes('"own":"works"'), `${where}: the preview has storage of its own: ${seen.own}`);
  check(seen.other.startsWith('blocked'), `${where}: the other preview's storage is out of reach: ${seen.other}`);
}

main()
  .catch((err) => {
    console.error(`e2e: FAILED at step "${step}": ${err.stack || err}`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(userDataDir, { recursive: true, force: true }));
