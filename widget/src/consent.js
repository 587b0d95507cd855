// Consent. Without data-consent the widget tracks at once (analytics granted, marketing not);
// data-consent="required" waits for consent, "granted" grants both. The visitor's own choice, once
// given (command queue or Google Consent Mode in the dataLayer), is stored and wins. Before
// consent nothing is sent and nothing is stored; a withdrawal tells the server to erase the
// visitor, stops everything and keeps only the refusal itself.

import { replayDataLayer } from "./datalayer.js";
import { script } from "./env.js";
import { forgetOffers } from "./offers.js";
import { pageView } from "./pages.js";
import { active, begin, connect, end, send, sendLast } from "./transport.js";
import { store } from "./storage.js";

export let consent;

/** The consent the page starts with (read while the script runs). */
export const readConsent = () => {
  const stored = store("c");
  const attribute = script.dataset.consent;
  consent = stored
    ? { analytics: stored[0] == "1", marketing: stored[1] == "1" }
    : { analytics: attribute != "required", marketing: attribute == "granted" };
};

/** Start tracking: page view, the ecommerce events already in the dataLayer, the socket. */
export const start = () => {
  if (active) return;
  begin();
  pageView();
  replayDataLayer();
  connect();
};

const stop = () => {
  end();
  forgetOffers();
  for (const key of "vsc") store(key, null);
};

export const setConsent = (analytics, marketing) => {
  marketing = !!marketing;
  if (!analytics) {
    consent = { analytics: false, marketing: false };
    if (!active) return;
    sendLast({ type: "consent", analytics: false });
    stop();
    store("c", "00");
    return;
  }
  const changed = !consent.analytics || consent.marketing != marketing;
  consent = { analytics: true, marketing };
  if (!active) start();
  else if (changed) send({ type: "consent", analytics: true, marketing });
  store("c", "1" + +marketing);
};

/**
 * Google Consent Mode v2: gtag("consent", "default" | "update", params) in the dataLayer.
 * analytics_storage grants or withdraws (withdraws only in an update); ad_storage sets marketing.
 */
export const consentMode = (command, params) => {
  const analytics = params.analytics_storage;
  const marketing = params.ad_storage ? params.ad_storage == "granted" : consent.marketing;
  if (analytics == "denied") command == "update" && setConsent(0);
  else if (analytics == "granted" || (active && command == "update")) setConsent(1, marketing);
};
