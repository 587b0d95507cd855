// Offers pushed by the server: `arm` (keep it ready and show it on the next exit intent without a
// round trip), `offer` (show it now, with its claimed code), `withdraw` (take it away).
//
// Drawing them is the overlay's job, a separate script (src/overlay/) that most visitors never
// need: it is loaded when the first offer is armed or sent, so that by the time the visitor
// shows exit intent it is there and the armed offer paints in the same task as the signal. An
// offer that arrives before the overlay has loaded is shown once it has ("offer_shown" is sent
// when it is painted). A failed load leaves the page alone; the next arm, offer or exit intent
// tries again.
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
let previewing = 0; // the admin's campaign preview: render the offer, report nothing
const seen = {}; // offers reported shown on this page: reopening one is not a new exposure

/** An offer object the widget can show: an object with a valid id that has not expired. */
export const validOffer = (offer) =>
  !!offer &&
  typeof offer == "object" &&
  /^[\w.:-]{1,64}$/.test(offer.id) &&
  !(offer.expires_at < Date.now());

const register = quietly((create) => {
  if (!loading || overlay) return;
  overlay = create({ send, valid: validOffer, preview: previewing });
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

export const reportShown = (offer) => {
  if (!seen[offer.id]) (seen[offer.id] = 1), send({ type: "offer_shown", offer: offer.id });
};

export const arm = (offer) => {
  armed = validOffer(offer) ? offer : null;
  // The shadow host is mounted (its stylesheet parsed) ahead, so an exit only builds the dialog.
  if (armed) overlay ? overlay.mount() : loadOverlay();
};

/**
 * On an exit intent of this kind: the armed offer, if it may show for it, leaves the armed slot
 * and is drawn now. Returned when it was drawn now; else it shows once the overlay has loaded.
 */
export const showArmed = (kind) => {
  const offer = armed;
  if (
    !validOffer(offer) ||
    (offer.kinds && !offer.kinds.includes(kind)) ||
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
  if (!overlay) {
    if (armed && armed.id == offer.id) armed = null;
    waiting.push(offer);
    return loadOverlay();
  }
  // Only one dialog at a time; the claimed offer for the armed one on screen replaces it.
  if (overlay.show(offer)) {
    if (armed && armed.id == offer.id) armed = null;
    reportShown(offer);
  }
};

export const withdraw = (id) => {
  const named = (offer) => id == "*" || offer.id == id;
  if (armed && named(armed)) armed = null;
  waiting = waiting.filter((offer) => !named(offer));
  if (overlay) overlay.withdraw(id);
};

/** Consent withdrawn: nothing armed, nothing waiting, nothing on screen. */
export const forgetOffers = () => {
  armed = null;
  waiting = [];
  if (overlay) overlay.clear();
};

/** The admin's preview: render this offer (no connection, no reports). */
export const preview = (offer) => {
  previewing = 1;
  waiting = [offer];
  loadOverlay();
};
