// CodeKraft web client: plain ES modules, no build step, nothing loaded from the internet.

import { auth, downloadExport, gql, GqlError, Q } from './api.js';
import { h, mount, icon, formatDate, timeAgo, fmtInt, fmtUsd } from './dom.js';
import { WsClient, wsUrl } from './ws.js';
import { renderApiKeysPage } from './api_keys.js';

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// State

const state = {
  user: null,
  usage: null,
  serverInfo: null,
  projects: [],
  projectsCursor: null,
  projectsHasMore: false,
  editingProjectId: null,
  confirmDeleteId: null,
  // the open project
  project: null,
  messages: [],
  lastSeq: null,
  activity: [],
  liveText: new Map(), // runId → streamed model text of the run in progress
  selectedFragmentId: null, // null: follow the latest
  // The open project's live preview (`openPreview`): idle → waking → ready | failed.
  preview: { projectId: null, url: null, status: 'idle', code: null, message: null },
  restoringFragmentId: null,
  forkingFragmentId: null,
  // Loaded on demand: file contents by hash (content-addressed: one entry serves every version
  // that has the file), and a version's changes by `${id}:${previousId}`.
  fileContents: new Map(),
  diffs: new Map(),
  previewTab: 'preview',
  selectedFile: null,
  authMode: 'signin',
  authNotice: null,
};

let stopEvents = null;
let refreshTimer = null;

const ws = new WsClient({
  url: wsUrl(),
  connectionParams: () => ({ Authorization: `Bearer ${auth.token}` }),
  onState: renderLiveStatus,
  onAuthError: () => sessionEnded(),
});

// ---------------------------------------------------------------------------------------------
// Errors

function showError(err) {
  const banner = $('error-banner');
  const code = err instanceof GqlError ? err.code : 'ERROR';
  if (code === 'UNAUTHENTICATED') {
    sessionEnded();
    return;
  }
  let text = err.message || String(err);
  if (code === 'CREDITS_EXHAUSTED') {
    const resetAt = err.extensions?.resetAt;
    text = `You have used all your credits${resetAt ? `; they renew on ${formatDate(resetAt)}` : ''}.`;
  } else if (code === 'RATE_LIMITED') {
    text = 'Too many requests — wait a moment and try again.';
  } else if (code === 'NETWORK') {
    text = 'Cannot reach the server. Check your connection and try again.';
  }
  banner.dataset.code = code;
  mount(
    banner,
    h('span', { class: 'error-code', testid: 'error-code' }, code),
    h('span', { class: 'error-text', testid: 'error-text' }, text),
    h('button', { class: 'icon-btn', 'aria-label': 'Dismiss error', onclick: clearError }, icon('x')),
  );
  banner.hidden = false;
  if (code === 'CREDITS_EXHAUSTED') refreshUsage();
}

function clearError() {
  $('error-banner').hidden = true;
}

/** Runs an async action, reporting a failure in the error banner. */
async function attempt(action) {
  try {
    return await action();
  } catch (err) {
    if (!(err instanceof GqlError)) console.error(err);
    showError(err);
    return undefined;
  }
}

function sessionEnded() {
  const hadSession = Boolean(auth.token);
  auth.token = null;
  state.user = null;
  state.authNotice = hadSession ? 'Your session has ended. Please sign in again.' : null;
  closeProject();
  ws.close();
  render();
}

// ---------------------------------------------------------------------------------------------
// Routing (history API): `/` is home, `/projects/{id}` a project, `/settings/api-keys` the API
// keys page.

function route() {
  if (/^\/settings\/api-keys\/?$/.test(window.location.pathname)) return { name: 'api-keys' };
  const match = window.location.pathname.match(/^\/projects\/([^/]+)\/?$/);
  return match ? { name: 'project', id: decodeURIComponent(match[1]) } : { name: 'home' };
}

function navigate(path, { replace = false } = {}) {
  if (path !== window.location.pathname) {
    clearError();
    if (replace) history.replaceState({}, '', path);
    else history.pushState({}, '', path);
  }
  render();
}

window.addEventListener('popstate', () => render());

// ---------------------------------------------------------------------------------------------
// Top-level rendering

async function boot() {
  attempt(async () => {
    const data = await gql(Q.serverInfo);
    state.serverInfo = data.serverInfo;
    renderServerInfo();
  });
  if (auth.token) {
    try {
      const data = await gql(Q.me);
      state.user = data.me;
      state.usage = data.usage;
    } catch (err) {
      if (err.code !== 'UNAUTHENTICATED') {
        // Keep the session: the server may just be unreachable for a moment.
        showError(err);
        mount(
          $('main'),
          h(
            'div',
            { class: 'empty-state', testid: 'boot-failed' },
            h('h2', {}, 'CodeKraft is not reachable'),
            h('p', { class: 'muted' }, 'Your work is safe on the server. Try again in a moment.'),
            h('button', { class: 'btn btn-primary', onclick: () => boot() }, icon('refresh'), 'Try again'),
          ),
        );
        return;
      }
      sessionEnded();
      return;
    }
  }
  render();
}

function render() {
  renderHeader();
  if (!auth.token || !state.user) {
    closeProject();
    renderAuth();
    return;
  }
  const main = $('main');
  if (!main.querySelector('.shell')) {
    mount(
      main,
      h(
        'div',
        { class: 'shell' },
        h('aside', { class: 'sidebar', id: 'sidebar', 'aria-label': 'Your projects' }),
        h('section', { class: 'content', id: 'content' }),
      ),
    );
    loadProjects();
  }
  renderSidebar();
  const r = route();
  if (r.name === 'project') openProject(r.id);
  else if (r.name === 'api-keys') {
    closeProject();
    renderApiKeysPage($('content'), showError);
  } else {
    closeProject();
    renderHome();
  }
}

function renderHeader() {
  renderServerInfo();
  $('menu-toggle').hidden = !auth.token || !state.user;
  const slot = $('account');
  if (!auth.token || !state.user) {
    mount(slot);
    return;
  }
  const u = state.usage;
  mount(
    slot,
    u
      ? h(
          'div',
          {
            class: `usage ${u.remaining === 0 ? 'usage-empty' : ''}`,
            testid: 'usage',
            title: `Renews ${formatDate(u.resetsAt)}`,
          },
          h('span', { class: 'plan', testid: 'usage-plan' }, u.plan),
          h(
            'span',
            { testid: 'usage-remaining' },
            h('strong', {}, String(u.remaining)),
            ` / ${u.limit}`,
            h('span', { class: 'usage-unit' }, ' credits'),
          ),
          h(
            'span',
            { class: 'muted usage-reset', testid: 'usage-reset' },
            `renews ${formatDate(u.resetsAt, { dateStyle: 'medium' })}`,
          ),
          h(
            'span',
            { class: 'muted usage-spend', testid: 'usage-spend' },
            u.spendCapUsd === null || u.spendCapUsd === undefined
              ? `${fmtUsd(u.spentUsd || 0)} spent`
              : `${fmtUsd(u.spentUsd || 0)} of ${fmtUsd(u.spendCapUsd)} spent`,
          ),
        )
      : null,
    h('span', { class: 'user-email muted', testid: 'user-email' }, state.user.email || ''),
    h(
      'a',
      {
        class: 'btn btn-ghost',
        href: '/settings/api-keys',
        testid: 'api-keys-link',
        onclick: (event) => {
          event.preventDefault();
          navigate('/settings/api-keys');
        },
      },
      icon('bolt'),
      h('span', { class: 'hide-sm' }, 'API keys'),
    ),
    h(
      'button',
      { class: 'btn btn-ghost', testid: 'sign-out', onclick: signOut, 'aria-label': 'Sign out' },
      icon('logout'),
      h('span', { class: 'hide-sm' }, 'Sign out'),
    ),
  );
}

