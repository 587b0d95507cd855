// Signals: exit intent (pointer out through the top edge, leaving shortcuts, and on touch devices
// the back button, a fast scroll up, a return from another tab), hesitation (no activity for
// the page type's number of seconds), scroll depth and time on page (at the thresholds of the
// site's campaigns). Thresholds come from the server's welcome.
//
// Scroll depth: how far down the page the bottom of the view is, (scrollTop + clientHeight) /
// scrollHeight, of the element that scrolled: the document, or the page's own scroll container
// (a shop whose body does not scroll but a full-height overflow:auto element does); boxes less
// than half the window high (carousels, lists) are not the page. It is measured when the page
// scrolls, so a page that fits in the window never reports one: there is nothing to scroll
// (time on page is the trigger for such pages). Time on page counts the seconds the page is
// visible, like hesitation, which never fires in a hidden tab. Each threshold is reported at
// most once per page view (a single-page navigation starts a new one).

import { touch } from "./env.js";
import { overlayOpen, showArmed } from "./offers.js";
import { navigated, pageType } from "./pages.js";
import { active, flush, send } from "./transport.js";
import { listen, now, quietly } from "./util.js";

const EXIT_DEFAULTS = {
  min_dwell_ms: 3000,
  top_edge_px: 8,
  min_upward_speed: 0.3,
  scroll_guard_ms: 600,
  scroll_up_speed: 2.5,
  back_button: true,
  tab_switch: true,
};
const HESITATION_DEFAULTS = { product: 20, cart: 25, checkout: 40 };
let exitConfig = EXIT_DEFAULTS;
let hesitationConfig = HESITATION_DEFAULTS; // idle seconds per page type
let marks = [[], []]; // the thresholds to report: scroll depth (percent), time on page (seconds)

/** The welcome's config.exit_intent, hesitation, scroll_depth and time_on_page. */
export const configure = (config) => {
  exitConfig = { ...EXIT_DEFAULTS, ...config.exit_intent };
  hesitationConfig = { ...HESITATION_DEFAULTS, ...config.hesitation };
  marks = [config.scroll_depth || [], config.time_on_page || []];
};

const startedAt = now();
// Times are event timestamps (ms, the clock of performance.now()).
let lastExit = -1e9;
let trail = []; // the last mouse positions, {y, t}
let scrolledAt = -1e9;
let enteredAt = -1e9; // the pointer came into the page
let pickedAt = -1e9; // a <select> was used (its dropdown may cover the top edge)
let lastScrollY = scrollY;
let lastScrollAt = 0;
let lastActivity = Date.now();
let hesitations = 0; // reported since the last activity
let hidden = 0;
// The back-button guard (touch devices): at the first interaction the widget adds one history
// entry for the current URL, marked {exw: 1}. Going back leaves it: that is the exit intent.
let guardInPlace = 0;
let guardUsed = 0; // once per page: after that, back goes back
const pushState = history.pushState; // the browser's own, before the widget watches it

export const activity = () => ((lastActivity = Date.now()), (hesitations = 0));

let reached = [0, 0]; // on this page: the scroll depth and time on page reported so far
let visible = 0; // seconds this page has been visible

/** A new page view: activity, and scroll depth and time on page start again. */
export const newPage = () => (activity(), (reached = [0, 0]), (visible = 0));

/**
 * Scroll depth (i = 0) or time on page (1) now at `value`: reported when it passes a threshold
 * not reported on this page. An armed offer for it shows at once, as on exit intent.
 */
const reach = (i, value) => {
  const name = i ? "time_on_page" : "scroll_depth";
  if (active && marks[i].some((mark) => mark > reached[i] && mark <= value)) {
    reached[i] = value;
    overlayOpen() || showArmed(name, value);
    send({ type: "signal", name, [i ? "seconds" : "percent"]: value });
  }
};

/**
 * Report an exit intent (at most one per 10 s; `dwell`: not before config.min_dwell_ms on the
 * page). An armed offer shows at once, in this task: built before the signal leaves, so it paints
 * in the next frame whatever the network does.
 */
const exit = (kind, dwell) => {
  const time = now();
  if (
    !active ||
    overlayOpen() ||
    time - lastExit < 10000 ||
    (dwell && time - startedAt < exitConfig.min_dwell_ms)
  )
    return;
  lastExit = time;
  showArmed(kind); // reported shown when the claimed copy, with its code, replaces it
  send({ type: "signal", name: "exit_intent", kind });
};

/**
 * Pointer exits that are not the visitor leaving: just after a scroll, a pointer entry or a
 * dropdown, or while typing in a field (where autofill menus cover the page).
 */
const muted = (time) => {
  const focused = document.activeElement;
  const tag = focused && focused.tagName;
  return (
    time - scrolledAt < exitConfig.scroll_guard_ms ||
    time - enteredAt < 500 ||
    time - pickedAt < 1000 ||
    tag == "SELECT" ||
    (tag == "INPUT" &&
      focused.autocomplete != "off" &&
      !/^(checkbox|radio|button|submit|reset|range|color|file|image)$/.test(focused.type))
  );
};

