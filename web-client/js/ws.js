// A minimal graphql-transport-ws client (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md):
// connection_init → connection_ack, subscribe / next / error / complete, ping → pong.
// It reconnects with exponential backoff while subscriptions are active and re-sends them
// with fresh variables (so a caller can resume from its last cursor).

import { GqlError } from './api.js';

export const SUBPROTOCOL = 'graphql-transport-ws';

/** The WebSocket URL of the API, derived from the page location. */
export function wsUrl(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/graphql/ws`;
}

const ACK_TIMEOUT_MS = 10_000;
const IDLE_CLOSE_MS = 2_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;

export class WsClient {
  /**
   * @param {object} options
   * @param {string} options.url
   * @param {() => object} options.connectionParams  payload of `connection_init`, read on every connect
   * @param {(state: 'idle'|'connecting'|'connected'|'reconnecting') => void} [options.onState]
   * @param {(error: GqlError) => void} [options.onAuthError]  the server refused the credentials (4403)
   */
  constructor({ url, connectionParams, onState = () => {}, onAuthError = () => {} }) {
    this.url = url;
    this.connectionParams = connectionParams;
    this.onState = onState;
    this.onAuthError = onAuthError;
    this.socket = null;
    this.acked = false;
    this.attempt = 0;
    this.nextId = 1;
    this.subs = new Map();
    this.timers = { reconnect: null, ack: null, idle: null };
    this.state = 'idle';
    window.addEventListener('online', () => {
      if (this.timers.reconnect) this.reconnectNow();
    });
  }

  setState(state) {
    if (this.state !== state) {
      this.state = state;
      this.onState(state);
    }
  }

  /**
   * Starts a subscription. `variables` may be a function, called on every (re)subscribe.
   * `sink`: { next(data), error(GqlError), complete() }. Returns a function that stops it.
   */
  subscribe(query, variables, sink) {
    const id = String(this.nextId++);
    const sub = { id, query, variables, sink };
    this.subs.set(id, sub);
    clearTimeout(this.timers.idle);
    if (this.socket && this.acked) this.sendSubscribe(sub);
    else this.connect();
    return () => this.unsubscribe(id);
  }

  unsubscribe(id) {
    if (!this.subs.delete(id)) return;
    if (this.socket && this.acked) this.send({ id, type: 'complete' });
    this.closeWhenIdle();
  }

  /** Drops the connection and every subscription (e.g. on sign-out). */
  close() {
    this.subs.clear();
    this.teardown(1000, 'client closed');
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    this.attempt = 0;
    this.setState('idle');
  }

  closeWhenIdle() {
    if (this.subs.size) return;
    clearTimeout(this.timers.idle);
    this.timers.idle = setTimeout(() => {
      if (!this.subs.size) this.close();
    }, IDLE_CLOSE_MS);
  }

  connect() {
    if (this.socket || this.timers.reconnect) return;
    this.setState(this.attempt ? 'reconnecting' : 'connecting');
    let socket;
    try {
      socket = new WebSocket(this.url, SUBPROTOCOL);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.acked = false;
    socket.onopen = () => {
      this.send({ type: 'connection_init', payload: this.connectionParams() });
      this.timers.ack = setTimeout(() => this.teardown(4408, 'connection_ack timeout'), ACK_TIMEOUT_MS);
    };
    socket.onmessage = (event) => this.receive(socket, event.data);
    socket.onclose = (event) => this.closed(socket, event);
    socket.onerror = () => {
      /* a close event follows */
    };
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  sendSubscribe(sub) {
    const variables = typeof sub.variables === 'function' ? sub.variables() : sub.variables;
    this.send({ id: sub.id, type: 'subscribe', payload: { query: sub.query, variables } });
  }

  receive(socket, raw) {
    if (socket !== this.socket) return;
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      this.teardown(4400, 'invalid JSON');
      return;
    }
    switch (message.type) {
      case 'connection_ack':
        clearTimeout(this.timers.ack);
        this.acked = true;
        this.attempt = 0;
        this.setState('connected');
        for (const sub of this.subs.values()) this.sendSubscribe(sub);
        break;
      case 'ping':
        this.send({ type: 'pong', payload: message.payload });
        break;
      case 'pong':
        break;
      case 'next': {
        const sub = this.subs.get(message.id);
        if (!sub) break;
        const result = message.payload || {};
        if (result.errors && result.errors.length && !result.data) {
          this.subs.delete(message.id);
          sub.sink.error?.(new GqlError(result.errors));
          this.closeWhenIdle();
        } else {
          sub.sink.next?.(result.data);
        }
        break;
      }
      case 'error': {
        const sub = this.subs.get(message.id);
        if (!sub) break;
        this.subs.delete(message.id);
        const errors = Array.isArray(message.payload) ? message.payload : [{ message: 'subscription failed' }];
        sub.sink.error?.(new GqlError(errors));
        this.closeWhenIdle();
        break;
      }
      case 'complete': {
        const sub = this.subs.get(message.id);
        if (!sub) break;
        this.subs.delete(message.id);
        sub.sink.complete?.();
        this.closeWhenIdle();
        break;
      }
      default:
        this.teardown(4400, `unexpected message type ${message.type}`);
    }
  }

  teardown(code, reason) {
    clearTimeout(this.timers.ack);
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    this.acked = false;
    socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
    try {
      socket.close(code, reason);
    } catch {
      socket.close();
    }
    if (code !== 1000) this.scheduleReconnect();
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    clearTimeout(this.timers.ack);
    this.socket = null;
    this.acked = false;
    if (event.code === 4403 || event.code === 4401) {
      // Forbidden: the token is missing, expired or revoked. Do not hammer the server.
      const subs = [...this.subs.values()];
      this.subs.clear();
      this.setState('idle');
      const error = new GqlError([{ message: event.reason || 'forbidden', extensions: { code: 'UNAUTHENTICATED' } }]);
      for (const sub of subs) sub.sink.error?.(error);
      this.onAuthError(error);
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (!this.subs.size) {
      this.setState('idle');
      return;
    }
    if (this.timers.reconnect) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    this.setState('reconnecting');
    this.timers.reconnect = setTimeout(() => {
      this.timers.reconnect = null;
      this.connect();
    }, delay);
  }

  reconnectNow() {
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    this.connect();
  }
}
