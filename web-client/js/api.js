// GraphQL over HTTP: one `gql()` call, errors surfaced as `GqlError` with the server's
// `extensions.code` (UNAUTHENTICATED, CREDITS_EXHAUSTED, …).

const TOKEN_KEY = 'codekraft.token';

export const auth = {
  get token() {
    return localStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  },
};

export class GqlError extends Error {
  /** @param {Array<{message: string, extensions?: object}>} errors */
  constructor(errors) {
    const first = errors[0] || { message: 'unknown error' };
    super(first.message);
    this.name = 'GqlError';
    this.errors = errors;
    this.extensions = first.extensions || {};
    this.code = this.extensions.code || 'ERROR';
  }
}

/** Runs a query or mutation; resolves to `data`, rejects with `GqlError`. */
export async function gql(query, variables = {}) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/graphql-response+json, application/json' };
  const token = auth.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables }),
    });
  } catch (err) {
    throw new GqlError([{ message: `network error: ${err.message}`, extensions: { code: 'NETWORK' } }]);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new GqlError([
      { message: `server answered ${response.status} without JSON`, extensions: { code: 'HTTP_' + response.status } },
    ]);
  }
  if (body.errors && body.errors.length) throw new GqlError(body.errors);
  return body.data;
}

/**
 * Downloads a version of a project as a zip (`GET /projects/{id}/export.zip`, with the same
 * bearer token as the API) and saves it; rejects with `GqlError` carrying the server's code.
 */
