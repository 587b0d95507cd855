// The connection to the server (docs/protocol.md): one WebSocket with a heartbeat; every message
// kept in a bounded queue until the server acknowledges it, sent again after a reconnect (the
// server ignores ids it has applied already) and paced under the server's rate limit; reconnects
// with full-jitter backoff; the HTTP batch endpoint as the fallback (fetch after three failed
// connections in a row, sendBeacon when the page is hidden or goes away).

import { consent } from "./consent.js";
import { device, origin, script, site } from "./env.js";
import { arm, phone, reward, show, withdraw } from "./offers.js";
import { page } from "./pages.js";
import { configure } from "./signals.js";
import { ID, randomId, store } from "./storage.js";
import { quietly } from "./util.js";

export let active = 0; // tracking is on: consent was given and the widget started
export let ready = 0; // the current socket has been welcomed
let visitor = "";
let session = "";
let socket = null;
// Unacknowledged messages, oldest first, at most 100: {message_, sent_} (sent_: on this socket).
let queue = [];
let failures = 0; // connections in a row that closed before their welcome
let attempt = 0; // reconnect attempts since the last welcome
let retryTimer;
let pumpTimer;
let heartbeat;
// A token bucket a little below the server's (burst 40, 20 per second): 30 tokens, 15 per second.
let tokens = 30;
let tokensAt = 0;
let posting = 0; // a fetch fallback is under way
let prefix; // random, per page load: ids are unique across the tabs sharing a session
let counter = 0;

const nextId = () => (prefix = prefix || randomId(6)) + "." + (++counter).toString(36);

/** Send on the socket now, outside the queue (hello, ping, the consent withdrawal). */
const transmit = (message) => {
  try {
    socket.send(JSON.stringify(message));
  } catch (e) {}
};

/** Send what the queue holds and the socket has not carried yet, as far as the tokens allow. */
const pump = () => {
  clearTimeout(pumpTimer);
  const time = Date.now();
  tokens = Math.min(30, tokens + Math.max(0, time - tokensAt) * 0.015);
  tokensAt = time;
  for (const entry of queue) {
    if (!ready || tokens < 1) break;
    if (!entry.sent_) {
      entry.sent_ = 1;
      tokens--;
      transmit(entry.message_);
    }
  }
  if (ready && queue.some((entry) => !entry.sent_)) pumpTimer = setTimeout(quietly(pump), 100);
};

/** Queue a message (it gets its id here) and send it as soon as possible. */
export const send = (message) => {
  if (!active) return;
  message.id = nextId();
  queue.push({ message_: message });
  if (queue.length > 100) queue.shift();
  pump();
};

export const sendEvent = (name, fields) => send({ type: "event", name, ...fields });

const acknowledge = (ids) => {
  if (Array.isArray(ids)) queue = queue.filter((entry) => !ids.includes(entry.message_.id));
};

/** Take the session id the server names (a new one when the old session had expired). */
const adopt = (id) => {
  if (active && typeof id == "string" && ID.test(id)) store("s", (session = id));
};

/**
 * Send the whole queue over HTTP: with sendBeacon when the page is being hidden or left (`hiding`),
 * else with fetch, whose answer carries the acks and the session, so nothing is lost while the
 * socket cannot connect.
 */
export const flush = (hiding) => {
  if (!active || !queue.length) return;
  const url = origin + "/v1/events?site=" + encodeURIComponent(site);
  const body = JSON.stringify({
    site,
    visitor,
    session: session || undefined,
    page: page(),
    consent,
    device,
    messages: queue.map((entry) => entry.message_),
  });
  if (hiding) {
    try {
      if (navigator.sendBeacon(url, body)) queue = [];
    } catch (e) {}
  } else if (!posting) {
    posting = 1;
    fetch(url, { method: "POST", body, keepalive: true, credentials: "omit" })
      .then((response) => response.json())
      .then(quietly((answer) => (adopt(answer.session), acknowledge(answer.acks))))
      .catch(() => {})
      .finally(() => (posting = 0));
  }
};

