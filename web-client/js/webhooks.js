// The webhooks part of the settings page (`/settings/api-keys`): create a webhook (URL and event
// kinds), see its signing secret once (with a copy button), see its recent deliveries, delete it.

import { gql, GqlError, Q } from './api.js';
import { h, mount, icon, timeAgo, shownOnce } from './dom.js';

// The kinds offered here; the API accepts every RunEventKind.
const KINDS = ['RUN_QUEUED', 'RUN_STARTED', 'FRAGMENT_CREATED', 'RUN_FINISHED'];

const section = {
  hooks: [],
  // The webhook created last with its secret: shown until the page is left, never again.
  created: null,
};

/** A section that loads and redraws itself; `onError` shows a failure in the error banner. */
export function webhooksSection(onError) {
  const root = h('section', { class: 'webhooks', testid: 'webhooks-section' });
  section.created = null;
  section.hooks = [];
  draw(root, onError);
  load(root, onError);
  return root;
}

async function load(root, onError) {
  try {
    section.hooks = (await gql(Q.webhooks)).webhooks;
    draw(root, onError);
  } catch (err) {
    onError(err);
  }
}

function draw(root, onError) {
  mount(
    root,
    h('h2', {}, 'Webhooks'),
    h(
      'p',
      { class: 'muted' },
      'CodeKraft POSTs the chosen run events of your projects to a URL, signed with the webhook’s secret (Standard Webhooks), retrying until it answers 2xx.',
    ),
    createForm(root, onError),
    section.created ? secretCard(section.created) : null,
    hookList(root, onError),
  );
}

function createForm(root, onError) {
  return h(
    'form',
    { class: 'card settings-form', testid: 'webhook-form', onsubmit: (event) => createHook(event, root, onError) },
    h(
      'label',
      { class: 'field' },
      h('span', {}, 'URL'),
      h('input', {
        name: 'url',
        type: 'url',
        required: true,
        maxlength: '2048',
        testid: 'webhook-url',
        placeholder: 'https://ci.example.com/codekraft',
      }),
    ),
    h(
      'fieldset',
      { class: 'scopes' },
      h('legend', {}, 'Events'),
      KINDS.map((kind) =>
        h(
          'label',
          { class: 'scope' },
          h('input', { type: 'checkbox', name: 'event', value: kind, checked: kind === 'RUN_FINISHED', testid: `webhook-event-${kind}` }),
          h('span', {}, h('strong', {}, kind)),
        ),
      ),
    ),
    h('p', { class: 'form-error', testid: 'webhook-error', role: 'alert', hidden: true }),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'webhook-create' }, icon('plus'), 'Add webhook'),
  );
}

async function createHook(event, root, onError) {
  event.preventDefault();
  const form = event.currentTarget;
  const errorEl = form.querySelector('[data-testid="webhook-error"]');
  const button = form.querySelector('[data-testid="webhook-create"]');
  const events = [...form.querySelectorAll('input[name="event"]:checked')].map((box) => box.value);
  errorEl.hidden = true;
  button.disabled = true;
  try {
    const data = await gql(Q.createWebhook, { url: form.url.value, events });
    section.created = data.createWebhook;
    section.hooks = [{ ...data.createWebhook.webhook, deliveries: { edges: [] } }, ...section.hooks];
    draw(root, onError);
  } catch (err) {
    errorEl.textContent = err instanceof GqlError ? `${err.message} (${err.code})` : String(err);
    errorEl.hidden = false;
    button.disabled = false;
  }
}

function secretCard(created) {
  const intro = h('p', {}, h('strong', {}, 'The webhook is ready.'), ' Copy its signing secret now: it is not shown again.');
  return shownOnce(created.secret, intro, 'webhook');
}

function hookList(root, onError) {
  if (!section.hooks.length) {
    return h('p', { class: 'muted', testid: 'webhook-list-empty' }, 'No webhooks yet.');
  }
  return h(
    'ul',
    { class: 'key-list', testid: 'webhook-list' },
    section.hooks.map((hook) =>
      h(
        'li',
        { class: `card key-item ${hook.enabled ? '' : 'key-revoked'}`, testid: 'webhook-item', dataset: { id: hook.id } },
        h(
          'div',
          { class: 'key-text' },
          h('code', { testid: 'webhook-item-url' }, hook.url),
          h('span', { class: 'muted' }, hook.events.join(' + ')),
          h('span', { class: 'muted' }, hook.enabled ? 'enabled' : `disabled ${timeAgo(hook.disabledAt)}`),
          deliveryList(hook),
        ),
        h(
          'div',
          { class: 'key-actions' },
          h(
            'button',
            { type: 'button', class: 'btn btn-ghost btn-xs', testid: 'webhook-refresh', onclick: () => load(root, onError) },
            icon('refresh'),
            'Refresh',
          ),
          h(
            'button',
            { type: 'button', class: 'btn btn-danger btn-xs', testid: 'webhook-delete', onclick: () => deleteHook(hook, root, onError) },
            icon('trash'),
            'Delete',
          ),
        ),
      ),
    ),
  );
}

function deliveryList(hook) {
  const deliveries = hook.deliveries.edges.map((edge) => edge.node);
  if (!deliveries.length) return h('span', { class: 'muted', testid: 'webhook-deliveries-empty' }, 'No deliveries yet.');
  return h(
    'ul',
    { class: 'delivery-list', testid: 'webhook-deliveries' },
    deliveries.map((delivery) =>
      h(
        'li',
        { class: 'muted', testid: 'webhook-delivery', dataset: { status: delivery.status } },
        `${delivery.eventKind} · ${delivery.status} · ${delivery.attempts} attempt${delivery.attempts === 1 ? '' : 's'}`,
        delivery.responseStatus ? ` · HTTP ${delivery.responseStatus}` : '',
        ` · ${timeAgo(delivery.createdAt)}`,
      ),
    ),
  );
}

async function deleteHook(hook, root, onError) {
  try {
    await gql(Q.deleteWebhook, { id: hook.id });
    section.hooks = section.hooks.filter((other) => other.id !== hook.id);
    draw(root, onError);
  } catch (err) {
    onError(err);
  }
}