function renderServerInfo() {
  const info = state.serverInfo;
  const slot = $('server-info');
  const banner = $('offline-banner');
  if (!info) return;
  mount(
    slot,
    h('span', { class: `dot ${info.modelOffline ? 'dot-warn' : 'dot-ok'}`, 'aria-hidden': 'true' }),
    h('span', {}, info.modelOffline ? 'offline model' : `${info.modelProvider} · ${info.model}`),
    h('span', { class: 'muted' }, ` · ${info.sandboxProvider} sandbox`),
  );
  slot.title = `Model provider: ${info.modelProvider}, model: ${info.model}, sandbox: ${info.sandboxProvider}`;
  banner.hidden = !info.modelOffline;
  if (info.modelOffline) {
    mount(
      banner,
      icon('bolt'),
      h(
        'span',
        {},
        h('strong', {}, 'The model is offline. '),
        h(
          'span',
          { class: 'offline-detail' },
          'No AI model is configured on this server, so generations are deterministic offline demos.',
        ),
        h('span', { class: 'offline-short' }, 'Generations are deterministic demos.'),
      ),
    );
  }
}

async function refreshUsage() {
  if (!auth.token) return;
  try {
    const data = await gql(Q.usage);
    state.usage = data.usage;
    renderHeader();
  } catch (err) {
    if (err.code === 'UNAUTHENTICATED') sessionEnded();
  }
}

// ---------------------------------------------------------------------------------------------
// Sign in / sign up

function renderAuth() {
  const signUp = state.authMode === 'signup';
  const form = h(
    'form',
    { class: 'auth-card card', testid: 'auth-form', onsubmit: submitAuth, 'aria-labelledby': 'auth-title' },
    h('div', { class: 'brand-mark big', 'aria-hidden': 'true' }, 'CK'),
    h('h1', { id: 'auth-title' }, signUp ? 'Create your account' : 'Welcome back'),
    h('p', { class: 'muted' }, 'Describe an app, watch it being built, keep chatting to refine it.'),
    h(
      'div',
      { class: 'segmented', role: 'tablist', 'aria-label': 'Sign in or sign up' },
      h(
        'button',
        {
          type: 'button',
          role: 'tab',
          'aria-selected': String(!signUp),
          testid: 'auth-mode-signin',
          onclick: () => setAuthMode('signin'),
        },
        'Sign in',
      ),
      h(
        'button',
        {
          type: 'button',
          role: 'tab',
          'aria-selected': String(signUp),
          testid: 'auth-mode-signup',
          onclick: () => setAuthMode('signup'),
        },
        'Sign up',
      ),
    ),
    state.authNotice ? h('p', { class: 'notice', testid: 'auth-notice', role: 'status' }, state.authNotice) : null,
    h(
      'label',
      { class: 'field' },
      h('span', {}, 'Email'),
      h('input', {
        type: 'email',
        name: 'email',
        required: true,
        autocomplete: 'email',
        testid: 'auth-email',
        placeholder: 'you@example.com',
      }),
    ),
    h(
      'label',
      { class: 'field' },
      h('span', {}, 'Password'),
      h('input', {
        type: 'password',
        name: 'password',
        required: true,
        minlength: signUp ? '8' : null,
        autocomplete: signUp ? 'new-password' : 'current-password',
        testid: 'auth-password',
      }),
    ),
    h('p', { class: 'form-error', testid: 'auth-error', role: 'alert', hidden: true }),
    h(
      'button',
      { type: 'submit', class: 'btn btn-primary btn-block', testid: 'auth-submit' },
      signUp ? 'Create account' : 'Sign in',
    ),
  );
  mount($('main'), h('div', { class: 'auth-page' }, form));
}

function setAuthMode(mode) {
  state.authMode = mode;
  const email = document.querySelector('[data-testid="auth-email"]')?.value;
  renderAuth();
  if (email) document.querySelector('[data-testid="auth-email"]').value = email;
}

async function submitAuth(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const email = form.email.value.trim();
  const password = form.password.value;
  const errorEl = form.querySelector('[data-testid="auth-error"]');
  const button = form.querySelector('[data-testid="auth-submit"]');
  errorEl.hidden = true;
  button.disabled = true;
  try {
    const signUp = state.authMode === 'signup';
    const data = await gql(signUp ? Q.signUp : Q.signIn, { email, password });
    const payload = signUp ? data.signUp : data.signIn;
    auth.token = payload.token;
    state.user = payload.user;
    state.authNotice = null;
    const me = await gql(Q.me);
    state.user = me.me;
    state.usage = me.usage;
    clearError();
    render();
  } catch (err) {
    auth.token = null;
    errorEl.textContent = err instanceof GqlError ? `${err.message} (${err.code})` : String(err);
    errorEl.hidden = false;
    button.disabled = false;
  }
}

function signOut() {
  // Revoke the session on the server too (the request takes the token before it is cleared);
  // signing out here does not wait for it.
  gql(Q.signOut).catch(() => {});
  auth.token = null;
  state.user = null;
  state.usage = null;
  state.projects = [];
  state.authNotice = null;
  closeProject();
  ws.close();
  history.pushState({}, '', '/');
  render();
}

// ---------------------------------------------------------------------------------------------
// Project list

async function loadProjects({ more = false } = {}) {
  await attempt(async () => {
    const data = await gql(Q.projects, { first: 20, after: more ? state.projectsCursor : null });
    const page = data.projects;
    const nodes = page.edges.map((e) => e.node);
    state.projects = more ? [...state.projects, ...nodes] : nodes;
    state.projectsCursor = page.pageInfo.endCursor;
    state.projectsHasMore = page.pageInfo.hasNextPage;
    renderSidebar();
  });
}