/**
 * The reconnect rule of docs/protocol.md: before attempt n (0 after a welcome) wait
 * random() x min(30 s, 0.5 s x 2^n), "full jitter".
 */
const retry = () => {
  clearTimeout(retryTimer);
  if (!active) return;
  const delay = Math.random() * Math.min(30000, 500 * 2 ** attempt++);
  retryTimer = setTimeout(quietly(connect), delay);
};

export const connect = () => {
  if (!active || socket) return;
  let current;
  try {
    current = socket = new WebSocket(
      origin.replace(/^http/, "ws") + "/v1/ws?site=" + encodeURIComponent(site)
    );
  } catch (e) {
    socket = null;
    return retry();
  }
  current.onopen = quietly(() =>
    transmit({
      id: nextId(),
      type: "hello",
      v: 1,
      site,
      visitor,
      session: session || undefined,
      page: page(),
      consent,
      device,
      lang: lang(),
      tz: zone(),
    })
  );
  current.onmessage = quietly((e) => socket == current && receive(JSON.parse(e.data)));
  current.onclose = quietly(() => {
    if (socket != current) return;
    socket = null;
    clearInterval(heartbeat);
    if (!ready && ++failures >= 3) flush();
    ready = 0;
    retry();
  });
};

const receive = (message) => {
  const type = message.type;
  if (type == "welcome") {
    // Also sent again when the session expired while the socket was open.
    adopt(message.session);
    const config = message.config || {};
    configure(config);
    if (!ready) {
      ready = 1;
      failures = attempt = 0;
      for (const entry of queue) entry.sent_ = 0; // the unacked messages go again, in order
      clearInterval(heartbeat);
      heartbeat = setInterval(
        quietly(() => ready && transmit({ id: nextId(), type: "ping" })),
        (config.heartbeat_s || 25) * 1000
      );
      pump();
    }
  } else if (type == "ack") acknowledge(message.ids);
  else if (type == "error" && message.id) {
    const entry = queue.find((e) => e.message_.id == message.id);
    if (entry && /^(unavailable|rate_limited)$/.test(message.code)) {
      // Worth another try: send it again in a second.
      entry.sent_ = 0;
      pumpTimer = setTimeout(quietly(pump), 1000);
    } else acknowledge([message.id]);
  } else if (type == "arm") arm(message.offer);
  else if (type == "offer") show(message.offer);
  else if (type == "withdraw") withdraw(message.offer);
  else if (type == "reward") reward(message);
  else if (type == "phone_result") phone(message);
};

/**
 * The visitor's locale, when it is a plain one: the script tag's data-locale, else the page's
 * <html lang> (else none: the server uses the site's). The offers' texts follow it.
 */
const lang = () => {
  const value = (script.dataset.locale || document.documentElement.lang || "").replace("_", "-");
  return /^[a-z]{2}(-[A-Za-z]{2})?$/.test(value) ? value : undefined;
};

/** The browser's time zone (Europe/Berlin): the emails' quiet hours follow it. */
const zone = () => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {}
};

/** Start tracking: the visitor id (created once, then kept) and the session to resume. */
export const begin = () => {
  active = 1;
  visitor = store("v") || "";
  if (!ID.test(visitor)) store("v", (visitor = randomId(22)));
  session = store("s") || "";
  if (!ID.test(session)) session = "";
};

/** Stop tracking: forget the queue, stop every timer, close the socket a little later. */
export const end = () => {
  active = ready = 0;
  queue = [];
  clearTimeout(retryTimer);
  clearTimeout(pumpTimer);
  clearInterval(heartbeat);
  const closing = socket;
  socket = null;
  // Time for the withdrawal sent just before to leave (the server closes the socket itself).
  if (closing) setTimeout(quietly(() => closing.close()), 3000);
};

/** Send one last message at once: on the socket if it is welcomed, else by beacon. */
export const sendLast = (message) => {
  message.id = nextId();
  if (ready) transmit(message);
  else (queue = [{ message_: message }]), flush(1);
};
