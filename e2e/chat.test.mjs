// Browser tests of the chat page and client library: Debian's Chromium driven by
// playwright-core, against the whole suite (built from ./suite, embedded Redis) on free ports.
// Screenshots of each step go to artifacts/e2e/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const shots = path.join(root, "artifacts", "e2e");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let suite, browser, proxy, edgeURL, proxyURL;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

async function waitForHTTP(url, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A TCP proxy in front of the edge that the test can cut, as a lost network would: cut()
// destroys every connection and refuses new ones until restore().
function startProxy(targetPort) {
  const conns = new Set();
  let offline = false;
  const server = net.createServer((client) => {
    if (offline) return client.destroy();
    const upstream = net.connect(targetPort, "127.0.0.1");
    conns.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      conns.delete(client);
      conns.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: server.address().port,
        cut() {
          offline = true;
          for (const c of conns) c.destroy();
        },
        restore() {
          offline = false;
        },
        close() {
          for (const c of conns) c.destroy();
          return new Promise((r) => server.close(r));
        },
      }),
    );
  });
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  const bin = path.join(root, "artifacts", "suite-e2e");
  execFileSync("go", ["build", "-o", bin, "./suite"], { cwd: root, stdio: "inherit" });
  const [edge, auth, room, presence, ...metrics] = await Promise.all(Array.from({ length: 7 }, freePort));
  const env = {
    ...process.env,
    EDGE_HTTP_ADDR: `127.0.0.1:${edge}`,
    AUTH_GRPC_ADDR: `127.0.0.1:${auth}`,
    ROOM_GRPC_ADDR: `127.0.0.1:${room}`,
    PRESENCE_GRPC_ADDR: `127.0.0.1:${presence}`,
    AUTH_METRICS_ADDR: `127.0.0.1:${metrics[0]}`,
    ROOM_METRICS_ADDR: `127.0.0.1:${metrics[1]}`,
    PRESENCE_METRICS_ADDR: `127.0.0.1:${metrics[2]}`,
  };
  suite = spawn(bin, ["-log-level", "warn"], { env, stdio: ["ignore", "inherit", "inherit"] });
  edgeURL = `http://127.0.0.1:${edge}`;
  await waitForHTTP(`${edgeURL}/healthz`, 60000);
  proxy = await startProxy(edge);
  proxyURL = `http://127.0.0.1:${proxy.port}`;
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
      "--no-first-run", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  if (suite) {
    suite.kill("SIGTERM");
    await new Promise((r) => suite.once("exit", r));
  }
});

// openChat opens the page at base, registers user and joins room.
async function openChat(base, user, room) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => assert.fail(`page error in ${user}'s page: ${e.message}`));
  page.on("dialog", (d) => assert.fail(`${user}'s page opened a dialog: ${d.message()}`));
  await page.goto(base + "/");
  await page.fill("#username", user);
  await page.fill("#password", `password-${user}`);
  await page.click("#do-register");
  await page.waitForSelector("#chat:not([hidden])").catch(async (e) => { throw new Error(`${user}: ${await page.textContent("#login-error")} / state ${await page.textContent("#state")}: ${e.message}`); });
  await page.fill("#room", room);
  await page.click("#room-form button");
  await page.waitForSelector("#text:not([disabled])");
  return { context, page };
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

// messages lists the page's messages as [seq, username, text].
function messages(page) {
  return page.$$eval("#messages li[data-seq]", (lis) =>
    lis.map((li) => [Number(li.dataset.seq), li.querySelector(".who").textContent, li.querySelector(".text").textContent]),
  );
}

async function waitForTexts(page, texts) {
  await page.waitForFunction(
    (want) => {
      const got = [...document.querySelectorAll("#messages li[data-seq] .text")].map((e) => e.textContent);
      return want.every((t) => got.includes(t));
    },
    texts,
    { timeout: 30000 },
  );
}

function shot(page, name) {
  return page.screenshot({ path: path.join(shots, `${name}.png`) });
}

