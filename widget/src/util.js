// Small helpers. The core and the overlay are built separately, so each carries its own copy of
// what it uses.

/** `fn`, made silent: nothing it throws reaches the shop's page. The widget must never break it. */
export const quietly = (fn) =>
  function (...args) {
    try {
      return fn.apply(this, args);
    } catch (e) {}
  };

/** Listen quietly; by default with a passive capture listener, which cannot hold up the page. */
export const listen = (target, type, fn, options) => {
  try {
    target.addEventListener(type, quietly(fn), options || { capture: true, passive: true });
  } catch (e) {}
};

export const now = () => performance.now();

/** `value` as a string of at most `max` characters ("" for null and undefined). */
export const cut = (value, max) => (value == null ? "" : String(value).slice(0, max));

/** `value` as a finite number >= 0, or undefined. */
export const amount = (value) =>
  value == null || value === "" || !(+value >= 0) || !isFinite(value) ? undefined : +value;

/** `value` if it is an ISO 4217 currency code, else "". */
export const currencyCode = (value) => (/^[A-Z]{3}$/.test(value) ? value : "");

/** What the server accepts as an email address (protocol: `identify`). */
export const EMAIL = /^[^@\s<>"',;]+@[^@\s<>"',;]+\.[^@\s<>"',;]+$/;
