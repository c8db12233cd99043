// The API keys page (`/settings/api-keys`): create a key with a name and scopes, see its secret
// once (with a copy button), list and revoke keys; below, the webhooks (see webhooks.js).

import { gql, GqlError, Q } from './api.js';
import { h, mount, icon, formatDate, timeAgo, shownOnce } from './dom.js';
import { webhooksSection } from './webhooks.js';

const page = {
  keys: [],
  // The secret of the key created last: shown until the page is left, never again.
  created: null,
  // The webhooks section, kept across redraws of the keys.
  webhooks: null,
};

/** Renders the page into `content`; `onError` shows a failure in the app's error banner. */
export async function renderApiKeysPage(content, onError) {
  page.created = null;
  page.webhooks = webhooksSection(onError);
  draw(content, onError);
  try {
    page.keys = (await gql(Q.apiKeys)).apiKeys;
    draw(content, onError);
  } catch (err) {
    onError(err);
  }
}

function draw(content, onError) {
  mount(
    content,
    h(
      'div',
      { class: 'settings', testid: 'api-keys-page' },
      h('h1', {}, 'API keys'),
      h(
        'p',
        { class: 'muted' },
        'Keys let CI jobs, bots and dashboards use CodeKraft for you. READ keys may query and follow builds; GENERATE keys may also start them.',
      ),
      createForm(content, onError),
      page.created ? secretCard(page.created) : null,
      keyList(content, onError),
      page.webhooks,
    ),
  );
  document.title = 'API keys and webhooks · CodeKraft';
}

function createForm(content, onError) {
  return h(
    'form',
    {
      class: 'card settings-form',
      testid: 'api-key-form',
      onsubmit: (event) => createKey(event, content, onError),
    },
    h(
      'label',
      { class: 'field' },
      h('span', {}, 'Name'),
      h('input', { name: 'name', required: true, maxlength: '100', testid: 'api-key-name', placeholder: 'nightly CI' }),
    ),
    h(
      'fieldset',
      { class: 'scopes' },
      h('legend', {}, 'Scopes'),
      scopeBox('READ', 'Read projects and follow builds', true),
      scopeBox('GENERATE', 'Start and steer builds (uses credits)', false),
    ),
    h(
      'label',
      { class: 'field' },
      h('span', {}, 'Expires (optional)'),
      h('input', { type: 'date', name: 'expires', testid: 'api-key-expires' }),
    ),
    h('p', { class: 'form-error', testid: 'api-key-error', role: 'alert', hidden: true }),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'api-key-create' }, icon('plus'), 'Create key'),
  );
}

function scopeBox(scope, label, checked) {
  return h(
    'label',
    { class: 'scope' },
    h('input', { type: 'checkbox', name: 'scope', value: scope, checked, testid: `api-key-scope-${scope}` }),
    h('span', {}, h('strong', {}, scope), ' — ', label),
  );
}

async function createKey(event, content, onError) {
  event.preventDefault();
  const form = event.currentTarget;
  const errorEl = form.querySelector('[data-testid="api-key-error"]');
  const button = form.querySelector('[data-testid="api-key-create"]');
  const scopes = [...form.querySelectorAll('input[name="scope"]:checked')].map((box) => box.value);
  // A date means the end of that day, local time.
  const expiresAt = form.expires.value ? new Date(`${form.expires.value}T23:59:59`).toISOString() : null;
  errorEl.hidden = true;
  button.disabled = true;
  try {
    const data = await gql(Q.createApiKey, { name: form.name.value, scopes, expiresAt });
    page.created = data.createApiKey;
    page.keys = [data.createApiKey.apiKey, ...page.keys];
    draw(content, onError);
  } catch (err) {
    errorEl.textContent = err instanceof GqlError ? `${err.message} (${err.code})` : String(err);
    errorEl.hidden = false;
    button.disabled = false;
  }
}

function secretCard(created) {
  const intro = h('p', {}, h('strong', {}, `“${created.apiKey.name}” is ready.`), ' Copy its secret now: it is not shown again.');
  return shownOnce(created.secret, intro, 'api-key');
}

function keyList(content, onError) {
  if (!page.keys.length) {
    return h('p', { class: 'muted', testid: 'api-key-list-empty' }, 'No API keys yet.');
  }
  return h(
    'ul',
    { class: 'key-list', testid: 'api-key-list' },
    page.keys.map((key) =>
      h(
        'li',
        { class: `card key-item ${key.revokedAt ? 'key-revoked' : ''}`, testid: 'api-key-item', dataset: { id: key.id } },
        h(
          'div',
          { class: 'key-text' },
          h('strong', { testid: 'api-key-item-name' }, key.name),
          h('code', { class: 'muted' }, `${key.prefix}…`),
          h('span', { class: 'muted' }, key.scopes.join(' + ')),
          h(
            'span',
            { class: 'muted', testid: 'api-key-item-state' },
            key.revokedAt
              ? `revoked ${timeAgo(key.revokedAt)}`
              : [
                  `created ${formatDate(key.createdAt, { dateStyle: 'medium' })}`,
                  key.expiresAt ? `expires ${formatDate(key.expiresAt, { dateStyle: 'medium' })}` : 'never expires',
                  key.lastUsedAt ? `used ${timeAgo(key.lastUsedAt)}` : 'never used',
                ].join(' · '),
          ),
        ),
        key.revokedAt
          ? null
          : h(
              'button',
              {
                type: 'button',
                class: 'btn btn-danger btn-xs',
                testid: 'api-key-revoke',
                onclick: () => revokeKey(key, content, onError),
              },
              icon('x'),
              'Revoke',
            ),
      ),
    ),
  );
}

async function revokeKey(key, content, onError) {
  try {
    const revoked = (await gql(Q.revokeApiKey, { id: key.id })).revokeApiKey;
    page.keys = page.keys.map((k) => (k.id === revoked.id ? revoked : k));
    draw(content, onError);
  } catch (err) {
    onError(err);
  }
}
