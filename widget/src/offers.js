// Offers pushed by the server: `arm` (keep it ready and show it on the next exit intent without a
// round trip), `offer` (show it now, with its claimed code), `withdraw` (take it away).
//
// Drawing them is the overlay's job, a separate script (src/overlay/) that most visitors never
// need: it is loaded when the first offer is armed or sent, so that by the time the visitor
// shows exit intent it is there and the armed offer paints in the same task as the signal. An
// offer that arrives before the overlay has loaded is shown once it has. A failed load leaves the
// page alone; the next arm, offer or exit intent tries again.
//
// Shown means seen: "offer_shown" goes out when a claimed offer (one with a `claim` token) is
// painted, and only then does the server count it. An armed offer painted on exit intent is
// reported when its claimed copy replaces it a round trip later. One dialog at a time: an offer
// claimed while another dialog is open (a live offer during an exit offer) waits until that one
// closes, never replacing it; one that could not be painted within its `show_within` seconds is
// dropped, as the server has released it by then.
//
// The overlay hands itself over through the command queue: its script calls
// `exitwidget.overlay(create)`, and create(lent) returns its functions (see overlay/index.js).

/* global OVERLAY_PATH -- the overlay's content-hashed path, written in by build.mjs */

import { origin, queue, script } from "./env.js";
import { send } from "./transport.js";
import { quietly } from "./util.js";

let armed = null;
let overlay = null; // the overlay's functions, once its script has run
let loading = null; // the overlay's <script> while it loads
let waiting = []; // offers to show once the overlay is there, in their order of arrival
let queued = []; // claimed offers that arrived while a dialog was open: shown when it closes
let previewing = 0; // the admin's campaign preview: render the offer, report nothing
const seen = {}; // claims reported shown on this page: reopening one is not a new exposure
const codeHandlers = []; // the shop's functions that apply a code: exitwidget.push(["on", "code", fn])

/** The shop's script will apply codes: `fn({code, offer, campaign, discount})`. */
export const onCode = (fn) => codeHandlers.push(fn);
const applied = (detail) => codeHandlers.forEach((fn) => quietly(fn)(detail));

/** An offer object the widget can show: an object with a valid id that has not expired. */
export const validOffer = (offer) =>
  !!offer &&
  typeof offer == "object" &&
  /^[\w.:-]{1,64}$/.test(offer.id) &&
  !(offer.expires_at < Date.now());

const register = quietly((create) => {
  if (!loading || overlay) return;
  overlay = create({ send, valid: validOffer, preview: previewing, closed: next, applied });
  if (armed) overlay.mount();
  const offers = waiting;
  waiting = [];
  for (const offer of offers) previewing ? overlay.render(offer) : show(offer);
});

const loadOverlay = () => {
  if (overlay || loading) return;
  queue.overlay = register;
  const tag = (loading = document.createElement("script"));
  tag.src = origin + OVERLAY_PATH;
  tag.nonce = script.nonce; // for pages whose Content-Security-Policy allows scripts by nonce
  tag.onload = tag.onerror = quietly(() => {
    tag.remove();
    loading = null;
    if (!overlay) waiting = []; // it failed: these are forgotten, a later offer tries again
  });
  (document.head || document.documentElement).append(tag);
};

/** Whether an offer's dialog is open. */
export const overlayOpen = () => overlay && overlay.open();

const reportShown = (offer) => {
  const claim = offer.claim;
  if (claim && !seen[claim])
    (seen[claim] = 1), send({ type: "offer_shown", offer: offer.id, claim });
};

/** Paint an offer from the server now if no other dialog is open; else it waits its turn. */
const paint = (offer) => {
  if (!validOffer(offer) || offer.by < Date.now()) return;
  if (!overlay.show(offer)) return queued.push(offer);
  if (armed && armed.id == offer.id) armed = null;
  reportShown(offer);
};

/** A dialog closed: the next offer waiting for it, if one is still in time. */
const next = () => {
  const offers = queued;
  queued = [];
  for (const offer of offers) overlay.open() ? queued.push(offer) : paint(offer);
};

export const arm = (offer) => {
  armed = validOffer(offer) ? offer : null;
  // The shadow host is mounted (its stylesheet parsed) ahead, so an exit only builds the dialog.
  if (armed) overlay ? overlay.mount() : loadOverlay();
};

/**
 * On an exit intent of this kind: the armed offer, if it may show for it, leaves the armed slot
 * and is drawn now. Returned when it was drawn now; else it shows once the overlay has loaded.
 * With a `value`, kind is "scroll_depth" or "time_on_page": the offer shows if its own threshold
 * (offer.scroll_depth, offer.time_on_page) is reached.
 */
export const showArmed = (kind, value) => {
  const offer = armed;
  if (
    !validOffer(offer) ||
    (value == null ? offer.kinds && !offer.kinds.includes(kind) : !(offer[kind] <= value)) ||
    offer.not_before > Date.now()
  )
    return;
  armed = null;
  if (overlay) return overlay.render(offer), offer;
  waiting.push(offer);
  loadOverlay();
};

export const show = (offer) => {
  if (!validOffer(offer)) return;
  // The time left to paint it, on this page's clock (the server's may differ).
  if (offer.show_within > 0 && !offer.by) offer.by = Date.now() + offer.show_within * 1e3 - 5e3;
  if (overlay) return paint(offer);
  if (armed && armed.id == offer.id) armed = null;
  waiting.push(offer);
  loadOverlay();
};

/** The answer to an email capture: the code (and whether it comes by email too). */
export const reward = (message) => overlay && overlay.reward(message);

/** The answer to an SMS capture's number or code (`phone_result`). */
export const phone = (message) => overlay && overlay.phone(message);

export const withdraw = (id) => {
  const named = (offer) => id == "*" || offer.id == id;
  if (armed && named(armed)) armed = null;
  waiting = waiting.filter((offer) => !named(offer));
  queued = queued.filter((offer) => !named(offer));
  if (overlay) overlay.withdraw(id);
};

/** Consent withdrawn: nothing armed, nothing waiting, nothing on screen. */
export const forgetOffers = () => {
  armed = null;
  waiting = queued = [];
  if (overlay) overlay.clear();
};

/** The admin's preview: render this offer (no connection, no reports). */
export const preview = (offer) => {
  previewing = 1;
  waiting = [offer];
  loadOverlay();
};
