// Tries, from a user's own site, everything a page could do with the dashboard session of
// a visitor logged in at the dashboard in the same browser: read the API with the cookie,
// change something with it (form posts and fetch), open the console WebSocket. Writes
// what it got into #result as JSON, then sets data-done on <body>. tests/browser.rs
// fills in the placeholders.
"use strict";

const CONSOLE = "__CONSOLE__"; // the dashboard's origin, e.g. http://console.roost.test:8080
const WS = CONSOLE.replace(/^http/, "ws");
const ID = "__HOSTING_ID__";
const KEY = "__ATTACKER_KEY__";
const MALLORY = ["__MALLORY__", "__MALLORY_PASSWORD__"]; // the attacker's own account
const results = {};

async function read(name, url, init) {
  try {
    const r = await fetch(url, init);
    let body = "";
    try {
      body = await r.text();
    } catch (e) {
      body = `(unreadable: ${e})`;
    }
    results[name] = { done: true, type: r.type, status: r.status, body: body.slice(0, 400) };
  } catch (e) {
    results[name] = { done: false, error: String(e) };
  }
}

function socket(name, url) {
  return new Promise((resolve) => {
    const r = { opened: false, messages: 0, data: [], closed: null };
    let finished = false;
    let ws;
    const finish = () => {
      if (finished) return;
      finished = true;
      results[name] = r;
      try {
        ws.close();
      } catch {
        // already closed
      }
      resolve();
    };
    try {
      ws = new WebSocket(url);
    } catch (e) {
      r.error = String(e);
      finish();
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      r.opened = true;
      try {
        ws.send(new TextEncoder().encode("\r"));
      } catch {
        // closed meanwhile
      }
    };
    ws.onmessage = (ev) => {
      r.messages += 1;
      if (r.data.length < 5) {
        r.data.push(typeof ev.data === "string" ? ev.data.slice(0, 200) : `(binary ${ev.data.byteLength})`);
      }
    };
    ws.onerror = () => {
      r.error = "error event";
    };
    ws.onclose = (ev) => {
      r.closed = ev.code;
      finish();
    };
    setTimeout(finish, 8000);
  });
}

function events(name, url) {
  return new Promise((resolve) => {
    const r = { opened: false, messages: 0, data: [] };
    const es = new EventSource(url, { withCredentials: true });
    const got = (ev) => {
      r.messages += 1;
      if (r.data.length < 5) r.data.push(String(ev.data).slice(0, 200));
    };
    es.onopen = () => {
      r.opened = true;
    };
    es.onmessage = got;
    es.addEventListener("hosting", got);
    setTimeout(() => {
      es.close();
      results[name] = r;
      resolve();
    }, 4000);
  });
}

// A cross-site form POST into a hidden frame (what works without any script permission).
function form(name, action, fields, enctype) {
  return new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.name = `frame-${name}`;
    document.body.append(frame);
    const f = document.createElement("form");
    f.method = "POST";
    f.action = action;
    f.enctype = enctype;
    f.target = frame.name;
    for (const [k, v] of Object.entries(fields)) {
      const i = document.createElement("input");
      i.type = "hidden";
      i.name = k;
      i.value = v;
      f.append(i);
    }
    document.body.append(f);
    let finished = false;
    const finish = (how) => {
      if (finished) return;
      finished = true;
      let readable = null;
      try {
        readable = frame.contentDocument ? frame.contentDocument.body.textContent.slice(0, 200) : null;
      } catch {
        readable = null;
      }
      results[name] = { submitted: true, how, readable };
      resolve();
    };
    frame.addEventListener("load", () => finish("load"));
    setTimeout(() => finish("timeout"), 8000);
    f.submit();
  });
}

// The dashboard in a frame: refused (frame-ancestors 'none'), and unreadable anyway.
function frame(name, url) {
  return new Promise((resolve) => {
    const fr = document.createElement("iframe");
    let finished = false;
    const finish = (how) => {
      if (finished) return;
      finished = true;
      let readable = null;
      try {
        readable = fr.contentDocument ? fr.contentDocument.documentElement.outerHTML.slice(0, 200) : null;
      } catch {
        readable = null;
      }
      results[name] = { how, readable };
      resolve();
    };
    fr.addEventListener("load", () => setTimeout(() => finish("load"), 1000));
    setTimeout(() => finish("timeout"), 8000);
    fr.src = url;
    document.body.append(fr);
  });
}

async function main() {
  const cred = { credentials: "include", cache: "no-store" };
  // (a) reading with the visitor's cookie
  await read("read_host", `${CONSOLE}/api/v1/host`, cred);
  await read("read_session", `${CONSOLE}/api/v1/session`, cred);
  await read("read_keys", `${CONSOLE}/api/v1/ssh-keys`, cred);
  await read("read_me", `${CONSOLE}/api/v1/auth/me`, cred);
  await read("read_host_nocors", `${CONSOLE}/api/v1/host`, { ...cred, mode: "no-cors" });
  await read("read_own_origin_api", `${location.origin}/api/v1/host`, cred);
  await events("events", `${CONSOLE}/api/v1/host/events`);
  await frame("frame_dashboard", `${CONSOLE}/`);
  // (b) changing something with it
  const keyJson = JSON.stringify({ public_key: KEY });
  await form(
    "form_key_text",
    `${CONSOLE}/api/v1/ssh-keys`,
    { [`{"public_key":"${KEY}","x":"`]: '"}' },
    "text/plain",
  );
  await form("form_stop", `${CONSOLE}/api/v1/host/${ID}/stop`, { x: "1" }, "application/x-www-form-urlencoded");
  await read("post_key_nocors", `${CONSOLE}/api/v1/ssh-keys`, {
    ...cred,
    method: "POST",
    mode: "no-cors",
    headers: { "Content-Type": "text/plain" },
    body: keyJson,
  });
  await read("stop_nocors", `${CONSOLE}/api/v1/host/${ID}/stop`, { ...cred, method: "POST", mode: "no-cors" });
  await read("post_key_json", `${CONSOLE}/api/v1/ssh-keys`, {
    ...cred,
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": "guessed" },
    body: keyJson,
  });
  await read("delete_hosting", `${CONSOLE}/api/v1/host/${ID}`, { ...cred, method: "DELETE" });
  // Login CSRF: signing the visitor into the attacker's account.
  await form(
    "form_login",
    `${CONSOLE}/api/v1/session`,
    { [`{"username":"${MALLORY[0]}","password":"${MALLORY[1]}","x":"`]: '"}' },
    "text/plain",
  );
  await read("login_nocors", `${CONSOLE}/api/v1/session`, {
    ...cred,
    method: "POST",
    mode: "no-cors",
    headers: { "Content-Type": "text/plain" },
    body: JSON.stringify({ username: MALLORY[0], password: MALLORY[1] }),
  });
  // (c) the console
  await socket("ws_console", `${WS}/api/v1/host/console`);
  await socket("ws_console_csrf", `${WS}/api/v1/host/console?csrf=guessed`);
  await socket("ws_admin_console", `${WS}/api/v1/admin/vms/${ID}/console`);
}

main()
  .catch((e) => {
    results.crashed = String(e);
  })
  .finally(() => {
    document.getElementById("result").textContent = JSON.stringify(results);
    document.body.dataset.done = "1";
  });
