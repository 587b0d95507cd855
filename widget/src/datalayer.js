// The shop's dataLayer: GA4 ecommerce events become protocol events; Consent Mode entries set the
// consent; view_item, view_cart, begin_checkout and purchase tell the page type.

import { consentMode } from "./consent.js";
import { learnPageType } from "./pages.js";
import { sendEvent } from "./transport.js";
import { amount, currencyCode, cut, quietly } from "./util.js";

const GA_PAGE_TYPES = {
  view_item: "product",
  view_cart: "cart",
  begin_checkout: "checkout",
  purchase: "thank_you",
};

let dataLayer;

const item = (i) => ({
  id: cut(i.item_id ?? i.id, 128),
  quantity: Math.min(10000, Math.max(1, Math.round(+i.quantity) || 1)),
  price: amount(i.price) || 0,
  title: cut(i.item_name ?? i.name, 300),
  category: cut(i.item_category, 300),
  brand: cut(i.item_brand, 300),
});

const ONLY_CONSENT_AND_PAGE_TYPE = 1;
const ONLY_ECOMMERCE = 2;

/**
 * One dataLayer entry: a GA4 object ({event, ecommerce}) or gtag's arguments
 * (["event", name, params], ["consent", command, params]). `mode` limits what is read:
 * ONLY_CONSENT_AND_PAGE_TYPE, ONLY_ECOMMERCE, or everything.
 */
const onEntry = (entry, mode) => {
  if (!entry || typeof entry != "object") return;
  let name, ecommerce;
  if (typeof entry[0] == "string") {
    if (entry[0] == "consent")
      return mode != ONLY_ECOMMERCE && consentMode(entry[1], entry[2] || {});
    if (entry[0] != "event") return;
    (name = entry[1]), (ecommerce = entry[2]);
  } else (name = entry.event), (ecommerce = entry.ecommerce);
  if (typeof name != "string") return;
  if (GA_PAGE_TYPES[name]) learnPageType(GA_PAGE_TYPES[name]);
  if (mode == ONLY_CONSENT_AND_PAGE_TYPE) return;
  ecommerce = ecommerce || {};
  const source = (Array.isArray(ecommerce.items) ? ecommerce.items.slice(0, 100) : []).filter(
    (i) => i && typeof i == "object" && (i.item_id ?? i.id) != null
  );
  const items = source.map(item);
  if (name == "view_item" && source[0]) {
    const { quantity, ...product } = items[0];
    product.price = amount(source[0].price);
    product.currency = currencyCode(source[0].currency || ecommerce.currency);
    sendEvent("product_view", { product });
  } else if (name == "add_to_cart") items.forEach((i) => sendEvent("cart_add", { item: i }));
  else if (name == "remove_from_cart")
    items.forEach((i, k) =>
      sendEvent("cart_remove", {
        item: { id: i.id, quantity: source[k].quantity != null ? i.quantity : undefined },
      })
    );
  else if (name == "begin_checkout") sendEvent("checkout_start", {});
  else if (name == "purchase" && ecommerce.transaction_id != null)
    sendEvent("purchase", {
      order_id: cut(ecommerce.transaction_id, 128),
      value: amount(ecommerce.value) ?? items.reduce((sum, i) => sum + i.price * i.quantity, 0),
      currency: currencyCode(ecommerce.currency),
      items,
      coupon: ecommerce.coupon ? cut(ecommerce.coupon, 64) : undefined,
    });
};

/** At start-up: what is in the dataLayer so far counts for consent and the page type. */
export const readDataLayer = () => {
  dataLayer = window.dataLayer = window.dataLayer || [];
  for (const entry of dataLayer) quietly(onEntry)(entry, ONLY_CONSENT_AND_PAGE_TYPE);
};

/** When tracking starts: the ecommerce events pushed before it are sent now. */
export const replayDataLayer = () => {
  for (const entry of dataLayer) quietly(onEntry)(entry, ONLY_ECOMMERCE);
};

/** From now on every push is read in full. */
export const watchDataLayer = () => {
  const push = dataLayer.push;
  dataLayer.push = function (...entries) {
    const result = push.apply(this, entries);
    for (const entry of entries) quietly(onEntry)(entry);
    return result;
  };
};