function renderSidebar() {
  const sidebar = $('sidebar');
  if (!sidebar) return;
  const current = route();
  const items = state.projects.map((p) => {
    const active = current.name === 'project' && current.id === p.id;
    if (state.editingProjectId === p.id) {
      return h(
        'li',
        { class: 'project-item editing', testid: 'project-item', dataset: { projectId: p.id } },
        h(
          'form',
          { class: 'rename-form', onsubmit: (e) => submitRename(e, p) },
          h('input', {
            name: 'name',
            value: p.name,
            'aria-label': `New name for ${p.name}`,
            testid: 'project-rename-input',
            maxlength: '100',
            required: true,
            onkeydown: (e) => {
              if (e.key === 'Escape') {
                state.editingProjectId = null;
                renderSidebar();
              }
            },
          }),
          h(
            'button',
            { type: 'submit', class: 'icon-btn', 'aria-label': 'Save name', testid: 'project-rename-save' },
            icon('check'),
          ),
        ),
      );
    }
    const confirming = state.confirmDeleteId === p.id;
    return h(
      'li',
      { class: `project-item ${active ? 'active' : ''}`, testid: 'project-item', dataset: { projectId: p.id } },
      h(
        'a',
        {
          href: `/projects/${p.id}`,
          class: 'project-link',
          testid: 'project-link',
          'aria-current': active ? 'page' : null,
          onclick: (e) => {
            if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
            e.preventDefault();
            closeSidebarOnMobile();
            navigate(`/projects/${p.id}`);
          },
        },
        h('span', { class: 'project-name' }, p.name),
        h('span', { class: 'project-time muted' }, timeAgo(p.updatedAt)),
      ),
      h(
        'div',
        { class: 'project-actions' },
        confirming
          ? [
              h(
                'button',
                {
                  class: 'btn btn-danger btn-xs',
                  testid: 'project-delete-confirm',
                  onclick: () => deleteProject(p),
                },
                'Delete',
              ),
              h(
                'button',
                {
                  class: 'btn btn-ghost btn-xs',
                  onclick: () => {
                    state.confirmDeleteId = null;
                    renderSidebar();
                  },
                },
                'Keep',
              ),
            ]
          : [
              h(
                'button',
                {
                  class: 'icon-btn',
                  'aria-label': `Rename ${p.name}`,
                  title: 'Rename',
                  testid: 'project-rename',
                  onclick: () => {
                    state.editingProjectId = p.id;
                    state.confirmDeleteId = null;
                    renderSidebar();
                    sidebar.querySelector('[data-testid="project-rename-input"]')?.select();
                  },
                },
                icon('edit'),
              ),
              h(
                'button',
                {
                  class: 'icon-btn',
                  'aria-label': `Delete ${p.name}`,
                  title: 'Delete',
                  testid: 'project-delete',
                  onclick: () => {
                    state.confirmDeleteId = p.id;
                    state.editingProjectId = null;
                    renderSidebar();
                  },
                },
                icon('trash'),
              ),
            ],
      ),
    );
  });
  mount(
    sidebar,
    h(
      'button',
      {
        class: 'btn btn-primary btn-block',
        testid: 'new-project',
        onclick: () => {
          closeSidebarOnMobile();
          navigate('/');
        },
      },
      icon('plus'),
      'New app',
    ),
    h('h2', { class: 'sidebar-title' }, 'Projects'),
    state.projects.length
      ? h('ul', { class: 'project-list', testid: 'project-list' }, items)
      : h('p', { class: 'muted empty', testid: 'project-list-empty' }, 'No projects yet.'),
    state.projectsHasMore
      ? h(
          'button',
          { class: 'btn btn-ghost btn-block', testid: 'projects-more', onclick: () => loadProjects({ more: true }) },
          'Load more',
        )
      : null,
  );
}

function closeSidebarOnMobile() {
  document.body.classList.remove('sidebar-open');
}

async function submitRename(event, project) {
  event.preventDefault();
  const name = event.currentTarget.name.value.trim();
  if (!name || name === project.name) {
    state.editingProjectId = null;
    renderSidebar();
    return;
  }
  await attempt(async () => {
    const data = await gql(Q.renameProject, { id: project.id, name });
    project.name = data.renameProject.name;
    if (state.project?.id === project.id) {
      state.project.name = project.name;
      renderProjectHeader();
    }
  });
  state.editingProjectId = null;
  renderSidebar();
}

async function deleteProject(project) {
  await attempt(async () => {
    await gql(Q.deleteProject, { id: project.id });
    state.projects = state.projects.filter((p) => p.id !== project.id);
    state.confirmDeleteId = null;
    if (state.project?.id === project.id) navigate('/', { replace: true });
    else renderSidebar();
  });
}

// ---------------------------------------------------------------------------------------------
// Home: a prompt box

const EXAMPLES = [
  'a todo app with dark mode',
  'a pomodoro timer with a progress ring',
  'a landing page for a coffee shop',
  'a markdown notes app',
];

function renderHome() {
  const content = $('content');
  const textarea = h('textarea', {
    id: 'home-prompt',
    name: 'prompt',
    rows: '4',
    required: true,
    testid: 'home-prompt',
    placeholder: 'Describe the app you want, e.g. "a todo app with dark mode"',
    onkeydown: (e) => {
      if (e.key === 'Enter' && (e.metaKey || e.ctrlKey)) e.currentTarget.form.requestSubmit();
    },
  });
  mount(
    content,
    h(
      'div',
      { class: 'home', testid: 'home' },
      h('h1', { class: 'hero-title' }, 'What should we build?'),
      h('p', { class: 'muted hero-sub' }, 'Describe an app. An agent writes a Next.js project and runs it live.'),
      h(
        'form',
        { class: 'prompt-card card', testid: 'home-form', onsubmit: submitPrompt },
        h('label', { for: 'home-prompt', class: 'sr-only' }, 'Describe your app'),
        textarea,
        h(
          'div',
          { class: 'prompt-actions' },
          h('span', { class: 'muted hint' }, 'Ctrl/⌘ + Enter to build · uses 1 credit'),
          h(
            'button',
            { type: 'submit', class: 'btn btn-primary', testid: 'home-submit' },
            'Build it',
            icon('send'),
          ),
        ),
      ),
      h(
        'div',
        { class: 'examples', 'aria-label': 'Examples' },
        EXAMPLES.map((text) =>
          h(
            'button',
            {
              type: 'button',
              class: 'chip',
              onclick: () => {
                textarea.value = text;
                textarea.focus();
              },
            },
            text,
          ),
        ),
      ),
    ),
  );
  document.title = 'CodeKraft';
}

async function submitPrompt(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const prompt = form.prompt.value.trim();
  if (!prompt) return;
  const button = form.querySelector('[data-testid="home-submit"]');
  button.disabled = true;
  const data = await attempt(() => gql(Q.createProject, { prompt }));
  button.disabled = false;
  if (!data) return;
  clearError();
  const project = data.createProject.project;
  state.projects = [project, ...state.projects.filter((p) => p.id !== project.id)];
  refreshUsage();
  navigate(`/projects/${project.id}`);
}

// ---------------------------------------------------------------------------------------------
// Project view

function closeProject() {
  if (stopEvents) stopEvents();
  stopEvents = null;
  clearTimeout(refreshTimer);
  state.project = null;
  state.messages = [];
  state.activity = [];
  state.liveText = new Map();
  state.lastSeq = null;
  state.selectedFragmentId = null;
  state.selectedFile = null;
  state.preview = { projectId: null, url: null, status: 'idle', code: null, message: null };
  state.restoringFragmentId = null;
  state.forkingFragmentId = null;
  state.fileContents = new Map();
  state.diffs = new Map();
}

async function openProject(id) {
  if (state.project?.id === id && $('conversation')) return;
  closeProject();
  state.project = { id, name: '' };
  renderProjectShell();
  const ok = await loadConversation();
  if (!ok || state.project?.id !== id) return;
  subscribeEvents(id);
  if (latestFragment()) openLivePreview(); // not awaited: the preview wakes up on its own
}

/**
 * Asks the server for a live preview of the open project (`openPreview` reconnects its sandbox
 * or rebuilds it from the latest files); the latest fragment's iframe then uses that URL.
 * Resolves to the URL, or null when it failed (the stored sandboxUrl is kept then).
 */
