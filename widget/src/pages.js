// The page: its type, the page views, navigation in single-page shops.

import { newPage } from "./signals.js";
import { sendEvent } from "./transport.js";
import { cut, quietly } from "./util.js";

const PAGE_TYPES = "home category product search cart checkout payment thank_you other".split(" ");
let gaPageType = ""; // learnt from the GA4 events of the dataLayer, until the next navigation
let url = location.href;
let referrer = document.referrer;

/** <body data-page-type="..."> if the shop sets it, else what the dataLayer told, else "other". */
export const pageType = () => {
  const declared = document.body && document.body.dataset.pageType;
  return PAGE_TYPES.includes(declared) ? declared : gaPageType || "other";
};

export const learnPageType = (type) => (gaPageType = type);

export const page = () => ({
  url: cut(location.href, 2048),
  title: cut(document.title, 300),
  referrer: cut(referrer, 2048),
  page_type: pageType(),
});

export const pageView = () => sendEvent("page_view", page());

/** After a history change: a page view if the URL changed (always when `force`d: "page"). */
export const navigated = (force) => {
  const current = location.href;
  if (current != url) (referrer = url), (url = current), (gaPageType = "");
  else if (!force) return;
  newPage();
  setTimeout(quietly(pageView), 0); // once the router has updated the title
};
