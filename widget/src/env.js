// Where the widget runs: its command queue, its own script tag, the server it was loaded from and
// the kind of device.

export let queue; // window.exitwidget: the command queue, the widget's only global
export let script; // the <script data-site> that loaded the widget
export let site; // the shop's site key (data-site)
export let origin; // the server's origin: the socket, the beacon and the overlay come from it
export let touch; // a coarse pointer: the touch signals (back button, fast scroll up, tab switch)
export let device; // "desktop", "tablet" or "mobile", as reported to the server

/**
 * Take over the command queue and find the widget's script tag (while the script runs, so that
 * `document.currentScript` is still set). False when there is no tag with `data-site`, or when
 * another copy of the widget already runs on the page.
 */
export const locate = () => {
  queue = window.exitwidget = Array.isArray(window.exitwidget) ? window.exitwidget : [];
  if (queue.exw) return;
  const current = document.currentScript;
  script =
    current && current.dataset.site
      ? current
      : document.querySelector('script[src*="widget.js"][data-site]');
  if (!script) return;
  queue.exw = 1;
  site = script.dataset.site;
  origin = new URL(script.src, location.href).origin;
  touch = !!window.matchMedia && matchMedia("(pointer: coarse)").matches;
  device = touch
    ? Math.min(screen.width, screen.height) >= 600
      ? "tablet"
      : "mobile"
    : "desktop";
  return 1;
};