async function openLivePreview() {
  const projectId = state.project?.id;
  if (!projectId) return null;
  state.preview = { ...state.preview, projectId, status: 'waking', code: null, message: null };
  renderPreview();
  try {
    const data = await gql(Q.openPreview, { projectId });
    if (state.project?.id !== projectId) return null;
    state.preview = { projectId, url: data.openPreview.url, status: 'ready', code: null, message: null };
    renderPreview();
    return state.preview.url;
  } catch (err) {
    if (state.project?.id !== projectId) return null;
    if (err instanceof GqlError && err.code === 'UNAUTHENTICATED') {
      sessionEnded();
      return null;
    }
    state.preview = {
      ...state.preview,
      projectId,
      status: 'failed',
      code: err instanceof GqlError ? err.code : 'ERROR',
      message: err.message || String(err),
    };
    renderPreview();
    return null;
  }
}

/** The URL a fragment is shown at: the live one for the latest fragment once it is known. */
function previewUrlOf(f) {
  const live = state.preview.projectId === state.project?.id ? state.preview.url : null;
  return live && f.id === latestFragment()?.id ? live : f.sandboxUrl;
}

/** Undo: makes an earlier version the newest again, then follows it. */
async function discardDraft(event, fragment) {
  event.currentTarget.disabled = true;
  const data = await attempt(() => gql(Q.discardDraft, { fragmentId: fragment.id }));
  if (data) {
    clearError();
    if (state.selectedFragmentId === fragment.id) state.selectedFragmentId = null;
  }
  await loadConversation();
}

async function restoreVersion(event, fragment) {
  event.currentTarget.disabled = true;
  state.restoringFragmentId = fragment.id;
  renderConversation();
  const data = await attempt(() => gql(Q.restoreFragment, { fragmentId: fragment.id }));
  state.restoringFragmentId = null;
  if (data) {
    clearError();
    state.selectedFragmentId = null; // follow the new latest version
    state.selectedFile = null;
  }
  await loadConversation();
}

/** Fork: a new project starting from this version, then opens it. */
async function forkVersion(event, fragment) {
  event.currentTarget.disabled = true;
  state.forkingFragmentId = fragment.id;
  renderConversation();
  const data = await attempt(() => gql(Q.forkProject, { fragmentId: fragment.id }));
  state.forkingFragmentId = null;
  if (!data) {
    renderConversation();
    return;
  }
  clearError();
  const project = data.forkProject;
  state.projects = [project, ...state.projects.filter((p) => p.id !== project.id)];
  navigate(`/projects/${project.id}`);
}

/** Saves the project's newest version as a zip. */
async function downloadProject(event) {
  const button = event.currentTarget;
  const projectId = state.project?.id;
  if (!projectId) return;
  button.disabled = true;
  const done = await attempt(() => downloadExport(projectId).then(() => true));
  button.disabled = false;
  if (done) clearError();
}

/** Loads the whole conversation (all pages). Returns false when the project is gone. */
async function loadConversation() {
  const id = state.project?.id;
  if (!id) return false;
  try {
    let after = null;
    const messages = [];
    let project;
    for (;;) {
      const data = await gql(Q.project, { id, after });
      project = data.project;
      messages.push(...project.messages.edges.map((e) => e.node));
      if (!project.messages.pageInfo.hasNextPage) break;
      after = project.messages.pageInfo.endCursor;
    }
    if (state.project?.id !== id) return false;
    state.project = { id: project.id, name: project.name, sandboxId: project.sandboxId };
    state.messages = messages;
    renderProjectHeader();
    renderConversation();
    renderPreview();
    return true;
  } catch (err) {
    if (err instanceof GqlError && err.code === 'NOT_FOUND') {
      mount(
        $('content'),
        h(
          'div',
          { class: 'empty-state', testid: 'project-not-found' },
          h('h2', {}, 'Project not found'),
          h('p', { class: 'muted' }, 'It may have been deleted, or it belongs to another account.'),
          h('button', { class: 'btn btn-primary', onclick: () => navigate('/') }, 'Start a new app'),
        ),
      );
      return false;
    }
    showError(err);
    return false;
  }
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    loadConversation();
  }, 120);
}

function subscribeEvents(projectId) {
  stopEvents = ws.subscribe(
    Q.projectEvents,
    () => ({ projectId, after: state.lastSeq }),
    {
      next: (data) => {
        const event = data?.projectEvents;
        if (!event || state.project?.id !== projectId) return;
        if (state.lastSeq !== null && event.seq <= state.lastSeq) return; // already seen
        state.lastSeq = event.seq;
        onEvent(event);
      },
      error: (err) => {
        if (state.project?.id !== projectId) return;
        stopEvents = null;
        showError(err);
      },
      complete: () => {
        // The server should keep it open; if it ends, pick up where we left off.
        if (state.project?.id === projectId) setTimeout(() => {
          if (state.project?.id === projectId) subscribeEvents(projectId);
        }, 1000);
      },
    },
  );
}

function onEvent(event) {
  const p = event.data || {};
  switch (event.kind) {
    case 'MODEL_TEXT_DELTA': {
      state.liveText.set(event.runId, (state.liveText.get(event.runId) || '') + (p.text || ''));
      const last = state.activity[state.activity.length - 1];
      if (last && last.kind === 'MODEL_TEXT_DELTA' && last.runId === event.runId) {
        last.text += p.text || '';
        last.seq = event.seq;
      } else {
        pushActivity({ ...event, text: p.text || '' });
      }
      break;
    }
    case 'TOOL_OUTPUT': {
      const text = p.truncated ? `\n… ${fmtInt(p.omittedBytes)} more bytes not shown …\n` : p.text || '';
      const call = [...state.activity].reverse().find((a) => a.kind === 'TOOL_CALL_STARTED' && a.data.callId === p.callId);
      if (call) call.output = ((call.output || '') + text).slice(-4000);
      else pushActivity({ ...event, text });
      break;
    }
    case 'TOOL_CALL_FINISHED': {
      const call = [...state.activity].reverse().find((a) => a.kind === 'TOOL_CALL_STARTED' && a.data.callId === p.callId);
      if (call) {
        call.finished = { ok: p.ok, error: p.toolError ? toolErrorText(p.toolError) : '' };
      } else pushActivity(event);
      break;
    }
    case 'BUILD_DIAGNOSTICS': {
      pushActivity(event);
      // Each problem also shows under the newest write of its file.
      for (const d of p.diagnostics || []) {
        const write = [...state.activity].reverse().find((a) => a.kind === 'FILE_WRITTEN' && a.data.path === d.file);
        if (write) write.diagnostics = [...(write.diagnostics || []).filter((w) => w.round === p.round), { ...d, round: p.round }];
      }
      break;
    }
    default:
      pushActivity(event);
  }
  if (event.kind === 'RUN_FINISHED') state.liveText.delete(event.runId);
  if (event.kind === 'RUN_STARTED') state.liveText.set(event.runId, '');
  if (['MESSAGE_CREATED', 'MESSAGE_DELETED', 'RUN_FINISHED', 'RUN_STARTED', 'RUN_QUEUED', 'FRAGMENT_CREATED', 'DRAFT_DISCARDED'].includes(event.kind)) {
    scheduleRefresh();
  }
  if (event.kind === 'RUN_FINISHED') {
    refreshUsage();
    loadProjects();
  }
  renderActivity();
  if (event.kind === 'MODEL_TEXT_DELTA') renderLiveText(event.runId);
}

