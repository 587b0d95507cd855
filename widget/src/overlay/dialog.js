// The offer dialog, in a shadow root at the end of <html>: a modal popup with a focus trap, or
// (the offer's `layout`) a corner card or a bar at the top or bottom that leaves the page usable.
// A countdown when the offer expires; a teaser pill that stays after a dismissal and reopens it.

import { amount, cut, now, quietly } from "../util.js";
import { attrs, el } from "./dom.js";
import { callToAction, discountCode, emailForm, productGrid, phoneForm } from "./parts.js";
import { STYLE } from "./style.js";

export let core; // what the core lends the overlay: {send, valid, preview, closed, applied}
export let host; // <exit-widget>, the shadow host
let shadow;
export let dialog = null; // the open dialog's element
export let modal; // whether it is the modal popup (else the page stays usable around it)
let current = null; // the offer of the dialog or of the pill
let pill = null;
let previousFocus; // where the focus goes back to when the dialog closes
let openedAt;
let countdownTimer;

export const lend = (lent) => (core = lent);

/** The offer of the open dialog (or of the pill). */
export const currentOffer = () => current;

/** The shadow host with its stylesheet, attached once (again if the page removed it). */
export const mount = () => {
  if (host && host.isConnected) return;
  host = document.createElement("exit-widget");
  // Out of the page's layout, on top of everything, immune to the page's CSS.
  host.style.cssText =
    "all:initial!important;display:block!important;position:fixed!important;" +
    "top:0!important;left:0!important;width:0!important;height:0!important;" +
    "z-index:2147483647!important";
  shadow = host.attachShadow({ mode: "open" });
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLE);
    shadow.adoptedStyleSheets = [sheet];
  } catch (e) {
    el("style", 0, STYLE, shadow);
  }
  document.documentElement.append(host);
};

/** A themed wrapper in the shadow root: accent, background and text colours, corner radius. */
const wrap = (offer) => {
  mount();
  const wrapper = el("div", "w", null, shadow);
  const theme = offer.theme || {};
  for (const [variable, key] of [
    ["--ac", "accent"],
    ["--bg", "background"],
    ["--tx", "text"],
  ])
    if (typeof theme[key] == "string" && CSS.supports("color", theme[key]))
      wrapper.style.setProperty(variable, theme[key]);
  if (amount(theme.radius) <= 40) wrapper.style.setProperty("--r", +theme.radius + "px");
  return wrapper;
};

/** offer_clicked for the current offer: "cta", "code_copy", "product" or "email_submit". */
export const report = (action) =>
  current && core.send({ type: "offer_clicked", offer: current.id, action });

export const focusables = () =>
  [...dialog.querySelectorAll("a[href],button,input")].filter((element) => !element.disabled);

export const closeDialog = () => {
  clearInterval(countdownTimer);
  if (!dialog) return;
  // A non-modal layout gives the focus back only if it had it: the visitor may be typing elsewhere.
  const back = modal || dialog.contains(shadow.activeElement);
  dialog.parentNode.remove();
  dialog = null;
  try {
    if (back && previousFocus && previousFocus.isConnected)
      previousFocus.focus({ preventScroll: true });
  } catch (e) {}
};

export const dropPill = () => pill && (pill.remove(), (pill = null));

/**
 * The visitor closed it ("close_button", "escape", "backdrop"), said no to a two-step question
 * ("declined": no teaser pill then) or it ran out ("timeout").
 */
const dismiss = (how) => {
  if (!dialog) return;
  const offer = current;
  core.send({
    type: "offer_dismissed",
    offer: offer.id,
    how,
    visible_ms: Math.round(Math.min(Math.max(0, now() - openedAt), 864e5)),
  });
  closeDialog();
  if (!/^(timeout|declined)$/.test(how)) teaser(offer);
  closed();
};

/** Tell the core the dialog is gone (an offer may be waiting for it). */
export const closed = () => core.closed && core.closed();

const teaser = (offer) => {
  dropPill();
  pill = wrap(offer);
  const bar = el("div", "p", null, pill);
  el("button", 0, cut(offer.headline, 80), bar).onclick = quietly(
    () => (dropPill(), core.valid(offer) && render(offer))
  );
  attrs(el("button", 0, "\u00d7", bar), { "aria-label": "Close" }).onclick = quietly(dropPill);
};

