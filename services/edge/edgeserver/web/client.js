// chat client: a dependency-free ES module for protocol v1 (see protocol-v1.md).
//
//   import { ChatClient } from "/client.js";
//   const chat = new ChatClient("ws://127.0.0.1:8080/ws");
//   chat.addEventListener("message", (e) => console.log(e.detail.username, e.detail.text));
//   await chat.connect();
//   await chat.login({ username: "alice", password: "wonderland" }); // or { token }
//   await chat.join("lobby");
//   await chat.send("lobby", "hi");
//
// Events (CustomEvent, data in `detail`): "message", "joined", "left" (the protocol's events);
// "state" ({ state: "connecting" | "connected" | "reconnecting" | "offline" }); "recovery"
// ({ room, recovered }) after each reconnection, recovered=false meaning messages may have been
// missed and the application should reload the room's history; "error" ({ error }) for a failed
// re-login after a reconnection (the client then goes offline).
//
// The client reconnects by itself (exponential backoff with jitter), logs in again with its
// token, rejoins its rooms from the last seq it delivered (messages it missed are delivered in
// order, before live ones, and never twice), and resends sends that were not acknowledged, with
// the same client_msg_id, so the server stores each once.

export class ChatError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ChatError";
    this.code = code;
  }
}

export class ChatClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.requestTimeout = options.requestTimeout ?? 10000;
    this.minBackoff = options.minBackoff ?? 500;
    this.maxBackoff = options.maxBackoff ?? 15000;
    this.state = "offline";
    this.user = null; // { user_id, username }
    this.token = null;
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id -> { frame, resolve, reject, timer, resend }
    this._rooms = new Map(); // room -> { epoch, lastSeq }
    this._attempt = 0;
    this._connectedOnce = false;
    this._closing = false;
    this._reconnectTimer = null;
  }

  // connect opens the socket; it resolves once connected.
  connect() {
    this._closing = false;
    return this._open();
  }

  // close ends the session for good (no reconnection).
  close() {
    this._closing = true;
    clearTimeout(this._reconnectTimer);
    if (this._ws) this._ws.close(1000, "bye");
    this._failPending(new ChatError("unavailable", "client closed"), true);
    this._setState("offline");
  }

  async register(username, password) {
    const data = await this._request("register", { username, password });
    this._loggedIn(data);
    return data;
  }

  // login takes { username, password } or { token }.
  async login(credentials) {
    const data = await this._request("login", credentials);
    this._loggedIn(data);
    return data;
  }

  async logout() {
    await this._request("logout", {});
    this.user = null;
    this.token = null;
    this._rooms.clear();
  }

  // join joins a room and answers the join's data (members, last_seq, ...).
  async join(room) {
    const data = await this._request("join", { room });
    this._rooms.set(room, { epoch: data.epoch, lastSeq: data.last_seq });
    return data;
  }

  async leave(room) {
    await this._request("leave", { room });
    this._rooms.delete(room);
  }

  // send publishes text and answers { seq, ts }. Should the connection drop before the answer,
  // the send is repeated after reconnecting, with the same client_msg_id.
  send(room, text) {
    const clientMsgId = randomId();
    return this._request("send", { room, text, client_msg_id: clientMsgId }, { resend: true });
  }

  // history answers { messages } older than beforeSeq (the newest without it), oldest first.
  history(room, { beforeSeq, limit } = {}) {
    const fields = { room };
    if (beforeSeq) fields.before_seq = beforeSeq;
    if (limit) fields.limit = limit;
    return this._request("history", fields);
  }

  who(room) {
    return this._request("who", { room });
  }

  ping() {
    return this._request("ping", {});
  }

  _loggedIn(data) {
    this.user = { user_id: data.user_id, username: data.username };
    if (data.token) this.token = data.token;
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _open() {
    this._setState(this._connectedOnce ? "reconnecting" : "connecting");
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      let opened = false;
      this._ws = ws;
      ws.onopen = () => {
        opened = true;
        this._attempt = 0;
        this._connectedOnce = true;
        this._setState("connected");
        resolve();
      };
      ws.onmessage = (e) => this._onFrame(e.data);
      ws.onclose = () => {
        if (this._ws !== ws) return;
        this._ws = null;
        if (!opened) reject(new ChatError("unavailable", "cannot connect to " + this.url));
        if (!this._connectedOnce) {
          this._setState("offline"); // the first connection failed: the caller decides
          return;
        }
        this._connectionLost();
      };
    });
  }

  _connectionLost() {
    // Requests that cannot be repeated fail; unacknowledged sends wait for the next socket.
    this._failPending(new ChatError("unavailable", "connection lost"), false);
    if (this._closing) {
      this._setState("offline");
      return;
    }
    this._setState("reconnecting");
    const base = Math.min(this.maxBackoff, this.minBackoff * 2 ** this._attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this._attempt++;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._reconnect(), delay);
  }

  async _reconnect() {
    try {
      await this._open();
    } catch {
      return; // the close handler scheduled the next attempt
    }
    try {
      if (this.token) {
        this._loggedIn(await this._request("login", { token: this.token }));
        for (const [room, pos] of this._rooms) {
          await this._rejoin(room, pos);
        }
      }
    } catch (error) {
      if (error.code === "unauthenticated") {
        // The token expired or was revoked: the application must log in again.
        this.token = null;
        this._emit("error", { error });
        this.close();
      }
      return; // otherwise the connection dropped again, and the close handler retries
    }
    // Sends still unacknowledged go again, with their client_msg_id.
    for (const [id, p] of this._pending) {
      if (p.resend && !p.sent) this._transmit(id, p);
    }
  }

  // _rejoin joins a room again after a reconnection and delivers what was missed, in order,
  // before any live event (the join's answer comes before the room's live events).
  async _rejoin(room, pos) {
    const fields = { room };
    if (pos.epoch) fields.since = { epoch: pos.epoch, seq: pos.lastSeq };
    const data = await this._request("join", fields);
    let recovered = data.recovered === true;
    let missed = data.missed ?? [];
    if (!pos.epoch) {
      // No message had been seen: everything of the room's current life was missed.
      missed = [];
      recovered = data.last_seq === 0;
      if (!recovered && data.last_seq <= 200) {
        missed = (await this.history(room, { limit: 200 })).messages.filter((m) => m.seq <= data.last_seq);
        recovered = missed.length === data.last_seq;
      }
    }
    const cur = this._rooms.get(room);
    if (!cur) return;
    if (recovered) {
      for (const m of missed) this._deliver(m);
    }
    // Live events follow the join's position.
    cur.epoch = data.epoch;
    cur.lastSeq = data.last_seq;
    this._emit("recovery", { room, recovered });
  }

  _request(type, fields, { resend = false } = {}) {
    return new Promise((resolve, reject) => {
      const id = this._nextId++;
      const p = { frame: { id, type, ...fields }, resolve, reject, resend, sent: false, timer: null };
      this._pending.set(id, p);
      p.timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new ChatError("timeout", `request ${type} timed out`));
      }, this.requestTimeout);
      if (this._ws && this._ws.readyState === WebSocket.OPEN) {
        this._transmit(id, p);
      } else if (!resend) {
        clearTimeout(p.timer);
        this._pending.delete(id);
        reject(new ChatError("unavailable", "not connected"));
      }
    });
  }

  _transmit(id, p) {
    p.sent = true;
    this._ws.send(JSON.stringify(p.frame));
  }

  _failPending(error, all) {
    for (const [id, p] of this._pending) {
      if (p.resend && !all) {
        p.sent = false; // wait for the next socket
        continue;
      }
      clearTimeout(p.timer);
      this._pending.delete(id);
      p.reject(error);
    }
  }

  _onFrame(raw) {
    let f;
    try {
      f = JSON.parse(raw);
    } catch {
      return;
    }
    if (typeof f.id === "number" && f.id !== 0 && "ok" in f) {
      const p = this._pending.get(f.id);
      if (!p) return;
      this._pending.delete(f.id);
      clearTimeout(p.timer);
      if (f.ok) p.resolve(f.data ?? {});
      else p.reject(new ChatError(f.error?.code ?? "internal", f.error?.message ?? "request failed"));
      return;
    }
    if (f.type === "message") this._deliver(f);
    else if (f.type === "joined" || f.type === "left") this._emit(f.type, f);
  }

  // _deliver passes a message on once, in seq order per room. A new epoch means the room's
  // sequence restarted.
  _deliver(m) {
    const pos = this._rooms.get(m.room);
    if (pos) {
      if (m.epoch && m.epoch !== pos.epoch) {
        pos.epoch = m.epoch;
        pos.lastSeq = 0;
      }
      if (m.seq <= pos.lastSeq) return;
      pos.lastSeq = m.seq;
    }
    this._emit("message", m);
  }
}

function randomId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