function pushActivity(item) {
  state.activity.push(item);
  if (state.activity.length > 400) state.activity.splice(0, state.activity.length - 400);
}

function renderProjectShell() {
  const composerInput = h('textarea', {
    id: 'composer-input',
    name: 'content',
    rows: '2',
    required: true,
    testid: 'composer-input',
    placeholder: 'Ask for a change…',
    onkeydown: (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        e.currentTarget.form.requestSubmit();
      }
    },
  });
  mount(
    $('content'),
    h(
      'div',
      { class: 'project', testid: 'project-view' },
      h(
        'section',
        { class: 'chat', 'aria-label': 'Conversation' },
        h('header', { class: 'pane-header', id: 'project-header' }),
        h('div', { class: 'conversation', id: 'conversation', testid: 'conversation', 'aria-live': 'polite' }),
        h(
          'details',
          { class: 'activity', id: 'activity-panel', testid: 'activity-panel' },
          h(
            'summary',
            {},
            h('span', {}, 'Activity'),
            h('span', { class: 'live-status', id: 'live-status', testid: 'live-status' }),
          ),
          h('ol', { class: 'activity-list', id: 'activity', testid: 'activity' }),
        ),
        h(
          'form',
          { class: 'composer', testid: 'composer', onsubmit: submitFollowUp },
          h('label', { for: 'composer-input', class: 'sr-only' }, 'Follow-up message'),
          composerInput,
          h(
            'button',
            { type: 'submit', class: 'btn btn-primary', testid: 'composer-send', 'aria-label': 'Send' },
            icon('send'),
          ),
        ),
      ),
      h('section', { class: 'preview', id: 'preview', testid: 'preview-pane', 'aria-label': 'Preview' }),
    ),
  );
  renderProjectHeader();
  const box = $('conversation');
  let stick = true;
  box.addEventListener('scroll', () => {
    stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  });
  new ResizeObserver(() => {
    if (stick) box.scrollTop = box.scrollHeight;
  }).observe(box);
  mount(box, h('div', { class: 'loading muted' }, 'Loading conversation…'));
  renderActivity();
  renderLiveStatus(ws.state);
  renderPreview();
}

function renderProjectHeader() {
  const header = $('project-header');
  if (!header || !state.project) return;
  mount(
    header,
    h('h1', { class: 'project-title', testid: 'project-name' }, state.project.name || '…'),
    latestFragment()
      ? h(
          'button',
          {
            class: 'btn btn-ghost btn-xs',
            testid: 'download-zip',
            title: 'Download the newest version as a .zip (npm install, npm run dev)',
            onclick: downloadProject,
          },
          icon('download'),
          'Download .zip',
        )
      : null,
  );
  document.title = state.project.name ? `${state.project.name} · CodeKraft` : 'CodeKraft';
}

/** The project's current version: drafts are not one until restored. */
function latestFragment() {
  for (let i = state.messages.length - 1; i >= 0; i--) {
    const fragment = state.messages[i].fragment;
    if (fragment && !fragment.draft) return fragment;
  }
  return null;
}

function selectedFragment() {
  if (state.selectedFragmentId) {
    const m = state.messages.find((m) => m.fragment?.id === state.selectedFragmentId);
    if (m) return m.fragment;
  }
  return latestFragment();
}

function renderConversation() {
  const box = $('conversation');
  if (!box) return;
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const active = (run) => run && (run.status === 'QUEUED' || run.status === 'RUNNING');
  // A run is answered by its ASSISTANT message, unless it is running again (a retry after an
  // ERROR): then a working bubble follows the run's last message.
  const answered = new Set(
    state.messages.filter((m) => m.role === 'ASSISTANT' && m.run && !active(m.run)).map((m) => m.run.id),
  );
  const lastOfRun = new Map();
  state.messages.forEach((m, i) => m.run && lastOfRun.set(m.run.id, i));
  const selected = selectedFragment();
  const busy = state.messages.some((m) => active(m.run));
  const nodes = [];
  state.messages.forEach((m, i) => {
    nodes.push(renderMessage(m, selected, Boolean(m.run) && !answered.has(m.run.id), busy));
    if (m.run && !answered.has(m.run.id) && lastOfRun.get(m.run.id) === i) nodes.push(renderPending(m.run));
  });
  if (!nodes.length) nodes.push(h('p', { class: 'muted empty' }, 'No messages yet.'));
  mount(box, nodes);
  if (nearBottom || box.dataset.scrolled !== 'yes') {
    box.scrollTop = box.scrollHeight;
    box.dataset.scrolled = 'yes';
  }
}

function renderMessage(m, selected, superseded = false, busy = false) {
  const isUser = m.role === 'USER';
  const isError = m.type === 'ERROR';
  const f = m.fragment;
  return h(
    'article',
    {
      class: `msg ${isUser ? 'msg-user' : 'msg-assistant'} ${isError ? 'msg-error' : ''} ${!isUser && superseded ? 'msg-superseded' : ''}`,
      testid: 'message',
      dataset: { role: m.role, type: m.type, messageId: m.id },
    },
    h(
      'div',
      { class: 'msg-meta' },
      h('span', { class: 'msg-author' }, isUser ? 'You' : 'CodeKraft'),
      h('time', { datetime: m.createdAt, class: 'muted', title: formatDate(m.createdAt) }, timeAgo(m.createdAt)),
    ),
    h('div', { class: 'msg-body', testid: 'message-content' }, m.content),
    f ? renderFragment(f, selected, busy) : null,
    !isUser && m.run && !superseded ? renderRunMeta(m.run) : null,
  );
}

/** A version's card (selects it in the preview pane), its Fork button and, unless it is the latest, its Restore button. */
function renderFragment(f, selected, busy) {
  const isSelected = Boolean(selected && selected.id === f.id);
  const latest = latestFragment();
  return h(
    'div',
    { class: 'fragment-row' },
    h(
      'button',
      {
        class: `fragment-card ${isSelected ? 'selected' : ''}`,
        testid: 'fragment-card',
        dataset: { fragmentId: f.id },
        'aria-pressed': String(isSelected),
        onclick: () => {
          state.selectedFragmentId = f.id;
          state.selectedFile = null;
          renderConversation();
          renderPreview();
        },
      },
      h('span', { class: 'fragment-icon', 'aria-hidden': 'true' }, icon('bolt')),
      h(
        'span',
        { class: 'fragment-text' },
        h('span', { class: 'fragment-title', testid: 'fragment-title' }, f.title),
        f.draft ? h('span', { class: 'badge draft-badge', testid: 'draft-badge', title: 'What an unfinished run wrote' }, 'Draft') : null,
        h('span', { class: 'muted fragment-files' }, `${plural((f.fileList || []).length, 'file')} · ${f.sandboxUrl}`),
      ),
    ),
    h(
      'div',
      { class: 'fragment-actions' },
      f.draft
        ? h(
            'button',
            {
              class: 'btn btn-ghost btn-xs discard-btn',
              testid: 'discard-draft',
              dataset: { fragmentId: f.id },
              disabled: Boolean(state.restoringFragmentId),
              title: `Delete the draft “${f.title}”`,
              onclick: (e) => discardDraft(e, f),
            },
            'Discard',
          )
        : null,
      f.draft || (latest && latest.id !== f.id)
        ? h(
            'button',
            {
              class: 'btn btn-ghost btn-xs restore-btn',
              testid: 'restore-fragment',
              dataset: { fragmentId: f.id },
              disabled: busy || Boolean(state.restoringFragmentId),
              title: busy ? 'Wait for the current generation to finish' : `Make “${f.title}” the newest version again`,
              onclick: (e) => restoreVersion(e, f),
            },
            icon('undo'),
            state.restoringFragmentId === f.id ? 'Restoring…' : f.draft ? 'Restore' : 'Restore this version',
          )
        : null,
      h(
        'button',
        {
          class: 'btn btn-ghost btn-xs fork-btn',
          testid: 'fork-fragment',
          dataset: { fragmentId: f.id },
          disabled: Boolean(state.forkingFragmentId),
          title: `Start a new project from “${f.title}”`,
          onclick: (e) => forkVersion(e, f),
        },
        icon('fork'),
        state.forkingFragmentId === f.id ? 'Forking…' : 'Fork',
      ),
    ),
  );
}

