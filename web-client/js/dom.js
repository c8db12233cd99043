// Tiny DOM helpers: `h()` builds elements (text is always set as text, never parsed as HTML).

/**
 * h('button', { class: 'btn', onclick: fn, testid: 'x' }, 'Label', child, [more])
 * Attributes: `class`, `testid` (→ data-testid), `on*` handlers, `dataset`, booleans, others as-is.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value') el.value = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A small inline SVG icon (paths are our own, 24×24 stroke icons). */
const ICONS = {
  plus: 'M12 5v14M5 12h14',
  send: 'M5 12h14M13 6l6 6-6 6',
  edit: 'M4 20h4L19 9l-4-4L4 16v4z',
  trash: 'M5 7h14M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3',
  external: 'M14 4h6v6M20 4l-9 9M19 14v6H4V5h6',
  refresh: 'M20 12a8 8 0 1 1-2.34-5.66M20 4v5h-5',
  stop: 'M7 7h10v10H7z',
  retry: 'M4 12a8 8 0 1 0 2.34-5.66M4 4v5h5',
  undo: 'M9 14L4 9l5-5M4 9h10a6 6 0 0 1 0 12h-3',
  fork: 'M6 3v6a4 4 0 0 0 4 4h4a4 4 0 0 1 4 4v4M18 3v6M6 21v-4',
  download: 'M12 4v11M7 10l5 5 5-5M5 20h14',
  file: 'M6 3h8l4 4v14H6zM14 3v4h4',
  logout: 'M15 4h4v16h-4M10 8l-4 4 4 4M6 12h10',
  bolt: 'M13 3L5 14h6l-1 7 8-11h-6z',
  check: 'M5 12l5 5 9-10',
  x: 'M6 6l12 12M18 6L6 18',
  menu: 'M4 7h16M4 12h16M4 17h16',
};

export function icon(name, label) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  if (label) {
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
  } else {
    svg.setAttribute('aria-hidden', 'true');
  }
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name] || '');
  svg.append(path);
  return svg;
}

export function formatDate(iso, opts = { dateStyle: 'medium', timeStyle: 'short' }) {
  if (!iso) return '';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : new Intl.DateTimeFormat(undefined, opts).format(date);
}

export function timeAgo(iso) {
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return '';
  const s = Math.round((Date.now() - then) / 1000);
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const hr = Math.round(m / 60);
  if (hr < 24) return `${hr} h ago`;
  return formatDate(iso, { dateStyle: 'medium' });
}

export const fmtInt = (n) => new Intl.NumberFormat().format(n || 0);
export const fmtUsd = (n) => `$${(n || 0).toFixed(n && n < 0.01 ? 4 : 2)}`;

// A secret shown once: `intro`, the secret and a copy button. Test ids start with `testid`
// (`<testid>-secret-card`, `-secret`, `-copy`, `-copied`).
export function shownOnce(secret, intro, testid) {
  const copied = h('span', { class: 'muted', testid: `${testid}-copied`, role: 'status' });
  return h(
    'div',
    { class: 'card secret-card', testid: `${testid}-secret-card` },
    intro,
    h(
      'div',
      { class: 'secret-row' },
      h('code', { class: 'secret', testid: `${testid}-secret` }, secret),
      h(
        'button',
        {
          type: 'button',
          class: 'btn btn-ghost',
          testid: `${testid}-copy`,
          onclick: async () => {
            try {
              await navigator.clipboard.writeText(secret);
              copied.textContent = 'Copied';
            } catch {
              copied.textContent = 'Select the secret and copy it';
            }
          },
        },
        icon('file'),
        'Copy',
      ),
      copied,
    ),
  );
}
