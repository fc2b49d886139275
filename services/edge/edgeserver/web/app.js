// The chat page: a thin view over ChatClient. Text is only ever set with textContent, so a
// message is shown as the characters it has, never as HTML.
//
// The token is kept in sessionStorage (this tab only, gone when the tab closes; readable by
// this origin's scripts only), so a reload logs in again without the password.
import { ChatClient } from "/client.js";

const $ = (id) => document.getElementById(id);
const wsURL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
const chat = new ChatClient(wsURL);
let room = null;
let oldestSeq = null;
let loadingOlder = false;

chat.addEventListener("state", (e) => {
  const s = e.detail.state;
  $("state").textContent = s;
  $("state").className = "state " + s;
  $("state").dataset.state = s;
  // While reconnecting, messages can still be written: they go out once connected again.
  const usable = (s === "connected" || s === "reconnecting") && room !== null;
  $("text").disabled = !usable;
  $("send").disabled = !usable;
});
chat.addEventListener("message", (e) => {
  if (e.detail.room === room) addMessage(e.detail, false);
});
chat.addEventListener("joined", (e) => memberEvent(e.detail, "joined"));
chat.addEventListener("left", (e) => memberEvent(e.detail, "left"));
chat.addEventListener("recovery", async (e) => {
  if (e.detail.room !== room) return;
  if (!e.detail.recovered) {
    notice("Some messages could not be recovered; the history was reloaded.");
    await reloadHistory();
  }
  refreshMembers();
});
chat.addEventListener("error", () => {
  sessionStorage.removeItem("chat.token");
  showLogin("Your session ended; log in again.");
});

function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function messageItem(m) {
  const li = document.createElement("li");
  li.dataset.seq = m.seq;
  const t = document.createElement("span");
  t.className = "time";
  t.textContent = time(m.ts);
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = m.username;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = m.text;
  li.append(t, who, text);
  return li;
}

function addMessage(m, atTop) {
  const list = $("messages");
  if (atTop) {
    list.prepend(messageItem(m));
  } else {
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(messageItem(m));
    if (stick) list.scrollTop = list.scrollHeight;
  }
  if (oldestSeq === null || m.seq < oldestSeq) oldestSeq = m.seq;
}

function systemLine(text) {
  const li = document.createElement("li");
  li.className = "system";
  li.textContent = text;
  $("messages").append(li);
}

function memberEvent(ev, what) {
  if (ev.room !== room) return;
  systemLine(`${ev.username} ${what}`);
  refreshMembers();
}

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

async function refreshMembers() {
  if (room === null) return;
  try {
    const who = await chat.who(room);
    $("member-count").textContent = `(${who.member_count})`;
    const ul = $("members");
    ul.replaceChildren(...who.members.map((m) => {
      const li = document.createElement("li");
      li.textContent = m.connections > 1 ? `${m.username} (${m.connections} tabs)` : m.username;
      return li;
    }));
  } catch {
    // The next event or reconnection refreshes it.
  }
}

async function reloadHistory() {
  $("messages").replaceChildren();
  oldestSeq = null;
  const h = await chat.history(room, { limit: 50 });
  for (const m of h.messages) addMessage(m, false);
  $("messages").scrollTop = $("messages").scrollHeight;
}

async function loadOlder() {
  if (loadingOlder || room === null || oldestSeq === null || oldestSeq <= 1) return;
  loadingOlder = true;
  const list = $("messages");
  const before = list.scrollHeight;
  try {
    const h = await chat.history(room, { beforeSeq: oldestSeq, limit: 50 });
    for (const m of h.messages.reverse()) addMessage(m, true);
    list.scrollTop = list.scrollHeight - before;
  } finally {
    loadingOlder = false;
  }
}
$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 20) loadOlder();
});

function showLogin(error) {
  $("chat").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("me").textContent = "";
  $("login-error").textContent = error ?? "";
}

function showChat() {
  $("login").hidden = true;
  $("chat").hidden = false;
  $("logout").hidden = false;
  $("me").textContent = chat.user.username;
  $("room").focus();
}

async function ensureConnected() {
  if (chat.state !== "connected") await chat.connect();
}

async function authenticate(how) {
  $("login-error").textContent = "";
  try {
    await ensureConnected();
    const data = await how();
    sessionStorage.setItem("chat.token", data.token);
    showChat();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  authenticate(() => chat.login({ username: $("username").value, password: $("password").value }));
});
$("do-register").addEventListener("click", () => {
  if (!$("login-form").reportValidity()) return;
  authenticate(() => chat.register($("username").value, $("password").value));
});
$("logout").addEventListener("click", async () => {
  try {
    await chat.logout();
  } finally {
    sessionStorage.removeItem("chat.token");
    room = null;
    showLogin();
  }
});

$("room-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("room").value.trim();
  if (!name || name === room) return;
  try {
    if (room !== null) await chat.leave(room);
    room = null;
    const data = await chat.join(name);
    room = name;
    $("room-title").textContent = name;
    notice("");
    await reloadHistory();
    $("member-count").textContent = `(${data.member_count})`;
    refreshMembers();
    $("text").disabled = $("send").disabled = chat.state !== "connected";
    $("text").focus();
  } catch (err) {
    notice(err.message);
  }
});

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!text.trim() || room === null) return;
  $("text").value = "";
  try {
    await chat.send(room, text);
  } catch (err) {
    notice(`Not sent: ${err.message}`);
    $("text").value = text;
  }
});

// A reload logs in again with the tab's token.
const saved = sessionStorage.getItem("chat.token");
if (saved) {
  authenticate(() => chat.login({ token: saved })).then(() => {
    if ($("chat").hidden) sessionStorage.removeItem("chat.token");
  });
} else {
  showLogin();
}