function renderPending(run) {
  const active = run.status === 'QUEUED' || run.status === 'RUNNING';
  return h(
    'article',
    {
      class: `msg msg-assistant msg-pending ${run.status === 'FAILED' ? 'msg-error' : ''}`,
      testid: 'pending-run',
      dataset: { runId: run.id, status: run.status },
    },
    h(
      'div',
      { class: 'msg-meta' },
      h('span', { class: 'msg-author' }, 'CodeKraft'),
      active ? h('span', { class: 'typing', 'aria-label': 'working' }, h('i'), h('i'), h('i')) : null,
    ),
    h(
      'div',
      { class: 'msg-body live-text', id: `live-${run.id}` },
      liveTextOf(run.id) ||
        (run.status === 'QUEUED'
          ? 'Waiting for a worker…'
          : run.status === 'RUNNING'
            ? 'Building your app…'
            : run.error || run.status.toLowerCase()),
    ),
    renderRunMeta(run),
  );
}

/** The streamed model text, without the agent's `<task_summary>` markers. */
const liveTextOf = (runId) => (state.liveText.get(runId) || '').replace(/<\/?task_summary>/g, '').trim();

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

function renderLiveText(runId) {
  const el = document.getElementById(`live-${runId}`);
  if (el) {
    el.textContent = liveTextOf(runId) || 'Building your app…';
    const box = $('conversation');
    if (box && box.scrollHeight - box.scrollTop - box.clientHeight < 160) box.scrollTop = box.scrollHeight;
  }
}

function renderRunMeta(run) {
  const cancellable = run.status === 'QUEUED' || run.status === 'RUNNING';
  return h(
    'div',
    { class: 'run-meta', testid: 'run-meta', dataset: { runId: run.id, status: run.status } },
    h('span', { class: `badge badge-${run.status.toLowerCase()}`, testid: 'run-status' }, run.status.toLowerCase()),
    h(
      'span',
      { class: 'muted', testid: 'run-tokens', title: 'input / output tokens' },
      `${fmtInt(run.inputTokens)} in · ${fmtInt(run.outputTokens)} out`,
    ),
    h('span', { class: 'muted', testid: 'run-cost', title: 'estimated cost' }, fmtUsd(run.costUsd)),
    run.error && run.status !== 'SUCCEEDED'
      ? h('span', { class: 'run-error', testid: 'run-error' }, run.error)
      : null,
    cancellable
      ? h(
          'button',
          { class: 'btn btn-ghost btn-xs', testid: 'cancel-run', onclick: (e) => runAction(e, Q.cancelRun, run.id) },
          icon('stop'),
          'Cancel',
        )
      : null,
    run.status === 'FAILED'
      ? h(
          'button',
          { class: 'btn btn-ghost btn-xs', testid: 'retry-run', onclick: (e) => runAction(e, Q.retryRun, run.id) },
          icon('retry'),
          'Retry',
        )
      : null,
  );
}

async function runAction(event, mutation, runId) {
  event.currentTarget.disabled = true;
  const data = await attempt(() => gql(mutation, { runId }));
  if (data) {
    clearError();
    refreshUsage();
  }
  loadConversation();
}

async function submitFollowUp(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const content = form.content.value.trim();
  if (!content || !state.project) return;
  const button = form.querySelector('[data-testid="composer-send"]');
  button.disabled = true;
  const data = await attempt(() => gql(Q.sendMessage, { projectId: state.project.id, content }));
  button.disabled = false;
  if (!data) return;
  clearError();
  form.content.value = '';
  state.selectedFragmentId = null; // follow the newest result
  refreshUsage();
  loadConversation();
}

// Activity feed

const KIND_LABEL = {
  RUN_QUEUED: 'Queued',
  RUN_STARTED: 'Started',
  SANDBOX_READY: 'Sandbox ready',
  MODEL_TEXT_DELTA: 'Model',
  MODEL_RESPONSE: 'Model responded',
  TOOL_CALL_STARTED: 'Tool',
  TOOL_OUTPUT: 'Output',
  FILE_WRITTEN: 'Wrote',
  TOOL_CALL_FINISHED: 'Tool finished',
  BUILD_DIAGNOSTICS: 'Build check',
  MESSAGE_CREATED: 'Message',
  MESSAGE_DELETED: 'Message removed',
  FRAGMENT_CREATED: 'App ready',
  DRAFT_DISCARDED: 'Draft discarded',
  RUN_FINISHED: 'Finished',
};

/** What a failed tool told the model: its message, else the whole JSON. */
function toolErrorText(error) {
  return typeof error?.error === 'string' ? error.error : JSON.stringify(error);
}

function describe(item) {
  const p = item.data || {};
  switch (item.kind) {
    case 'RUN_STARTED':
      return p.attempt > 1 ? `attempt ${p.attempt}` : '';
    case 'SANDBOX_READY':
      return p.previewUrl || p.sandboxId || '';
    case 'MODEL_TEXT_DELTA':
      return item.text;
    case 'MODEL_RESPONSE':
      return `${fmtInt(p.inputTokens)} in · ${fmtInt(p.outputTokens)} out`;
    case 'TOOL_CALL_STARTED': {
      let args = p.arguments;
      if (typeof args === 'string') {
        try {
          args = JSON.parse(args);
        } catch {
          /* keep the string */
        }
      }
      const hint = args && typeof args === 'object' ? args.path || args.command || '' : '';
      return `${p.name}${hint ? ` ${hint}` : ''}`;
    }
    case 'TOOL_OUTPUT':
      return item.text;
    case 'FILE_WRITTEN':
      return p.path;
    case 'TOOL_CALL_FINISHED':
      return `${p.name} ${p.ok ? 'ok' : `failed${p.toolError ? `: ${toolErrorText(p.toolError)}` : ''}`}`;
    case 'BUILD_DIAGNOSTICS': {
      const count = (p.diagnostics || []).length;
      return count ? `round ${p.round}: ${count} problem${count === 1 ? '' : 's'}` : `round ${p.round}: passed`;
    }
    case 'FRAGMENT_CREATED':
      return `${p.title || ''}${p.draft ? ' (draft)' : ''}`;
    case 'MESSAGE_CREATED':
      return `${(p.role || '').toLowerCase()} ${p.type === 'ERROR' ? 'error' : 'message'}`;
    case 'RUN_QUEUED':
      return p.retry ? 'retry' : '';
    case 'RUN_FINISHED':
      return [
        (p.status || '').toLowerCase(),
        p.inputTokens !== undefined ? `${fmtInt(p.inputTokens)} in · ${fmtInt(p.outputTokens)} out` : '',
        p.costUsd !== undefined ? fmtUsd(p.costUsd) : '',
        p.stopReason && !['COMPLETED', 'CANCELLED', 'ERROR'].includes(p.stopReason) ? p.stopReason.toLowerCase().replaceAll('_', ' ') : '',
        p.error || '',
      ]
        .filter(Boolean)
        .join(' · ');
    default:
      return '';
  }
}