export async function downloadExport(projectId, fragmentId = null) {
  const query = fragmentId ? `?fragment=${encodeURIComponent(fragmentId)}` : '';
  const headers = {};
  if (auth.token) headers.Authorization = `Bearer ${auth.token}`;
  let response;
  try {
    response = await fetch(`/projects/${encodeURIComponent(projectId)}/export.zip${query}`, { headers });
  } catch (err) {
    throw new GqlError([{ message: `network error: ${err.message}`, extensions: { code: 'NETWORK' } }]);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    const error = body?.error || { code: 'HTTP_' + response.status, message: `export failed (${response.status})` };
    throw new GqlError([{ message: error.message, extensions: { code: error.code } }]);
  }
  const name = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') || '')?.[1] || 'app.zip';
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has the blob by now; the URL is only kept for that click.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// The documents the client uses, in one place.

// Every kind's fields (`RunEventData` in schema.graphql); `error` differs in type between two
// kinds, so the tool's is aliased.
const EVENT_DATA = `__typename
  ... on RunQueued { retry }
  ... on RunStarted { attempt }
  ... on SandboxReady { sandboxId previewUrl }
  ... on ModelTextDelta { text }
  ... on ModelResponse { inputTokens outputTokens }
  ... on ToolCallStarted { callId name arguments }
  ... on ToolOutput { callId stream text truncated omittedBytes }
  ... on FileWritten { path bytes }
  ... on ToolCallFinished { callId name ok toolError: error }
  ... on BuildDiagnostics { round diagnostics { file line column code severity message } }
  ... on MessageCreated { messageId role type }
  ... on MessageDeleted { messageId }
  ... on FragmentCreated { fragmentId messageId sandboxUrl title draft }
  ... on DraftDiscarded { fragmentId }
  ... on RunFinished { status error inputTokens outputTokens costUsd stopReason }`;

const RUN_FIELDS = 'id status inputTokens outputTokens costUsd error';
const API_KEY_FIELDS = 'id name prefix scopes createdAt expiresAt lastUsedAt revokedAt';
const WEBHOOK_FIELDS = 'id url events projectId enabled disabledAt createdAt';

export const Q = {
  serverInfo: '{ serverInfo { modelProvider model modelOffline sandboxProvider } }',
  me: '{ me { id email plan } usage { plan limit consumed remaining resetsAt spentUsd spendCapUsd } }',
  usage: '{ usage { plan limit consumed remaining resetsAt spentUsd spendCapUsd } }',
  signUp: `mutation($email: String!, $password: String!) {
    signUp(email: $email, password: $password) { token user { id email plan } } }`,
  signIn: `mutation($email: String!, $password: String!) {
    signIn(email: $email, password: $password) { token user { id email plan } } }`,
  signOut: 'mutation { signOut }',
  projects: `query($first: Int, $after: String) {
    projects(first: $first, after: $after) {
      edges { node { id name createdAt updatedAt } }
      pageInfo { hasNextPage endCursor } } }`,
  project: `query($id: ID!, $after: String) {
    project(id: $id) {
      id name sandboxId createdAt updatedAt
      messages(first: 100, after: $after) {
        pageInfo { hasNextPage endCursor }
        edges { node {
          id role type content createdAt
          fragment { id title sandboxUrl draft fileList { path size hash } createdAt }
          run { ${RUN_FIELDS} }
        } }
      } } }`,
  createProject: `mutation($prompt: String!) {
    createProject(prompt: $prompt) { project { id name createdAt updatedAt } message { id } run { ${RUN_FIELDS} } } }`,
  sendMessage: `mutation($projectId: ID!, $content: String!) {
    sendMessage(projectId: $projectId, content: $content) { message { id } run { ${RUN_FIELDS} } } }`,
  renameProject: 'mutation($id: ID!, $name: String!) { renameProject(id: $id, name: $name) { id name } }',
  deleteProject: 'mutation($id: ID!) { deleteProject(id: $id) { id } }',
  openPreview: 'mutation($projectId: ID!) { openPreview(projectId: $projectId) { sandboxId url } }',
  // A version's files are listed with the conversation; contents and changes load when shown.
  fragmentFile: 'query($id: ID!, $path: String!) { fragment(id: $id) { id file(path: $path) } }',
  fragmentDiff: `query($id: ID!, $against: ID!) {
    fragment(id: $id) { id diff(against: $against) { path status patch } } }`,
  discardDraft: 'mutation($fragmentId: ID!) { discardDraft(fragmentId: $fragmentId) }',
  restoreFragment: `mutation($fragmentId: ID!) {
    restoreFragment(fragmentId: $fragmentId) { id content fragment { id title sandboxUrl } } }`,
  forkProject: `mutation($fragmentId: ID!) {
    forkProject(fragmentId: $fragmentId) { id name createdAt updatedAt } }`,
  cancelRun: `mutation($runId: ID!) { cancelRun(runId: $runId) { ${RUN_FIELDS} } }`,
  retryRun: `mutation($runId: ID!) { retryRun(runId: $runId) { ${RUN_FIELDS} } }`,
  apiKeys: `{ apiKeys { ${API_KEY_FIELDS} } }`,
  createApiKey: `mutation($name: String!, $scopes: [ApiKeyScope!]!, $expiresAt: DateTime) {
    createApiKey(name: $name, scopes: $scopes, expiresAt: $expiresAt) { secret apiKey { ${API_KEY_FIELDS} } } }`,
  revokeApiKey: `mutation($id: ID!) { revokeApiKey(id: $id) { ${API_KEY_FIELDS} } }`,
  webhooks: `{ webhooks { ${WEBHOOK_FIELDS}
    deliveries(first: 5) { edges { node { id eventKind status attempts responseStatus nextAttemptAt createdAt } } } } }`,
  createWebhook: `mutation($url: String!, $events: [RunEventKind!]!) {
    createWebhook(url: $url, events: $events) { secret webhook { ${WEBHOOK_FIELDS} } } }`,
  deleteWebhook: 'mutation($id: ID!) { deleteWebhook(id: $id) { id } }',
  projectEvents: `subscription($projectId: ID!, $after: Int) {
    projectEvents(projectId: $projectId, after: $after) { seq runId kind data { ${EVENT_DATA} } createdAt } }`,
};
