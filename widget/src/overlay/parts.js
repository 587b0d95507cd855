// The parts of a dialog that depend on the offer's kind. Each appends to the open dialog.

import { EMAIL, amount, currencyCode, cut, quietly } from "../util.js";
import { core, currentOffer, dialog, focusables, closeDialog, closed, report } from "./dialog.js";
import { attrs, el, httpUrl, money } from "./dom.js";

/** Hand a code to the shop's own script, when that is how the site applies codes. */
const applyCode = (offer, code) =>
  (offer.apply || {}).mode == "callback" &&
  core.applied({ code, offer: offer.id, campaign: offer.campaign, discount: offer.discount });

/**
 * The call to action's link with the code applied the shop's way: Shopify's /discount/CODE
 * link redirecting to it, or a query parameter. Without a link: the page the visitor is on.
 */
const applying = (offer, url) => {
  const apply = offer.apply || {};
  const code = offer.code;
  if (!code || !/^(shopify|url)$/.test(apply.mode)) return url;
  const target = new URL(url || location.href);
  if (apply.mode == "url") return target.searchParams.set(apply.param, code), target.href;
  return (
    target.origin +
    "/discount/" +
    encodeURIComponent(code) +
    "?redirect=" +
    encodeURIComponent(target.pathname + target.search)
  );
};

/** discount: the code in a read-only field, with a copy button (copying applies it too). */
export const discountCode = (code, offer) => {
  const box = el("div", "k", null, dialog);
  const input = attrs(el("input", 0, null, box), { readonly: "", "aria-label": "Discount code" });
  input.value = cut(code, 64);
  const button = attrs(el("button", 0, "Copy", box), { type: "button" });
  button.onclick = quietly(() => {
    report("code_copy");
    applyCode(offer, code);
    const copied = quietly(() => (button.textContent = "Copied"));
    const fallback = quietly(() => {
      input.select();
      try {
        document.execCommand("copy");
      } catch (e) {}
      copied();
    });
    try {
      navigator.clipboard.writeText(input.value).then(copied, fallback);
    } catch (e) {
      fallback();
    }
  });
};

/** similar_products: up to six cards (image, title, price), links when their URL is http(s). */
export const productGrid = (products) => {
  const grid = el("div", "g", null, dialog);
  for (const product of products.slice(0, 6)) {
    if (!product || typeof product != "object") continue;
    const url = httpUrl(product.url);
    const card = el(url ? "a" : "div", 0, null, grid);
    const image = httpUrl(product.image);
    if (url) (card.href = url), (card.onclick = quietly(() => report("product")));
    if (image)
      attrs(el("img", 0, null, card), { src: image, alt: "", loading: "lazy", decoding: "async" });
    el("span", 0, cut(product.title, 120), card);
    if (amount(product.price) != null)
      el("b", 0, money(+product.price, currencyCode(product.currency)), card);
  }
};

/**
 * email_capture: an address and a consent checkbox (never ticked in advance). The button says
 * what will happen: with a code to give, "Email me my code" when the box is ticked and "Show my
 * code" when it is not; without one, consent is required. Submitting sends `offer_capture` and
 * replaces the form with the thanks; the code follows in a `reward` (see `reward` below).
 * Returns the form.
 */
export const emailForm = (offer, cta) => {
  const form = el("form", "f", null, dialog);
  const input = attrs(el("input", 0, null, form), {
    type: "email",
    required: "",
    autocomplete: "email",
    maxlength: "254",
    "aria-label": "Email",
    placeholder: "you@example.com",
  });
  const label = el("label", 0, null, form);
  const checkbox = attrs(el("input", 0, null, label), { type: "checkbox" });
  label.append(cut(offer.consent_label || "Email me offers. I can unsubscribe at any time.", 300));
  const gift = offer.reward || {};
  const privacy = httpUrl(offer.privacy_url);
  if (privacy)
    attrs(el("a", 0, cut(gift.privacy_label || "Privacy policy", 80), form), {
      href: privacy,
      target: "_blank",
      rel: "noopener",
    });
  if (!gift.code) checkbox.required = true; // nothing to give without consent
  const button = attrs(el("button", "c", null, form), { type: "submit" });
  const say = () =>
    (button.textContent = cut(
      (gift.code && !checkbox.checked ? gift.submit_on_screen : gift.submit_with_email) ||
        cta.label ||
        "Subscribe",
      80
    ));
  checkbox.onchange = quietly(say);
  say();
  form.onsubmit = (e) => {
    e.preventDefault(); // whatever happens next, the page is not submitted
    quietly(() => {
      const email = input.value.trim();
      if (!EMAIL.test(email)) return input.focus();
      const consent = checkbox.checked;
      if (offer.claim)
        core.send({ type: "offer_capture", offer: offer.id, claim: offer.claim, email, consent });
      else core.send({ type: "event", name: "identify", email, consent, source: "widget" });
      report("email_submit");
      form.replaceWith(attrs(el("p", "r", cut(offer.thanks || "Thank you!", 300)), { role: "status" }));
      focusables()[0].focus();
    })();
  };
  return form;
};