/** `file:line:col CODE message`, one per problem; nothing for none. */
function diagnosticList(diagnostics) {
  if (!diagnostics?.length) return null;
  return h(
    'ul',
    { class: 'diagnostics', testid: 'diagnostics' },
    ...diagnostics.map((d) =>
      h(
        'li',
        { class: `diagnostic severity-${(d.severity || 'ERROR').toLowerCase()}` },
        h('span', { class: 'diagnostic-place' }, [d.file, d.line, d.column].filter((x) => x !== null && x !== undefined).join(':')),
        d.code ? h('span', { class: 'diagnostic-code' }, d.code) : null,
        h('span', { class: 'diagnostic-message' }, d.message),
      ),
    ),
  );
}

let activityFrame = 0;
function renderActivity() {
  if (activityFrame) return;
  activityFrame = requestAnimationFrame(() => {
    activityFrame = 0;
    drawActivity();
  });
}

function drawActivity() {
  const list = $('activity');
  if (!list) return;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const items = state.activity.slice(-200).map((item) => {
    const finished = item.finished;
    return h(
      'li',
      {
        class: `activity-item kind-${item.kind.toLowerCase()} ${finished && !finished.ok ? 'failed' : ''}`,
        testid: 'activity-item',
        dataset: { kind: item.kind, seq: String(item.seq) },
      },
      h('span', { class: 'activity-kind' }, KIND_LABEL[item.kind] || item.kind),
      h('span', { class: 'activity-text' }, describe(item)),
      finished
        ? h('span', { class: `activity-status ${finished.ok ? 'ok' : 'bad'}` }, finished.ok ? '✓' : `✗ ${finished.error || ''}`)
        : null,
      item.output ? h('pre', { class: 'activity-output' }, item.output) : null,
      diagnosticList(item.kind === 'BUILD_DIAGNOSTICS' ? item.data.diagnostics : item.diagnostics),
    );
  });
  mount(list, items.length ? items : h('li', { class: 'muted empty' }, 'Waiting for events…'));
  if (atBottom) list.scrollTop = list.scrollHeight;
  const running = [...state.liveText.keys()].length > 0;
  const panel = $('activity-panel');
  if (panel && running && !panel.dataset.userToggled) panel.open = true;
}

