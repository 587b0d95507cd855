/* Exit-intent and live-offers widget (protocol v1): the core, loaded on every page. No
 * dependencies, no globals besides the command queue `window.exitwidget`. Embed:
 *   <script async src="https://SERVER/widget.js" data-site="KEY" [data-consent="required"]></script>
 * With `data-preview` on a page of the server itself, it only renders the offer object found in
 * <script type="application/json" id="exw-preview"> (the admin's live preview).
 *
 * Command queue (works before the script has loaded; after that, push runs immediately):
 *   window.exitwidget = window.exitwidget || [];
 *   exitwidget.push(["identify", {email: "a@b.example", consent: true}]);
 *   exitwidget.push(["track", "cart_add", {item: {id: "sku1", quantity: 1, price: 9.5}}]);
 *   exitwidget.push(["consent", {analytics: true, marketing: false}]);
 *   exitwidget.push(["page"]);   // report a page view now (SPA routers)
 *   exitwidget.push(["on", "code", ({code, offer, campaign, discount}) => applyCoupon(code)]);
 *                                // the shop applies codes itself (site setting: callback)
 *
 * Offer object, as sent by the server in `offer` (show now) and `arm` (show on the next exit
 * intent without a round trip) messages; `withdraw` {offer: id} removes it:
 *   {
 *     id: string,                 // [A-Za-z0-9._:-]{1,64}; echoed in offer_* reports
 *     kind: "discount" | "similar_products" | "email_capture" | "sms_capture" | "message",
 *     headline: string,
 *     body?: string,
 *     cta?: {label: string, url?: string},   // http(s) only; email_capture: submit label
 *     code?: string,              // discount code, shown with a copy button
 *     expires_at?: number,        // unix ms: live countdown; the offer closes when it passes
 *     claim?: string,             // offer: the server's reservation, echoed in offer_shown
 *     show_within?: number,       // offer: seconds to paint it in, else it is dropped
 *     products?: [{id, title, price, currency, url, image}],   // similar_products cards
 *     consent_label?: string,     // email_capture: label of the consent checkbox
 *     thanks?: string,            // email_capture: text shown after submitting
 *     theme?: {accent, background, text, radius}   // CSS colours; radius in px
 *     kinds?: [string],           // arm: the exit-intent kinds it shows on (all if absent)
 *     not_before?: number,        // arm: unix ms before which it does not show
 *   }
 * The core (this file and what it imports) connects, tracks and keeps the armed offer; the
 * overlay (overlay/, a separate script loaded with the first offer) draws offers. Everything is
 * rendered with textContent and attributes inside a Shadow DOM; links and images are used only
 * when their URL is http: or https:.
 */

import { command } from "./commands.js";
import { consent, readConsent, start } from "./consent.js";
import { readDataLayer, watchDataLayer } from "./datalayer.js";
import { locate, origin, queue, script } from "./env.js";
import { preview } from "./offers.js";
import { watchHesitation, watchHistory, watchSignals } from "./signals.js";
import { listen, quietly } from "./util.js";

const init = () => {
  // The admin's campaign preview (on the server's own origin only): render the offer object of
  // <script type="application/json" id="exw-preview">; never connect.
  if (script.dataset.preview != null)
    return (
      origin == location.origin &&
      preview(JSON.parse(document.getElementById("exw-preview").textContent))
    );
  readDataLayer();
  if (consent.analytics) start();
  const early = queue.splice(0);
  queue.push = (...commands) => (commands.forEach(quietly(command)), 0);
  early.forEach(quietly(command));
  watchDataLayer();
  watchHistory();
  watchSignals();
  watchHesitation();
};

quietly(() => {
  if (!locate()) return;
  readConsent();
  if (document.readyState == "loading") listen(document, "DOMContentLoaded", init, { once: true });
  else quietly(init)();
})();
