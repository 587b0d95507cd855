// The command queue, window.exitwidget: arrays pushed by the shop, before or after the widget
// loaded (see core.js for the list).

import { setConsent } from "./consent.js";
import { onCode } from "./offers.js";
import { navigated } from "./pages.js";
import { sendEvent } from "./transport.js";
import { EMAIL } from "./util.js";

// Event name -> the field it cannot do without (the server validates everything else).
const EVENTS = {
  product_view: "product",
  cart_add: "item",
  cart_remove: "item",
  cart_update: "items",
  checkout_start: "",
  purchase: "order_id",
};

export const command = (args) => {
  if (!args || typeof args[0] != "string") return;
  const [name, first, second] = args;
  if (name == "consent" && first) setConsent(!!first.analytics, first.marketing);
  else if (name == "on" && first == "code" && typeof second == "function") onCode(second);
  else if (name == "page") navigated(1);
  else if (
    name == "identify" &&
    first &&
    typeof first.email == "string" &&
    first.email.length <= 254 &&
    EMAIL.test(first.email)
  )
    sendEvent("identify", { email: first.email, consent: first.consent === true });
  else if (
    name == "track" &&
    typeof EVENTS[first] == "string" &&
    second &&
    typeof second == "object" &&
    (!EVENTS[first] || second[EVENTS[first]] != null)
  ) {
    const { id, type, name: ignored, ...fields } = second; // the envelope is the widget's
    sendEvent(first, fields);
  }
};