function renderLiveStatus(wsState) {
  const el = $('live-status');
  if (!el) return;
  const labels = { connected: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…', idle: 'offline' };
  el.dataset.state = wsState;
  el.textContent = labels[wsState] || wsState;
}

// Preview pane. The iframe element is kept across re-renders (moving or re-creating it would
// reload the app); it only navigates when the selected fragment changes.

function renderPreview() {
  const pane = $('preview');
  if (!pane) return;
  if (!pane.querySelector('#panel-preview')) {
    mount(
      pane,
      h('header', { class: 'pane-header preview-header', id: 'preview-header' }),
      h('div', { class: 'empty-state', id: 'preview-empty', testid: 'preview-empty' }),
      h(
        'div',
        { class: 'frame-wrap', id: 'panel-preview', role: 'tabpanel', 'aria-labelledby': 'tab-preview' },
        h(
          'div',
          { class: 'frame-waking', id: 'frame-waking', testid: 'preview-waking-overlay', hidden: true },
          h('div', { class: 'spinner-ring', 'aria-hidden': 'true' }),
          h('p', { class: 'muted' }, 'Waking the preview…'),
        ),
        // The generated app runs its own scripts on an origin of its own (`{id}.localhost`, a
        // wildcard domain in production), so `allow-same-origin` gives it its own storage, API
        // routes and HMR socket, never ours: only a frame on our origin could lift its sandbox.
        // No `allow-top-navigation`: a preview cannot navigate the web client away.
        h('iframe', {
          title: 'App preview',
          testid: 'preview-frame',
          sandbox: 'allow-scripts allow-same-origin allow-forms allow-popups allow-modals allow-downloads',
        }),
      ),
      h('div', { class: 'code-view', id: 'panel-code', role: 'tabpanel', 'aria-labelledby': 'tab-code', testid: 'code-view' }),
      h('div', {
        class: 'changes-view',
        id: 'panel-changes',
        role: 'tabpanel',
        'aria-labelledby': 'tab-changes',
        testid: 'changes-view',
      }),
    );
  }
  const header = $('preview-header');
  const empty = $('preview-empty');
  const previewPanel = $('panel-preview');
  const codePanel = $('panel-code');
  const changesPanel = $('panel-changes');
  const frame = previewPanel.querySelector('iframe');
  const f = selectedFragment();
  if (!f) {
    const working = state.messages.some((m) => m.run && (m.run.status === 'QUEUED' || m.run.status === 'RUNNING'));
    header.hidden = previewPanel.hidden = codePanel.hidden = true;
    empty.hidden = false;
    mount(
      empty,
      working ? h('div', { class: 'spinner-ring', 'aria-hidden': 'true' }) : null,
      h('h2', {}, working ? 'Your app is being built' : 'No preview yet'),
      h(
        'p',
        { class: 'muted' },
        working ? 'The preview appears here as soon as the first version is ready.' : 'Send a message to generate an app.',
      ),
    );
    return;
  }
  empty.hidden = true;
  header.hidden = false;
  const isLatest = f.id === latestFragment()?.id;
  const live = state.preview.projectId === state.project?.id ? state.preview : { status: 'idle' };
  // The latest version waits for its live URL (a timed-out sandbox's stored URL would be dead);
  // older versions keep their stored sandboxUrl.
  const waking = isLatest && live.status === 'waking';
  const url = previewUrlOf(f);
  const files = (f.fileList || []).map((entry) => entry.path);
  if (!state.selectedFile || !files.includes(state.selectedFile)) {
    state.selectedFile = files.includes('app/page.tsx') ? 'app/page.tsx' : files[0] || null;
  }
  const tab = (name, label) =>
    h(
      'button',
      {
        role: 'tab',
        id: `tab-${name}`,
        'aria-selected': String(state.previewTab === name),
        'aria-controls': `panel-${name}`,
        testid: `tab-${name}`,
        onclick: () => {
          state.previewTab = name;
          renderPreview();
        },
      },
      label,
    );
  mount(
    header,
    h(
      'div',
      { class: 'tabs', role: 'tablist', 'aria-label': 'Preview, code or changes' },
      tab('preview', 'Preview'),
      tab('code', 'Code'),
      tab('changes', 'Changes'),
    ),
    h(
      'div',
      { class: 'preview-info' },
      h('span', { class: 'preview-title', testid: 'preview-title' }, f.title),
      h('span', { class: 'preview-url muted', testid: 'preview-url' }, url),
    ),
    waking
      ? h(
          'span',
          { class: 'preview-status waking', testid: 'preview-waking', role: 'status' },
          h('span', { class: 'spinner-dot', 'aria-hidden': 'true' }),
          h('span', { class: 'hide-sm' }, 'waking the preview…'),
        )
      : isLatest && live.status === 'failed'
        ? h(
            'span',
            {
              class: 'preview-status failed',
              testid: 'preview-unavailable',
              dataset: { code: live.code },
              title: `${live.message} (${live.code})`,
            },
            h('span', { class: 'hide-sm' }, 'live preview unavailable '),
            h('code', {}, live.code),
          )
        : null,
    h(
      'button',
      {
        class: 'icon-btn',
        'aria-label': 'Reload preview',
        title: 'Reload preview',
        testid: 'preview-reload',
        disabled: waking,
        onclick: async () => {
          if (f.id !== latestFragment()?.id) {
            frame.src = safeUrl(f.sandboxUrl);
            return;
          }
          const before = frame.dataset.key;
          const fresh = await openLivePreview();
          // Navigate again when renderPreview did not (same URL: the app may have restarted).
          if (selectedFragment()?.id === f.id && frame.dataset.key === before) frame.src = safeUrl(fresh || f.sandboxUrl);
        },
      },
      icon('refresh'),
    ),
    h(
      'a',
      { class: 'btn btn-ghost btn-xs', href: safeUrl(url), target: '_blank', rel: 'noopener noreferrer', testid: 'preview-open' },
      icon('external'),
      h('span', { class: 'hide-sm' }, 'Open in new tab'),
    ),
  );
  $('frame-waking').hidden = !waking;
  const key = `${f.id} ${url}`;
  if (!waking && frame.dataset.key !== key) {
    frame.dataset.key = key;
    frame.dataset.fragmentId = f.id;
    frame.title = `Preview of ${f.title}`;
    frame.src = safeUrl(url);
  }
  previewPanel.hidden = state.previewTab !== 'preview';
  codePanel.hidden = state.previewTab !== 'code';
  changesPanel.hidden = state.previewTab !== 'changes';
  if (state.previewTab === 'changes') renderChanges(changesPanel, f);
  if (state.previewTab === 'code') {
    const entry = (f.fileList || []).find((e) => e.path === state.selectedFile);
    const content = entry ? state.fileContents.get(entry.hash) : '';
    if (content === undefined) loadFile(f, entry);
    mount(
      codePanel,
      h(
        'ul',
        { class: 'file-list', testid: 'file-list', 'aria-label': 'Files' },
        files.map((path) =>
          h(
            'li',
            {},
            h(
              'button',
              {
                class: `file-item ${path === state.selectedFile ? 'selected' : ''}`,
                testid: 'file-item',
                dataset: { path },
                'aria-current': path === state.selectedFile ? 'true' : null,
                onclick: () => {
                  state.selectedFile = path;
                  renderPreview();
                },
              },
              icon('file'),
              h('span', {}, path),
            ),
          ),
        ),
      ),
      h(
        'div',
        { class: 'file-viewer' },
        h('div', { class: 'file-path', testid: 'file-path' }, state.selectedFile || ''),
        h(
          'pre',
          {
            class: 'file-content',
            testid: 'file-content',
            tabindex: '0',
            dataset: { path: state.selectedFile || '', loaded: String(content !== undefined) },
          },
          h('code', {}, content === undefined ? 'Loading…' : fileText(content)),
        ),
      ),
    );
  }
}

/** Fetches one file of a version into the content cache, then shows it. */
async function loadFile(f, entry) {
  const key = `loading:${entry.hash}`;
  if (state.fileContents.has(key)) return;
  state.fileContents.set(key, true);
  const data = await attempt(() => gql(Q.fragmentFile, { id: f.id, path: entry.path }));
  state.fileContents.delete(key);
  if (!data) return;
  state.fileContents.set(entry.hash, data.fragment.file ?? '');
  renderPreview();
}

/** The version before `f` in the conversation, if any. */
function previousFragment(f) {
  const versions = state.messages.map((m) => m.fragment).filter(Boolean);
  const index = versions.findIndex((v) => v.id === f.id);
  return index > 0 ? versions[index - 1] : null;
}

/** The Changes tab: what this version changed from the one before it. */
function renderChanges(panel, f) {
  const previous = previousFragment(f);
  if (!previous) {
    mount(panel, h('p', { class: 'muted empty', testid: 'changes-first' }, 'The first version: every file is new.'));
    return;
  }
  const key = `${f.id}:${previous.id}`;
  const diff = state.diffs.get(key);
  if (diff === undefined) {
    mount(panel, h('p', { class: 'muted empty' }, 'Loading changes…'));
    state.diffs.set(key, null);
    attempt(() => gql(Q.fragmentDiff, { id: f.id, against: previous.id })).then((data) => {
      if (data) state.diffs.set(key, data.fragment.diff);
      else state.diffs.delete(key);
      if (selectedFragment()?.id === f.id) renderPreview();
    });
    return;
  }
  if (diff === null) return; // loading
  if (!diff.length) {
    mount(panel, h('p', { class: 'muted empty', testid: 'changes-none' }, `No file changed since “${previous.title}”.`));
    return;
  }
  mount(
    panel,
    h('p', { class: 'muted changes-since' }, `Changes since “${previous.title}”`),
    diff.map((file) =>
      h(
        'section',
        { class: 'file-diff', testid: 'file-diff', dataset: { path: file.path, status: file.status } },
        h(
          'div',
          { class: 'file-diff-head' },
          h('span', { class: `diff-status diff-${file.status.toLowerCase()}` }, file.status.toLowerCase()),
          h('span', { class: 'file-path' }, file.path),
        ),
        h(
          'pre',
          { class: 'file-content diff-patch' },
          file.patch
            .split('\n')
            .map((line) =>
              h(
                'span',
                {
                  class: `diff-line ${line.startsWith('+') ? 'diff-add' : line.startsWith('-') ? 'diff-del' : line.startsWith('@@') ? 'diff-hunk' : ''}`,
                },
                line || ' ',
              ),
            ),
        ),
      ),
    ),
  );
}

/** Only http(s) and same-origin paths go into `src` / `href` (never `javascript:`). */
function safeUrl(url) {
  try {
    const parsed = new URL(url, window.location.href);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? url : 'about:blank';
  } catch {
    return 'about:blank';
  }
}

function fileText(value) {
  if (value === undefined || value === null) return '';
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

// Remember that the user opened/closed the activity panel themselves.
document.addEventListener('click', (e) => {
  const summary = e.target.closest?.('#activity-panel > summary');
  if (summary) summary.parentElement.dataset.userToggled = 'yes';
});

// The brand goes home without a reload; the menu button opens the project drawer on phones.
document.querySelector('.brand').addEventListener('click', (e) => {
  if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  closeSidebarOnMobile();
  navigate('/');
});
$('menu-toggle').addEventListener('click', () => document.body.classList.toggle('sidebar-open'));

// Refresh relative times now and then.
setInterval(() => {
  if (state.project && $('conversation')) {
    document.querySelectorAll('.msg time').forEach((t) => (t.textContent = timeAgo(t.getAttribute('datetime'))));
  }
}, 30_000);

// A handle for debugging and the browser test (e.g. to drop the socket and watch it resume).
window.codekraft = { ws, state };

boot();