/**
 * sms_capture: a phone number and its own SMS consent (never ticked in advance, required), then
 * the code texted to it, then the thanks. Each step sends `phone_capture` / `phone_confirm`
 * and waits for the server's `phone_result` (see `phone` below).
 */
export const phoneForm = (offer, code) => {
  const words = offer.phone || {};
  const form = el("form", "f", null, dialog);
  const input = attrs(
    el("input", 0, null, form),
    code
      ? { inputmode: "numeric", autocomplete: "one-time-code", maxlength: "6", "aria-label": words.code }
      : { type: "tel", autocomplete: "tel", maxlength: "40", "aria-label": "Phone", placeholder: "+49 170 1234567" }
  );
  input.required = true;
  let checkbox;
  if (!code) {
    const label = el("label", 0, null, form);
    checkbox = attrs(el("input", 0, null, label), { type: "checkbox", required: "" });
    label.append(cut(offer.consent_label, 300));
  }
  el("button", "c", cut((code ? words.confirm : words.submit) || "OK", 80), form).type = "submit";
  form.onsubmit = (e) => {
    e.preventDefault();
    quietly(() => {
      const value = input.value.trim();
      core.send(
        code
          ? { type: "phone_confirm", code: value }
          : { type: "phone_capture", offer: offer.id, phone: value, consent: checkbox.checked }
      );
    })();
  };
  return form;
};

/** The server's answer to an SMS capture: the code field, the thanks, or what went wrong. */
export const phone = quietly((message) => {
  const form = dialog && currentOffer().kind == "sms_capture" && dialog.querySelector(".f");
  if (!form) return;
  const offer = currentOffer();
  const status = message.status;
  if (status == "error") {
    const old = form.querySelector(".e") || el("p", "e", null, form);
    attrs(old, { role: "alert" }).textContent = cut(message.message, 200);
  } else if (status == "code_sent") {
    form.remove();
    phoneForm(offer, 1).querySelector("input").focus();
  } else if (status == "confirmed") {
    form.replaceWith(attrs(el("p", "r", cut(offer.thanks, 300)), { role: "status" }));
    focusables()[0].focus();
  }
});

/** The server's answer to a capture: its thanks, the code (with a copy button), the note. */
export const reward = quietly((message) => {
  const thanks = dialog && currentOffer().id == message.offer && dialog.querySelector(".r");
  if (!thanks) return;
  if (message.text) thanks.textContent = cut(message.text, 300);
  let last = thanks;
  const offer = currentOffer();
  if (message.code)
    discountCode(message.code, offer),
      thanks.after((last = dialog.lastChild)),
      applyCode(offer, message.code);
  if (message.note) last.after(el("p", 0, cut(message.note, 300)));
});

/**
 * The call to action: a link when it has an http(s) URL (or leads to the code's application),
 * else a button that closes the dialog. With the shop's script applying codes, a link to the
 * page the visitor is on only closes the dialog: the code is applied, nothing to reload.
 */
export const callToAction = (cta, offer) => {
  const url = httpUrl(applying(offer, httpUrl(cta.url)));
  const here = url && url.split("#")[0] == location.href.split("#")[0];
  const stay = !url || (here && (offer.apply || {}).mode == "callback");
  const button = el(stay ? "button" : "a", "c", cut(cta.label, 80), dialog);
  if (!stay) button.href = url;
  button.onclick = quietly(() => {
    report("cta");
    if (offer.code) applyCode(offer, offer.code);
    if (stay) closeDialog(), closed();
  });
};
