/* Exit-intent and live-offers widget (protocol v1). No dependencies, no globals besides the
 * command queue `window.exitwidget`. Embed:
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
 *
 * Offer object, as sent by the server in `offer` (show now) and `arm` (show on the next exit
 * intent without a round trip) messages; `withdraw` {offer: id} removes it:
 *   {
 *     id: string,                 // [A-Za-z0-9._:-]{1,64}; echoed in offer_* reports
 *     kind: "discount" | "similar_products" | "email_capture" | "message",
 *     headline: string,
 *     body?: string,
 *     cta?: {label: string, url?: string},   // http(s) only; email_capture: submit label
 *     code?: string,              // discount code, shown with a copy button
 *     expires_at?: number,        // unix ms: live countdown; the offer closes when it passes
 *     products?: [{id, title, price, currency, url, image}],   // similar_products cards
 *     consent_label?: string,     // email_capture: label of the consent checkbox
 *     thanks?: string,            // email_capture: text shown after submitting
 *     theme?: {accent, background, text, radius}   // CSS colours; radius in px
 *   }
 * Everything is rendered with textContent and attributes inside a Shadow DOM; links and
 * images are used only when their URL is http: or https:.
 */
(() => {
  try {
    const W = window, D = document, N = navigator, H = history;
    const G = (f) =>
      function (...a) {
        try {
          return f.apply(this, a);
        } catch (e) {}
      };
    const L = (t, type, f, o) => {
      try {
        t.addEventListener(type, G(f), o || { capture: true, passive: true });
      } catch (e) {}
    };
    const q = (W.exitwidget = Array.isArray(W.exitwidget) ? W.exitwidget : []);
    if (q.exw) return;
    const S =
      D.currentScript && D.currentScript.dataset.site
        ? D.currentScript
        : D.querySelector('script[src*="widget.js"][data-site]');
    if (!S) return;
    q.exw = 1;
    const site = S.dataset.site;
    const O = new URL(S.src, location.href).origin;
    const touch = !!W.matchMedia && matchMedia("(pointer: coarse)").matches;
    const device = touch ? (Math.min(screen.width, screen.height) >= 600 ? "tablet" : "mobile") : "desktop";
    const now = () => performance.now();
    const cut = (x, n) => (x == null ? "" : String(x).slice(0, n));
    const num = (x) => (x == null || x === "" || !(+x >= 0) || !isFinite(x) ? undefined : +x);
    const cur = (x) => (/^[A-Z]{3}$/.test(x) ? x : "");
    const ID = /^[\w-]{8,64}$/;
    const EM = /^[^@\s<>"',;]+@[^@\s<>"',;]+\.[^@\s<>"',;]+$/;

    // --- storage: localStorage shared by tabs, memory when it throws -------------------------
    // store(k) reads, store(k, v) writes, store(k, null) deletes.
    const mem = {};
    const store = (k, v) => {
      try {
        const l = localStorage;
        if (v === undefined) return l.getItem("exw_" + k) ?? mem[k];
        v === null ? l.removeItem("exw_" + k) : l.setItem("exw_" + k, v);
      } catch (e) {
        if (v === undefined) return mem[k];
      }
      mem[k] = v;
    };
    const rid = (n) => {
      let s = "";
      for (const b of crypto.getRandomValues(new Uint8Array(n))) s += (b % 36).toString(36);
      return s;
    };

    // --- state ---------------------------------------------------------------------------------
    const EDEF = { min_dwell_ms: 3000, top_edge_px: 8, min_upward_speed: 0.3, scroll_guard_ms: 600, scroll_up_speed: 2.5, back_button: true, tab_switch: true };
    const HDEF = { product: 20, cart: 25, checkout: 40 };
    let E = EDEF, HES = HDEF;
    let on = 0, ws = null, ready = 0, visitor = "", session = "", seq = 0, Q = [];
    let fails = 0, att = 0, rt, hb, pt, tok = 30, tt = 0, busy = 0;
    const sc = store("c");
    const attr = S.dataset.consent;
    let consent = sc
      ? { analytics: sc[0] == "1", marketing: sc[1] == "1" }
      : { analytics: attr != "required", marketing: attr == "granted" };
    const pre = rid(6);
    const nid = () => pre + "." + (++seq).toString(36);
    const PT = "home category product search cart checkout payment thank_you other".split(" ");
    const GA = { view_item: "product", view_cart: "cart", begin_checkout: "checkout", purchase: "thank_you" };
    let gaPT = "", url = location.href, ref = D.referrer;
    const ptype = () => {
      const b = D.body && D.body.dataset.pageType;
      return PT.includes(b) ? b : gaPT || "other";
    };
    const page = () => ({ url: cut(location.href, 2048), title: cut(D.title, 300), referrer: cut(ref, 2048), page_type: ptype() });

    // --- sending: a bounded queue of unacked messages, paced under the server's rate limit ----
    const raw = (m) => {
      try {
        ws.send(JSON.stringify(m));
      } catch (e) {}
    };
    const pump = () => {
      clearTimeout(pt);
      const n = Date.now();
      tok = Math.min(30, tok + Math.max(0, n - tt) * 0.015);
      tt = n;
      for (const e of Q) {
        if (!ready || tok < 1) break;
        if (!e.s) {
          e.s = 1;
          tok--;
          raw(e.m);
        }
      }
      if (ready && Q.some((e) => !e.s)) pt = setTimeout(G(pump), 100);
    };
    const send = (m) => {
      if (!on) return;
      m.id = nid();
      Q.push({ m });
      if (Q.length > 100) Q.shift();
      pump();
    };
    const ev = (name, f) => send({ type: "event", name, ...f });
    const ack = (ids) => {
      if (Array.isArray(ids)) Q = Q.filter((e) => !ids.includes(e.m.id));
    };
    const adopt = (s) => {
      if (on && typeof s == "string" && ID.test(s)) store("s", (session = s));
    };
    const flush = (hide) => {
      if (!on || !Q.length) return;
      const u = O + "/v1/events?site=" + encodeURIComponent(site);
      const b = JSON.stringify({ site, visitor, session: session || undefined, page: page(), consent, device, messages: Q.map((e) => e.m) });
      if (hide) {
        try {
          if (N.sendBeacon(u, b)) Q = [];
        } catch (e) {}
      } else if (!busy) {
        // Reads the acks and the session back, so nothing is lost while the socket is down.
        busy = 1;
        fetch(u, { method: "POST", body: b, keepalive: true, credentials: "omit" })
          .then((r) => r.json())
          .then(G((j) => (adopt(j.session), ack(j.acks))))
          .catch(() => {})
          .finally(() => (busy = 0));
      }
    };
    const retry = () => {
      clearTimeout(rt);
      if (on) rt = setTimeout(G(connect), Math.random() * Math.min(30000, 500 * 2 ** att++));
    };
    const connect = () => {
      if (!on || ws) return;
      let w;
      try {
        w = ws = new WebSocket(O.replace(/^http/, "ws") + "/v1/ws?site=" + encodeURIComponent(site));
      } catch (e) {
        ws = null;
        return retry();
      }
      w.onopen = G(() => raw({ id: nid(), type: "hello", v: 1, site, visitor, session: session || undefined, page: page(), consent, device }));
      w.onmessage = G((e) => ws == w && recv(JSON.parse(e.data)));
      w.onclose = G(() => {
        if (ws != w) return;
        ws = null;
        clearInterval(hb);
        if (!ready && ++fails >= 3) flush();
        ready = 0;
        retry();
      });
    };
    const recv = (m) => {
      const t = m.type;
      if (t == "welcome") {
        adopt(m.session);
        const c = m.config || {};
        E = { ...EDEF, ...c.exit_intent };
        HES = { ...HDEF, ...c.hesitation };
        if (!ready) {
          ready = 1;
          fails = att = 0;
          for (const e of Q) e.s = 0;
          clearInterval(hb);
          hb = setInterval(G(() => ready && raw({ id: nid(), type: "ping" })), (c.heartbeat_s || 25) * 1000);
          pump();
        }
      } else if (t == "ack") ack(m.ids);
      else if (t == "error" && m.id) {
        const e = Q.find((x) => x.m.id == m.id);
        if (e && /^(unavailable|rate_limited)$/.test(m.code)) {
          e.s = 0;
          pt = setTimeout(G(pump), 1000);
        } else ack([m.id]);
      } else if (t == "arm") (armed = okOffer(m.offer) ? m.offer : null) && mount();
      else if (t == "offer") show(m.offer);
      else if (t == "withdraw") withdraw(m.offer);
    };

    // --- consent ---------------------------------------------------------------------------------
    const start = () => {
      if (on) return;
      on = 1;
      visitor = store("v") || "";
      if (!ID.test(visitor)) store("v", (visitor = rid(22)));
      session = store("s") || "";
      if (!ID.test(session)) session = "";
      pv();
      for (const e of dl) G(onDL)(e, 2);
      connect();
    };
    const stop = () => {
      on = ready = 0;
      Q = [];
      armed = null;
      clearTimeout(rt);
      clearTimeout(pt);
      clearInterval(hb);
      const w = ws;
      ws = null;
      if (w) setTimeout(G(() => w.close()), 3000);
      closeUI();
      dropPill();
      for (const k of "vsc") store(k, null);
    };
    const setConsent = (a, m) => {
      m = !!m;
      if (!a) {
        consent = { analytics: false, marketing: false };
        if (!on) return;
        const msg = { id: nid(), type: "consent", analytics: false };
        if (ready) raw(msg);
        else (Q = [{ m: msg }]), flush(1);
        stop();
        store("c", "00");
        return;
      }
      const changed = !consent.analytics || consent.marketing != m;
      consent = { analytics: true, marketing: m };
      if (!on) start();
      else if (changed) send({ type: "consent", analytics: true, marketing: m });
      store("c", "1" + +m);
    };
    const cmode = (cmd, p) => {
      const a = p.analytics_storage, m = p.ad_storage ? p.ad_storage == "granted" : consent.marketing;
      if (a == "denied") cmd == "update" && setConsent(0);
      else if (a == "granted" || (on && cmd == "update")) setConsent(1, m);
    };

    // --- dataLayer (GA4 ecommerce, Consent Mode v2) ----------------------------------------------
    const item = (i) => ({
      id: cut(i.item_id ?? i.id, 128),
      quantity: Math.min(10000, Math.max(1, Math.round(+i.quantity) || 1)),
      price: num(i.price) || 0,
      title: cut(i.item_name ?? i.name, 300),
      category: cut(i.item_category, 300),
      brand: cut(i.item_brand, 300),
    });
    // mode 1: consent and page type only; mode 2: ecommerce only; otherwise both.
    const onDL = (e, mode) => {
      if (!e || typeof e != "object") return;
      let name, ec;
      if (typeof e[0] == "string") {
        if (e[0] == "consent") return mode != 2 && cmode(e[1], e[2] || {});
        if (e[0] != "event") return;
        (name = e[1]), (ec = e[2]);
      } else (name = e.event), (ec = e.ecommerce);
      if (typeof name != "string") return;
      if (GA[name]) gaPT = GA[name];
      if (mode == 1) return;
      ec = ec || {};
      const src = (Array.isArray(ec.items) ? ec.items.slice(0, 100) : []).filter((i) => i && typeof i == "object" && (i.item_id ?? i.id) != null);
      const items = src.map(item);
      if (name == "view_item" && src[0]) {
        const { quantity, ...p } = items[0];
        p.price = num(src[0].price);
        p.currency = cur(src[0].currency || ec.currency);
        ev("product_view", { product: p });
      } else if (name == "add_to_cart") items.forEach((i) => ev("cart_add", { item: i }));
      else if (name == "remove_from_cart")
        items.forEach((i, k) => ev("cart_remove", { item: { id: i.id, quantity: src[k].quantity != null ? i.quantity : undefined } }));
      else if (name == "begin_checkout") ev("checkout_start", {});
      else if (name == "purchase" && ec.transaction_id != null)
        ev("purchase", {
          order_id: cut(ec.transaction_id, 128),
          value: num(ec.value) ?? items.reduce((s, i) => s + i.price * i.quantity, 0),
          currency: cur(ec.currency),
          items,
          coupon: ec.coupon ? cut(ec.coupon, 64) : undefined,
        });
    };

    // --- page views --------------------------------------------------------------------------------
    const pv = () => ev("page_view", page());
    const nav = (force) => {
      const u = location.href;
      if (u != url) (ref = url), (url = u), (gaPT = "");
      else if (!force) return;
      act();
      setTimeout(G(pv), 0);
    };

    // --- signals -----------------------------------------------------------------------------------
    const t0 = now();
    let lastExit = -1e9, trail = [], scrollT = -1e9, enterT = -1e9, dropT = -1e9;
    let lastAct = Date.now(), hesN = 0, sy = scrollY, st = 0, hid = 0, gA = 0, gU = 0;
    const act = () => ((lastAct = Date.now()), (hesN = 0));
    const exit = (kind, dwell) => {
      const n = now();
      if (!on || dlg || n - lastExit < 10000 || (dwell && n - t0 < E.min_dwell_ms)) return;
      lastExit = n;
      const a = armed, ok = okOffer(a) && (!a.kinds || a.kinds.includes(kind)) && !(a.not_before > Date.now());
      const o = ok ? a : null;
      if (o) armed = null;
      if (o) render(o);
      send({ type: "signal", name: "exit_intent", kind });
      if (o) shown(o);
    };
    const guarded = (t) => {
      const a = D.activeElement, tag = a && a.tagName;
      return (
        t - scrollT < E.scroll_guard_ms ||
        t - enterT < 500 ||
        t - dropT < 1000 ||
        tag == "SELECT" ||
        (tag == "INPUT" && a.autocomplete != "off" && !/^(checkbox|radio|button|submit|reset|range|color|file|image)$/.test(a.type))
      );
    };
    const push0 = H.pushState;
    // Not on a tap that navigates: the guard entry would stay behind the next page.
    const guard = (e) => {
      if (!touch || !on || !E.back_button || gA || gU || (e.target.closest && e.target.closest("a[href],form button,[type=submit]"))) return;
      const s = H.state;
      push0.call(H, s && typeof s == "object" ? { ...s, exw: 1 } : { exw: 1 }, "", location.href);
      gA = 1;
    };

    // --- overlay -------------------------------------------------------------------------------------
    const STYLE =
      "*{box-sizing:border-box;margin:0;font:inherit;color:inherit}" +
      ".w{--ac:#c62828;--bg:#fff;--tx:#1d1d1f;--r:14px;font:15px/1.45 system-ui,sans-serif;color:var(--tx)}" +
      ".b{position:fixed;inset:0;background:#0008}" +
      ".d{position:fixed;left:50%;top:50%;transform:translate(-50%,-50%);width:min(92vw,440px);max-height:92vh;overflow:auto;background:var(--bg);border-radius:var(--r);padding:28px 24px 24px;box-shadow:0 12px 48px #0006;animation:i .2s ease-out}" +
      "@keyframes i{from{transform:translate(-50%,-46%)}}" +
      "@media (prefers-reduced-motion:reduce){.d{animation:none}}" +
      "h2{font-size:1.4em;font-weight:700;line-height:1.2;margin:0 32px 8px 0}" +
      "p{margin-bottom:12px}" +
      ".x{position:absolute;top:10px;right:10px;width:36px;height:36px;border:0;border-radius:50%;background:none;font-size:24px;cursor:pointer}" +
      ".c{display:block;width:100%;margin-top:12px;padding:12px;border:0;border-radius:8px;background:var(--ac);color:#fff;font-weight:600;text-align:center;text-decoration:none;cursor:pointer}" +
      ".k{display:flex;gap:8px;margin:14px 0 8px}" +
      ".k input{flex:1;min-width:0;padding:8px;border:2px dashed var(--ac);border-radius:8px;background:none;font:700 1.2em monospace;letter-spacing:.08em;text-align:center}" +
      ".k button,.f [type=email]{padding:8px 14px;border:1px solid #0004;border-radius:8px;background:none;cursor:pointer}" +
      ".t{font-size:.9em;opacity:.8}" +
      ".g{display:grid;grid-template-columns:repeat(auto-fill,minmax(118px,1fr));gap:12px;margin:14px 0 4px}" +
      ".g>*{display:flex;flex-direction:column;gap:4px;text-decoration:none;font-size:.88em}" +
      ".g img{width:100%;aspect-ratio:1;object-fit:cover;border-radius:8px;background:#eee}" +
      ".f{display:grid;gap:10px;margin-top:12px}.f label{display:flex;gap:8px;font-size:.88em}" +
      ".p{position:fixed;right:16px;bottom:16px;display:flex;border-radius:99px;background:var(--ac);color:#fff;box-shadow:0 4px 18px #0005}" +
      ".p button{padding:10px 14px;border:0;background:none;color:#fff;font-weight:600;cursor:pointer}" +
      ":focus-visible{outline:3px solid var(--ac);outline-offset:2px}";
    let host, sh, dlg, cur0, pill, prev, shownAt, cdT, armed = null;
    const seen = {};
    const okOffer = (o) => !!o && typeof o == "object" && /^[\w.:-]{1,64}$/.test(o.id) && !(o.expires_at < Date.now());
    const el = (tag, cls, text, parent) => {
      const e = D.createElement(tag);
      if (cls) e.className = cls;
      if (text != null) e.textContent = text;
      if (parent) parent.append(e);
      return e;
    };
    const safe = (u) => {
      try {
        const x = typeof u == "string" && u ? new URL(u, location.href) : null;
        return x && /^https?:$/.test(x.protocol) ? x.href : "";
      } catch (e) {
        return "";
      }
    };
    const attrs = (e, a) => {
      for (const k in a) e.setAttribute(k, a[k]);
      return e;
    };
    const money = (v, c) => {
      try {
        return new Intl.NumberFormat(D.documentElement.lang || undefined, { style: "currency", currency: c }).format(v);
      } catch (e) {
        return v.toFixed(2) + (c ? " " + c : "");
      }
    };
    const mount = () => {
      if (host && host.isConnected) return;
      host = D.createElement("exit-widget");
      host.style.cssText =
        "all:initial!important;display:block!important;position:fixed!important;top:0!important;left:0!important;width:0!important;height:0!important;z-index:2147483647!important";
      sh = host.attachShadow({ mode: "open" });
      try {
        const s = new CSSStyleSheet();
        s.replaceSync(STYLE);
        sh.adoptedStyleSheets = [s];
      } catch (e) {
        el("style", 0, STYLE, sh);
      }
      D.documentElement.append(host);
    };
    const wrap = (o) => {
      mount();
      const w = el("div", "w", null, sh), th = o.theme || {};
      for (const [v, k] of [["--ac", "accent"], ["--bg", "background"], ["--tx", "text"]])
        if (typeof th[k] == "string" && CSS.supports("color", th[k])) w.style.setProperty(v, th[k]);
      if (num(th.radius) <= 40) w.style.setProperty("--r", +th.radius + "px");
      return w;
    };
    const report = (action) => cur0 && send({ type: "offer_clicked", offer: cur0.id, action });
    const shown = (o) => {
      if (!seen[o.id]) (seen[o.id] = 1), send({ type: "offer_shown", offer: o.id });
    };
    const focusables = () => [...dlg.querySelectorAll("a[href],button,input")].filter((x) => !x.disabled);
    const closeUI = () => {
      clearInterval(cdT);
      if (!dlg) return;
      dlg.parentNode.remove();
      dlg = null;
      try {
        if (prev && prev.isConnected) prev.focus({ preventScroll: true });
      } catch (e) {}
    };
    const dropPill = () => pill && (pill.remove(), (pill = null));
    const dismiss = (how) => {
      if (!dlg) return;
      const o = cur0;
      send({ type: "offer_dismissed", offer: o.id, how, visible_ms: Math.round(Math.min(Math.max(0, now() - shownAt), 864e5)) });
      closeUI();
      if (how != "timeout") teaser(o);
    };
    const teaser = (o) => {
      dropPill();
      pill = wrap(o);
      const p = el("div", "p", null, pill);
      el("button", 0, cut(o.headline, 80), p).onclick = G(() => (dropPill(), okOffer(o) && render(o)));
      attrs(el("button", 0, "\u00d7", p), { "aria-label": "Close" }).onclick = G(dropPill);
    };
    const withdraw = (id) => {
      if (armed && (id == "*" || armed.id == id)) armed = null;
      if (cur0 && (id == "*" || cur0.id == id)) closeUI(), dropPill(), (cur0 = null);
    };
    const show = (o) => {
      if (!okOffer(o)) return;
      // The claimed offer for the armed one already on screen: show it again with its code.
      if (dlg && cur0 && cur0.id == o.id) return closeUI(), render(o);
      if (dlg) return;
      if (armed && armed.id == o.id) armed = null;
      render(o);
      shown(o);
    };
    const render = (o) => {
      dropPill();
      cur0 = o;
      if (D.activeElement != host) prev = D.activeElement;
      shownAt = now();
      const w = wrap(o), cta = o.cta || {};
      el("div", "b", null, w).onclick = G(() => dismiss("backdrop"));
      dlg = attrs(el("div", "d", null, w), { role: "dialog", "aria-modal": "true", "aria-labelledby": "exw-h", tabindex: "-1" });
      attrs(el("button", "x", "\u00d7", dlg), { "aria-label": "Close", type: "button" }).onclick = G(() => dismiss("close_button"));
      el("h2", 0, cut(o.headline, 300), dlg).id = "exw-h";
      if (o.body) el("p", 0, cut(o.body, 1000), dlg);
      if (o.kind == "discount" && o.code) {
        const k = el("div", "k", null, dlg), i = attrs(el("input", 0, null, k), { readonly: "", "aria-label": "Discount code" });
        i.value = cut(o.code, 64);
        const b = attrs(el("button", 0, "Copy", k), { type: "button" });
        b.onclick = G(() => {
          report("code_copy");
          const ok = G(() => (b.textContent = "Copied"));
          const fb = G(() => {
            i.select();
            try {
              D.execCommand("copy");
            } catch (e) {}
            ok();
          });
          try {
            N.clipboard.writeText(i.value).then(ok, fb);
          } catch (e) {
            fb();
          }
        });
      }
      if (o.kind == "similar_products" && Array.isArray(o.products)) {
        const g = el("div", "g", null, dlg);
        for (const p of o.products.slice(0, 6)) {
          if (!p || typeof p != "object") continue;
          const u = safe(p.url), c = el(u ? "a" : "div", 0, null, g), im = safe(p.image);
          if (u) (c.href = u), (c.onclick = G(() => report("product")));
          if (im) attrs(el("img", 0, null, c), { src: im, alt: "", loading: "lazy", decoding: "async" });
          el("span", 0, cut(p.title, 120), c);
          if (num(p.price) != null) el("b", 0, money(+p.price, cur(p.currency)), c);
        }
      }
      if (o.kind == "email_capture") {
        const f = el("form", "f", null, dlg);
        const i = attrs(el("input", 0, null, f), { type: "email", required: "", autocomplete: "email", maxlength: "254", "aria-label": "Email", placeholder: "you@example.com" });
        const lb = el("label", 0, null, f), c = attrs(el("input", 0, null, lb), { type: "checkbox" });
        lb.append(cut(o.consent_label || "Email me offers. I can unsubscribe at any time.", 300));
        attrs(el("button", "c", cut(cta.label || "Subscribe", 80), f), { type: "submit" });
        f.onsubmit = (e) => {
          e.preventDefault();
          G(() => {
            const v = i.value.trim();
            if (!EM.test(v)) return i.focus();
            ev("identify", { email: v, consent: c.checked, source: "widget" });
            report("email_submit");
            f.replaceWith(el("p", 0, cut(o.thanks || "Thank you!", 300)));
            focusables()[0].focus();
          })();
        };
      } else if (cta.label) {
        const u = safe(cta.url), c = el(u ? "a" : "button", "c", cut(cta.label, 80), dlg);
        if (u) c.href = u;
        c.onclick = G(() => (report("cta"), u || closeUI()));
      }
      if (o.expires_at) {
        const t = attrs(el("p", "t", null, dlg), { role: "timer", "aria-live": "off" });
        const tick = () => {
          const s = Math.ceil((o.expires_at - Date.now()) / 1000);
          if (s <= 0) return dismiss("timeout");
          const p2 = (x) => String(x).padStart(2, "0");
          t.textContent = "Ends in " + (s >= 3600 ? ((s / 3600) | 0) + ":" : "") + p2(((s / 60) | 0) % 60) + ":" + p2(s % 60);
        };
        clearInterval(cdT);
        cdT = setInterval(G(tick), 1000);
        tick();
      }
      dlg.onkeydown = G((e) => {
        if (e.key == "Escape") e.preventDefault(), dismiss("escape");
        else if (e.key == "Tab") {
          const f = focusables(), n = f.length - 1, i = f.indexOf(sh.activeElement);
          if (e.shiftKey ? i <= 0 : i < 0 || i >= n) e.preventDefault(), f[e.shiftKey ? n : 0].focus();
        }
      });
      // Not in a preview: the admin page around it keeps the keyboard focus.
      if (dlg && S.dataset.preview == null) {
        const f = focusables();
        (f[1] || f[0]).focus({ preventScroll: true });
      }
    };

    // --- command queue ---------------------------------------------------------------------------
    // Event name -> the field it cannot do without (the server validates everything else).
    const EVENTS = { product_view: "product", cart_add: "item", cart_remove: "item", cart_update: "items", checkout_start: "", purchase: "order_id" };
    const cmd = (a) => {
      if (!a || typeof a[0] != "string") return;
      const [c, x, y] = a;
      if (c == "consent" && x) setConsent(!!x.analytics, x.marketing);
      else if (c == "page") nav(1);
      else if (c == "identify" && x && typeof x.email == "string" && x.email.length <= 254 && EM.test(x.email))
        ev("identify", { email: x.email, consent: x.consent === true });
      else if (c == "track" && typeof EVENTS[x] == "string" && y && typeof y == "object" && (!EVENTS[x] || y[EVENTS[x]] != null)) {
        const { id, type, name, ...f } = y;
        ev(x, f);
      }
    };

    // --- start-up --------------------------------------------------------------------------------
    let dl;
    const init = () => {
      // Preview (the admin's campaign preview, same origin as the server only): render the offer
      // object of <script type="application/json" id="exw-preview"> at once; never connect.
      if (S.dataset.preview != null) return O == location.origin && render(JSON.parse(D.getElementById("exw-preview").textContent));
      dl = W.dataLayer = W.dataLayer || [];
      for (const e of dl) G(onDL)(e, 1);
      if (consent.analytics) start();
      const old = q.splice(0);
      q.push = (...a) => (a.forEach(G(cmd)), 0);
      old.forEach(G(cmd));
      const push1 = dl.push;
      dl.push = function (...a) {
        const r = push1.apply(this, a);
        for (const e of a) G(onDL)(e);
        return r;
      };
      for (const k of ["pushState", "replaceState"]) {
        const f = H[k];
        H[k] = function (...a) {
          const r = f.apply(this, a);
          if (k == "pushState") gA = 0;
          G(nav)();
          return r;
        };
      }
      L(W, "popstate", (e) => {
        const g = e.state && e.state.exw;
        if (gA && !g) (gA = 0), (gU = 1), exit("back_button");
        else if (g && !gU) gA = 1;
        nav();
      });
      L(D, "pointermove", (e) => {
        act();
        if (e.pointerType != "mouse") return;
        trail.push({ y: e.clientY, t: e.timeStamp });
        if (trail.length > 5) trail.shift();
      });
      L(D, "mouseover", (e) => e.relatedTarget || (enterT = e.timeStamp));
      L(D, "mouseout", (e) => {
        const t = e.timeStamp;
        if (e.relatedTarget || e.clientY > E.top_edge_px || guarded(t)) return;
        const s = trail.find((p) => t - p.t < 400);
        if (s && (s.y - e.clientY) / Math.max(t - s.t, 1) >= E.min_upward_speed) exit("top_edge", 1);
      });
      L(D, "pointerdown", (e) => (act(), e.target.tagName == "SELECT" && (dropT = e.timeStamp)));
      L(D, "change", (e) => e.target.tagName == "SELECT" && (dropT = e.timeStamp));
      for (const k of ["pointerup", "touchend", "click"]) L(D, k, guard);
      L(D, "keydown", (e) => {
        act();
        guard(e);
        const k = e.key;
        if (((e.ctrlKey || e.metaKey) && /^[wl]$/i.test(k)) || (e.altKey && k == "ArrowLeft")) exit("keyboard");
      });
      L(W, "scroll", (e) => {
        const t = e.timeStamp, y = scrollY;
        scrollT = t;
        act();
        if (e.target != D) return;
        if (touch && y > 200 && (sy - y) / Math.max(t - st, 1) >= E.scroll_up_speed) exit("scroll_up", 1);
        (sy = y), (st = t);
      });
      L(D, "visibilitychange", () => {
        if (D.visibilityState == "hidden") (hid = 1), flush(1);
        else if (hid) (hid = 0), touch && E.tab_switch && exit("tab_switch");
      });
      L(W, "pagehide", () => flush(1));
      L(D, "focusin", (e) => dlg && e.target != host && focusables()[0].focus());
      setInterval(
        G(() => {
          const p = ptype(), T = HES[p], s = (Date.now() - lastAct) / 1000;
          if (on && T > 0 && D.visibilityState != "hidden" && s >= T * (hesN + 1))
            hesN++, send({ type: "signal", name: "hesitation", seconds: Math.round(s), page_type: p });
        }),
        1000
      );
    };
    if (D.readyState == "loading") L(D, "DOMContentLoaded", init, { once: true });
    else G(init)();
  } catch (e) {}
})();