// Not on a tap that navigates: the guard entry would stay behind the next page.
const placeGuard = (e) => {
  if (
    !touch ||
    !active ||
    !exitConfig.back_button ||
    guardInPlace ||
    guardUsed ||
    (e.target.closest && e.target.closest("a[href],form button,[type=submit]"))
  )
    return;
  const state = history.state;
  pushState.call(
    history,
    state && typeof state == "object" ? { ...state, exw: 1 } : { exw: 1 },
    "",
    location.href
  );
  guardInPlace = 1;
};

/** Watch history changes (single-page navigation and the back-button guard). */
export const watchHistory = () => {
  for (const method of ["pushState", "replaceState"]) {
    const original = history[method];
    history[method] = function (...args) {
      const result = original.apply(this, args);
      if (method == "pushState") guardInPlace = 0; // the guard is no longer the current entry
      quietly(navigated)();
      return result;
    };
  }
  listen(window, "popstate", (e) => {
    const onGuard = e.state && e.state.exw;
    if (guardInPlace && !onGuard) (guardInPlace = 0), (guardUsed = 1), exit("back_button");
    else if (onGuard && !guardUsed) guardInPlace = 1;
    navigated();
  });
};

/** Watch pointer, keyboard, scroll and visibility for exit intent and activity. */
export const watchSignals = () => {
  listen(document, "pointermove", (e) => {
    activity();
    if (e.pointerType != "mouse") return;
    trail.push({ y: e.clientY, t: e.timeStamp });
    if (trail.length > 5) trail.shift();
  });
  listen(document, "mouseover", (e) => e.relatedTarget || (enteredAt = e.timeStamp));
  // Top edge: the pointer leaves the window near the top, moving up fast enough.
  listen(document, "mouseout", (e) => {
    const time = e.timeStamp;
    if (e.relatedTarget || e.clientY > exitConfig.top_edge_px || muted(time)) return;
    const from = trail.find((p) => time - p.t < 400);
    if (from && (from.y - e.clientY) / Math.max(time - from.t, 1) >= exitConfig.min_upward_speed)
      exit("top_edge", 1);
  });
  listen(document, "pointerdown", (e) => {
    activity();
    if (e.target.tagName == "SELECT") pickedAt = e.timeStamp;
  });
  listen(document, "change", (e) => e.target.tagName == "SELECT" && (pickedAt = e.timeStamp));
  for (const type of ["pointerup", "touchend", "click"]) listen(document, type, placeGuard);
  listen(document, "keydown", (e) => {
    activity();
    placeGuard(e);
    const key = e.key;
    // Ctrl/Cmd+W closes the tab, Ctrl/Cmd+L goes to the address bar, Alt+Left goes back.
    if (((e.ctrlKey || e.metaKey) && /^[wl]$/i.test(key)) || (e.altKey && key == "ArrowLeft"))
      exit("keyboard");
  });
  listen(window, "scroll", (e) => {
    const time = e.timeStamp;
    const y = scrollY;
    scrolledAt = time;
    activity();
    if (e.target != document) return;
    if (
      touch &&
      y > 200 &&
      (lastScrollY - y) / Math.max(time - lastScrollAt, 1) >= exitConfig.scroll_up_speed
    )
      exit("scroll_up", 1);
    (lastScrollY = y), (lastScrollAt = time);
  });
  // Scroll depth, on its own listener (a failure here leaves exit intent alone), and measured
  // only when a campaign wants it: the sizes may cost a layout.
  listen(window, "scroll", (e) => {
    if (!marks[0][0]) return;
    const box = e.target == document ? document.scrollingElement : e.target;
    const height = box.clientHeight;
    if (box.scrollHeight > height && height * 2 > innerHeight)
      reach(0, Math.min(100, Math.round(((box.scrollTop + height) * 100) / box.scrollHeight)));
  });
  listen(document, "visibilitychange", () => {
    if (document.visibilityState == "hidden") (hidden = 1), flush(1);
    else if (hidden) (hidden = 0), touch && exitConfig.tab_switch && exit("tab_switch");
  });
  listen(window, "pagehide", () => flush(1));
};

/**
 * Every second: the time on page, and hesitation after the page type's idle time, then again at
 * each multiple.
 */
export const watchHesitation = () =>
  setInterval(
    quietly(() => {
      if (document.visibilityState != "hidden") reach(1, ++visible);
      const type = pageType();
      const threshold = hesitationConfig[type];
      const seconds = (Date.now() - lastActivity) / 1000;
      if (
        active &&
        threshold > 0 &&
        document.visibilityState != "hidden" &&
        seconds >= threshold * (hesitations + 1)
      ) {
        hesitations++;
        send({ type: "signal", name: "hesitation", seconds: Math.round(seconds), page_type: type });
      }
    }),
    1000
  );