test("two users chat; one loses its connection and gets every message once, in order", async () => {
  const room = "测试 🎉 room";
  const alice = await openChat(proxyURL, "alice", room); // alice's traffic goes through the proxy
  const bob = await openChat(edgeURL, "bob", room);
  await say(alice.page, "hello from alice");
  await waitForTexts(bob.page, ["hello from alice"]);
  await waitForTexts(alice.page, ["hello from alice"]);
  await shot(alice.page, "01-alice-chatting");

  proxy.cut();
  await alice.page.waitForSelector('#state[data-state="reconnecting"]');
  await shot(alice.page, "02-alice-offline");
  for (const t of ["one", "two", "three"]) await say(bob.page, t);
  await waitForTexts(bob.page, ["one", "two", "three"]);
  // Alice writes while offline: the send waits and goes out after the reconnection, once.
  await alice.page.fill("#text", "written while offline");
  await alice.page.press("#text", "Enter");
  await shot(bob.page, "03-bob-sent-three");

  proxy.restore();
  await alice.page.waitForSelector('#state[data-state="connected"]', { timeout: 30000 });
  await waitForTexts(alice.page, ["one", "two", "three", "written while offline"]);
  await waitForTexts(bob.page, ["written while offline"]);
  await shot(alice.page, "04-alice-back");

  for (const who of [alice, bob]) {
    const got = await messages(who.page);
    const texts = got.map((m) => m[2]);
    assert.deepEqual(texts, ["hello from alice", "one", "two", "three", "written while offline"]);
    assert.deepEqual(got.map((m) => m[0]), [1, 2, 3, 4, 5]);
  }
  await alice.context.close();
  await bob.context.close();
});

test("a message with HTML is shown as text", async () => {
  const room = "xss";
  const eve = await openChat(edgeURL, "eve", room);
  const carol = await openChat(edgeURL, "carol", room);
  const evil = "<img src=x onerror=alert(1)><script>alert(2)</script><b>bold?</b>";
  await say(eve.page, evil);
  await waitForTexts(carol.page, [evil]);
  assert.equal(await carol.page.$$eval("#messages img, #messages script, #messages b", (els) => els.length), 0);
  const got = await messages(carol.page);
  assert.equal(got.at(-1)[2], evil);
  await shot(carol.page, "05-html-as-text");
  await eve.context.close();
  await carol.context.close();
});

test("a page from another origin cannot open the socket", async () => {
  const wsURL = edgeURL.replace("http", "ws") + "/ws";
  const probe = `<!doctype html><script>
    window.result = new Promise((resolve) => {
      const ws = new WebSocket(${JSON.stringify(wsURL)});
      ws.onopen = () => resolve("open");
      ws.onclose = (e) => resolve("closed " + e.code);
    });</script>`;
  const other = http.createServer((_, res) => res.end(probe));
  await new Promise((r) => other.listen(0, "127.0.0.1", r));
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(`http://127.0.0.1:${other.address().port}/`);
    assert.equal(await page.evaluate(() => window.result), "closed 1006");
    // The same probe from the edge's own origin opens.
    await page.goto(edgeURL + "/");
    const same = await page.evaluate((url) => new Promise((resolve) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve("open");
      ws.onclose = (e) => resolve("closed " + e.code);
    }), wsURL);
    assert.equal(same, "open");
  } finally {
    await context.close();
    await new Promise((r) => other.close(r));
  }
});

test("older messages load on scroll", async () => {
  const room = "long history";
  const writer = await openChat(edgeURL, "writer", room);
  // 120 messages through the client library itself, paced under the rate limit.
  await writer.page.evaluate(async (room) => {
    const { ChatClient } = await import("/client.js");
    const c = new ChatClient(`ws://${location.host}/ws`);
    await c.connect();
    await c.login({ username: "writer", password: "password-writer" });
    await c.join(room);
    for (let i = 1; i <= 120; i++) {
      await c.send(room, `line ${i}`);
      if (i % 15 === 0) await new Promise((r) => setTimeout(r, 800));
    }
    c.close();
  }, room);
  const reader = await openChat(edgeURL, "reader", room);
  const seqs = () => reader.page.$$eval("#messages li[data-seq]", (lis) => lis.map((li) => Number(li.dataset.seq)));
  assert.equal((await seqs()).length, 50);
  for (let i = 0; i < 10 && (await seqs()).length < 120; i++) {
    await reader.page.$eval("#messages", (el) => el.scrollTo(0, 0));
    await reader.page.waitForTimeout(300);
  }
  const got = await seqs();
  assert.deepEqual(got, Array.from({ length: 120 }, (_, i) => i + 1));
  await shot(reader.page, "06-older-loaded");
  await writer.context.close();
  await reader.context.close();
});