/** "Ends in 14:59" (or "1:14:59"), every second; the dialog closes when the time is up. */
const countdown = (expiresAt) => {
  const timer = attrs(el("p", "t", null, dialog), { role: "timer", "aria-live": "off" });
  const twoDigits = (n) => String(n).padStart(2, "0");
  const tick = () => {
    const s = Math.ceil((expiresAt - Date.now()) / 1000);
    if (s <= 0) return dismiss("timeout");
    timer.textContent =
      "Ends in " +
      (s >= 3600 ? ((s / 3600) | 0) + ":" : "") +
      twoDigits(((s / 60) | 0) % 60) +
      ":" +
      twoDigits(s % 60);
  };
  clearInterval(countdownTimer);
  countdownTimer = setInterval(quietly(tick), 1000);
  tick();
};

/** Build the dialog for an offer (the caller makes sure no other one is open). */
export const render = (offer) => {
  dropPill();
  current = offer;
  if (document.activeElement != host) previousFocus = document.activeElement;
  openedAt = now();
  const wrapper = wrap(offer);
  const cta = offer.cta || {};
  // The layout's class (style.js); anything else is the popup.
  const layout = { slide_in: "s", bar_top: "a u", bar_bottom: "a v" }[offer.layout] || "m";
  modal = layout == "m";
  if (modal) el("div", "b", null, wrapper).onclick = quietly(() => dismiss("backdrop"));
  // The card and the bars do not take the focus nor block the page: not a dialog (which a screen
  // reader announces as where the focus is now) but a landmark, named by the headline, that
  // the visitor can reach like the page's other regions.
  dialog = attrs(
    el("div", "d " + layout, null, wrapper),
    modal
      ? { role: "dialog", "aria-modal": "true", "aria-labelledby": "exw-h", tabindex: "-1" }
      : { role: "complementary", "aria-labelledby": "exw-h" }
  );
  attrs(el("button", "x", "\u00d7", dialog), { "aria-label": "Close", type: "button" }).onclick =
    quietly(() => dismiss("close_button"));
  el("h2", 0, cut(offer.headline, 300), dialog).id = "exw-h";
  if (offer.body) el("p", 0, cut(offer.body, 1000), dialog);
  if (offer.kind == "discount" && offer.code) discountCode(offer.code, offer);
  if (offer.kind == "similar_products" && Array.isArray(offer.products))
    productGrid(offer.products);
  const two = offer.two_step;
  if (offer.kind == "email_capture" && two) {
    // Two steps: a yes/no question first (the headline); yes brings the email form in its place.
    const row = el("div", "y", null, dialog);
    el("button", "c", cut(two.yes, 40), row).onclick = quietly(() => {
      report("yes");
      row.replaceWith(emailForm(offer, cta));
      dialog.querySelector("[type=email]").focus();
    });
    el("button", "c n", cut(two.no, 40), row).onclick = quietly(() => dismiss("declined"));
  } else if (offer.kind == "email_capture") emailForm(offer, cta);
  else if (offer.kind == "sms_capture") phoneForm(offer);
  else if (cta.label) callToAction(cta, offer);
  if (offer.expires_at) countdown(offer.expires_at);
  // Escape dismisses it; the popup's focus trap: Tab and Shift+Tab cycle inside it.
  dialog.onkeydown = quietly((e) => {
    if (e.key == "Escape") e.preventDefault(), dismiss("escape");
    else if (modal && e.key == "Tab") {
      const items = focusables();
      const last = items.length - 1;
      const at = items.indexOf(shadow.activeElement);
      if (e.shiftKey ? at <= 0 : at < 0 || at >= last)
        e.preventDefault(), items[e.shiftKey ? last : 0].focus();
    }
  });
  // The countdown may have closed it already. Not in a preview: the admin page around it keeps
  // the keyboard focus; nor in a non-modal layout. Else the first control after the close
  // button takes it.
  if (dialog && modal && !core.preview) {
    const items = focusables();
    (items[1] || items[0]).focus({ preventScroll: true });
  }
};

/** Paint an offer sent by the server; true when it is on screen (false: another is open). */
export const show = (offer) => {
  // The claimed offer for the armed one already on screen replaces it, with its code.
  if (dialog && current && current.id == offer.id) closeDialog();
  if (dialog) return; // one dialog at a time
  render(offer);
  return 1;
};

export const withdraw = (id) => {
  if (current && (id == "*" || current.id == id))
    closeDialog(), dropPill(), (current = null), closed();
};
