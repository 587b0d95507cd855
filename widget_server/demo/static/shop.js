/* Demo shop behaviour: the cart lives in localStorage and every step of the funnel is pushed to
 * window.dataLayer as a GA4 ecommerce event, the way tag-managed shops do it. */
(() => {
  "use strict";

  const CART_KEY = "demo-shop:cart";
  const COUPON_KEY = "demo-shop:coupon";
  const DISCOUNT_KEY = "demo-shop:discount"; // what the code applied from the widget gives
  const CURRENCY = document.body.dataset.currency || "EUR";
  const MAX_QUANTITY = 10;
  const REDIRECT_DELAY_MS = 300;
  const PRODUCT_ID = /^[A-Za-z0-9_-]{1,40}$/;
  const moneyFormat = new Intl.NumberFormat("en-IE", { style: "currency", currency: CURRENCY });

  let unsavedCart = null;

  /* ---------- storage ---------- */

  function load(storageName, key, fallback) {
    try {
      const raw = window[storageName].getItem(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  }

  function save(storageName, key, value) {
    try {
      window[storageName].setItem(key, JSON.stringify(value));
      return true;
    } catch {
      return false;
    }
  }

  function forget(storageName, key) {
    try {
      window[storageName].removeItem(key);
    } catch {
      /* storage unavailable: nothing to forget */
    }
  }

  function isCartLine(line) {
    return (
      typeof line === "object" &&
      line !== null &&
      typeof line.id === "string" &&
      PRODUCT_ID.test(line.id) &&
      typeof line.name === "string" &&
      Number.isFinite(line.price) &&
      line.price >= 0 &&
      Number.isInteger(line.quantity) &&
      line.quantity >= 1 &&
      line.quantity <= MAX_QUANTITY
    );
  }

  function readCart() {
    const stored = unsavedCart ?? load("localStorage", CART_KEY, []);
    return Array.isArray(stored) ? stored.filter(isCartLine) : [];
  }

  function writeCart(lines) {
    unsavedCart = save("localStorage", CART_KEY, lines) ? null : lines;
    renderCartCount(lines);
  }

  /* ---------- helpers ---------- */

  const roundMoney = (amount) => Math.round(amount * 100) / 100;
  const formatMoney = (amount) => moneyFormat.format(amount);
  const lineKey = (line) => `${line.id}|${line.option || ""}`;
  const cartValue = (lines) =>
    roundMoney(lines.reduce((sum, line) => sum + line.price * line.quantity, 0));

  function safePath(value, prefix) {
    return typeof value === "string" && value.startsWith(prefix) && !value.includes("..")
      ? value
      : "/demo/";
  }

  function describeOption(line) {
    if (!line.option) return "";
    return typeof line.optionLabel === "string" && line.optionLabel
      ? `${line.optionLabel}: ${line.option}`
      : line.option;
  }

  function readJson(elementId) {
    const element = document.getElementById(elementId);
    if (!element) return null;
    try {
      return JSON.parse(element.textContent || "null");
    } catch {
      return null;
    }
  }

  function gaItem(line, quantity = line.quantity) {
    return {
      item_id: line.id,
      item_name: line.name,
      item_brand: line.brand || "",
      item_category: line.category || "",
      price: line.price,
      quantity,
    };
  }

  function track(event, ecommerce) {
    const dataLayer = (window.dataLayer = window.dataLayer || []);
    dataLayer.push({ ecommerce: null });
    dataLayer.push({ event, ecommerce });
  }

  function newTransactionId() {
    const random = new Uint32Array(1);
    window.crypto.getRandomValues(random);
    const suffix = random[0].toString(36).toUpperCase().padStart(7, "0");
    return `T${Date.now().toString(36).toUpperCase()}-${suffix}`;
  }

  /* ---------- cart ---------- */

  function renderCartCount(lines = readCart()) {
    const count = lines.reduce((sum, line) => sum + line.quantity, 0);
    for (const element of document.querySelectorAll("[data-cart-count]")) {
      element.textContent = String(count);
    }
  }

  function addToCart(line, quantity) {
    const lines = readCart();
    let existing = lines.find((candidate) => lineKey(candidate) === lineKey(line));
    if (!existing) {
      existing = { ...line, quantity: 0 };
      lines.push(existing);
    }
    const added = Math.min(quantity, MAX_QUANTITY - existing.quantity);
    if (added <= 0) return 0;
    existing.quantity += added;
    writeCart(lines);
    track("add_to_cart", {
      currency: CURRENCY,
      value: roundMoney(line.price * added),
      items: [gaItem(existing, added)],
    });
    return added;
  }

  function changeQuantity(key, action) {
    const lines = readCart();
    const line = lines.find((candidate) => lineKey(candidate) === key);
    if (!line) return;
    const wanted = { increase: line.quantity + 1, decrease: line.quantity - 1, remove: 0 }[action];
    const quantity = Math.max(0, Math.min(MAX_QUANTITY, wanted ?? line.quantity));
    const delta = quantity - line.quantity;
    if (delta === 0) return;
    const event = delta > 0 ? "add_to_cart" : "remove_from_cart";
    const moved = Math.abs(delta);
    track(event, {
      currency: CURRENCY,
      value: roundMoney(line.price * moved),
      items: [gaItem(line, moved)],
    });
    line.quantity = quantity;
    writeCart(lines.filter((candidate) => candidate.quantity > 0));
  }

  function setHidden(selector, hidden) {
    for (const element of document.querySelectorAll(selector)) element.hidden = hidden;
  }

  function cartLineElement(template, line) {
    const element = template.content.firstElementChild.cloneNode(true);
    element.dataset.lineKey = lineKey(line);
    const link = element.querySelector(".cart-line__name");
    link.textContent = line.name;
    link.href = safePath(line.link, "/demo/p/");
    element.querySelector(".cart-line__image").src = safePath(line.image, "/demo/img/");
    element.querySelector(".cart-line__option").textContent = describeOption(line);
    element.querySelector(".cart-line__price").textContent = formatMoney(line.price * line.quantity);
    element.querySelector(".cart-line__count").textContent = String(line.quantity);
    return element;
  }

  /* ---------- codes applied from the widget ---------- */

  // The site applies codes through the shop's script (admin: "Applying codes"): the widget
  // hands over the code the visitor took and what it gives; the cart and checkout show it.
  function appliedDiscount(lines) {
    const code = load("sessionStorage", COUPON_KEY, "");
    const discount = load("sessionStorage", DISCOUNT_KEY, null);
    if (typeof code !== "string" || !code || !discount || typeof discount !== "object") {
      return null;
    }
    const subtotal = cartValue(lines);
    let amount = 0;
    if (discount.type === "percent") amount = roundMoney((subtotal * discount.amount) / 100);
    else if (discount.type === "fixed") amount = Math.min(subtotal, Number(discount.amount) || 0);
    const label = discount.type === "free_shipping" ? "free shipping" : `−${formatMoney(amount)}`;
    return { code, amount, label, total: roundMoney(subtotal - amount) };
  }

  function renderDiscount(lines, totalSelector) {
    const applied = lines.length ? appliedDiscount(lines) : null;
    for (const element of document.querySelectorAll("[data-discount]")) {
      element.hidden = !applied;
    }
    if (!applied) return null;
    for (const element of document.querySelectorAll("[data-discount-code]")) {
      element.textContent = applied.code;
    }
    for (const element of document.querySelectorAll("[data-discount-amount]")) {
      element.textContent = applied.label;
    }
    const total = document.querySelector(totalSelector);
    if (total) total.textContent = formatMoney(applied.total);
    return applied;
  }

  function applyCode(detail) {
    if (!detail || typeof detail.code !== "string" || !/^[\w-]{1,40}$/.test(detail.code)) return;
    save("sessionStorage", COUPON_KEY, detail.code);
    save("sessionStorage", DISCOUNT_KEY, detail.discount || null);
    const page = document.body.dataset.pageType;
    if (page === "cart") renderCartPage();
    if (page === "checkout" || page === "payment") renderSummary();
    const field = document.getElementById("coupon");
    if (field) field.value = detail.code;
  }

  (window.exitwidget = window.exitwidget || []).push(["on", "code", applyCode]);

  function renderCartPage() {
    const lines = readCart();
    const list = document.querySelector("[data-cart-lines]");
    const template = document.getElementById("cart-line-template");
    if (!list || !template) return;
    list.replaceChildren(...lines.map((line) => cartLineElement(template, line)));
    setHidden("[data-cart-empty]", lines.length > 0);
    setHidden("[data-cart-summary]", lines.length === 0);
    const subtotal = document.querySelector("[data-cart-subtotal]");
    if (subtotal) subtotal.textContent = formatMoney(cartValue(lines));
    renderDiscount(lines, "[data-cart-total]");
  }

  function renderSummary() {
    const lines = readCart();
    const list = document.querySelector("[data-summary-lines]");
    const template = document.getElementById("summary-line-template");
    if (list && template) {
      list.replaceChildren(
        ...lines.map((line) => {
          const element = template.content.firstElementChild.cloneNode(true);
          const option = line.option ? ` (${line.option})` : "";
          element.querySelector(".summary-line__name").textContent =
            `${line.quantity} × ${line.name}${option}`;
          element.querySelector(".summary-line__price").textContent = formatMoney(
            line.price * line.quantity,
          );
          return element;
        }),
      );
    }
    setHidden("[data-cart-empty]", lines.length > 0);
    const total = document.querySelector("[data-summary-total]");
    if (total) total.textContent = formatMoney(cartValue(lines));
    renderDiscount(lines, "[data-summary-total]");
    for (const button of document.querySelectorAll("[data-submit-order]")) {
      button.disabled = lines.length === 0;
    }
    return lines;
  }

  /* ---------- pages ---------- */

  function initProductPage() {
    const product = readJson("product-data");
    if (!product || !PRODUCT_ID.test(String(product.item_id))) return;
    const line = {
      id: product.item_id,
      name: product.item_name,
      brand: product.item_brand,
      category: product.item_category,
      price: product.price,
      link: product.link,
      image: product.image_link,
      option: "",
    };
    track("view_item", {
      currency: product.currency || CURRENCY,
      value: roundMoney(product.price),
      items: [gaItem(line, 1)],
    });
    const form = document.getElementById("add-to-cart-form");
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!product.available) return;
      const option = form.elements.namedItem("option");
      const optionLabel = option?.labels?.[0]?.textContent.trim() || "";
      const quantity = Number.parseInt(form.elements.namedItem("quantity")?.value || "1", 10);
      const chosen = { ...line, option: option ? option.value : "", optionLabel };
      const added = addToCart(chosen, quantity || 1);
      const status = form.querySelector("[data-cart-status]");
      if (status) {
        status.textContent = added
          ? `Added to cart: ${added} × ${line.name}`
          : `You already have the maximum of ${MAX_QUANTITY} in your cart.`;
      }
    });
  }

  function initCategoryPage() {
    const list = readJson("list-data");
    if (!list || !Array.isArray(list.items)) return;
    track("view_item_list", {
      item_list_id: list.item_list_id,
      item_list_name: list.item_list_name,
      items: list.items,
    });
  }

  function initCartPage() {
    renderCartPage();
    const list = document.querySelector("[data-cart-lines]");
    list?.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      const line = button?.closest("[data-line-key]");
      if (!button || !line) return;
      changeQuantity(line.dataset.lineKey, button.dataset.action);
      renderCartPage();
    });
  }

  function couponFrom(form) {
    const field = form.elements.namedItem("coupon");
    return field ? field.value.trim().slice(0, 40) : "";
  }

  function placeOrder(form, coupon) {
    const lines = readCart();
    if (lines.length === 0) return;
    for (const button of form.querySelectorAll("[data-submit-order]")) button.disabled = true;
    const transactionId = newTransactionId();
    const applied = appliedDiscount(lines);
    track("purchase", {
      transaction_id: transactionId,
      value: applied && applied.code === coupon ? applied.total : cartValue(lines),
      currency: CURRENCY,
      coupon,
      items: lines.map((line) => gaItem(line)),
    });
    writeCart([]);
    forget("sessionStorage", COUPON_KEY);
    forget("sessionStorage", DISCOUNT_KEY);
    const target = `/demo/thank-you?order=${encodeURIComponent(transactionId)}`;
    window.setTimeout(() => window.location.assign(target), REDIRECT_DELAY_MS);
  }

  function initCheckoutPage() {
    const lines = renderSummary();
    const savedCoupon = load("sessionStorage", COUPON_KEY, "");
    const couponField = document.getElementById("coupon");
    if (couponField && typeof savedCoupon === "string") couponField.value = savedCoupon;
    if (lines.length > 0) {
      track("begin_checkout", {
        currency: CURRENCY,
        value: cartValue(lines),
        items: lines.map((line) => gaItem(line)),
      });
    }
    const form = document.getElementById("checkout-form");
    if (!form) return;
    const submit = form.querySelector("[data-submit-order]");
    const paysByCard = () => form.elements.namedItem("payment")?.value === "card";
    form.addEventListener("change", () => {
      if (submit) submit.textContent = paysByCard() ? "Continue to payment" : "Place order";
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!paysByCard()) {
        placeOrder(form, couponFrom(form));
        return;
      }
      save("sessionStorage", COUPON_KEY, couponFrom(form));
      window.location.assign("/demo/checkout?step=payment");
    });
  }

  function initPaymentPage() {
    renderSummary();
    const form = document.getElementById("payment-form");
    if (!form) return;
    const coupon = form.elements.namedItem("coupon");
    const saved = load("sessionStorage", COUPON_KEY, "");
    if (coupon && typeof saved === "string") coupon.value = saved;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      placeOrder(form, couponFrom(form));
    });
  }

  const pageInitialisers = new Map([
    ["product", initProductPage],
    ["category", initCategoryPage],
    ["cart", initCartPage],
    ["checkout", initCheckoutPage],
    ["payment", initPaymentPage],
  ]);

  renderCartCount();
  pageInitialisers.get(document.body.dataset.pageType)?.();

  window.addEventListener("storage", (event) => {
    if (event.key !== CART_KEY) return;
    renderCartCount();
    if (document.body.dataset.pageType === "cart") renderCartPage();
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) renderCartCount();
  });
})();
