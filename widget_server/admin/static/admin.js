/* The admin's small enhancements. Every page works without them:
 * - buttons with data-copy="ID" copy the text of element ID;
 * - in the campaign editor, the "add" and "remove" buttons (which otherwise submit the form and
 *   let the server add or remove a row) change the form in place;
 * - a form with data-live-preview refreshes its preview frame a moment after each change;
 * - a targeting condition's value field suggests the values of the field chosen beside it;
 * - the campaign editor's "Who sees it" sentence follows the fields as they are typed;
 * - the campaign editor's preview follows the variant being edited, and its sections fold.
 */
(() => {
  "use strict";

  // --- copy buttons ---------------------------------------------------------------------------
  const copyText = (text) => {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  };

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const label = button.textContent;
    copyText(source.textContent).then(
      () => (button.textContent = "Copied"),
      () => (button.textContent = "Select and copy by hand")
    );
    setTimeout(() => (button.textContent = label), 2000);
  });

  // --- repeatable rows in the campaign editor -------------------------------------------------
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const ATTRIBUTES = ["name", "id", "for", "data-path", "data-list", "aria-describedby", "value", "list"];

  // Rename every reference to the item path `from` (a prefix of names, ids and button values).
  const rename = (root, from, to) => {
    const pattern = new RegExp("(^|[-:\\s])" + escape(from) + "(?=\\.|$|\\s)", "g");
    for (const el of [root, ...root.querySelectorAll("*")]) {
      for (const attr of ATTRIBUTES) {
        if (attr === "value" && el.tagName !== "BUTTON") continue;
        const old = el.getAttribute(attr);
        if (old) el.setAttribute(attr, old.replace(pattern, "$1" + to));
      }
    }
  };

  const itemsOf = (list) => [...list.children].filter((c) => c.hasAttribute("data-item"));

  // A clone starts empty: one row per nested list, no values typed, no errors.
  const reset = (item) => {
    for (const list of item.querySelectorAll("[data-list]")) itemsOf(list).slice(1).forEach((r) => r.remove());
    for (const el of item.querySelectorAll(".field-error")) el.remove();
    for (const el of item.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of item.querySelectorAll(".invalid")) el.classList.remove("invalid");
    for (const input of item.querySelectorAll("input")) {
      if (input.type === "checkbox") input.checked = false;
      else if (!["color", "hidden"].includes(input.type) && !/\.(weight|radius|valid_minutes|code_format)$/.test(input.name)) input.value = "";
    }
    for (const select of item.querySelectorAll("select")) {
      if (/\.(field|op)$/.test(select.name)) select.selectedIndex = 0;
    }
  };

  const position = (item) => String(itemsOf(item.parentElement).indexOf(item) + 1);

  // Numbers in legends and button names follow the order on screen.
  const renumber = () => {
    for (const el of document.querySelectorAll("#campaign-form [data-num]")) {
      const item = el.closest("[data-item]");
      if (item) el.textContent = position(item);
    }
    for (const el of document.querySelectorAll("#campaign-form [data-parent-num]")) {
      const item = el.closest("[data-item]");
      const parent = item && item.parentElement.closest("[data-item]");
      if (parent) el.textContent = position(parent);
    }
  };

  const add = (path) => {
    const list = document.querySelector(`[data-list="${CSS.escape(path)}"]`);
    if (!list) return false;
    const items = itemsOf(list);
    if (!items.length) return false; // nothing to copy: let the server add the first one
    const last = items[items.length - 1];
    const next = Math.max(...items.map((i) => Number(i.dataset.index))) + 1;
    const clone = last.cloneNode(true);
    rename(clone, `${path}.${last.dataset.index}`, `${path}.${next}`);
    clone.dataset.index = String(next);
    reset(clone);
    const key = clone.querySelector('input[name$=".key"]');
    if (path === "variants" && key) key.value = "v" + (next + 1);
    list.append(clone);
    renumber();
    const first = clone.querySelector("input:not([type=hidden]), select, textarea");
    if (first) first.focus();
    return true;
  };

  const remove = (path) => {
    const item = document.querySelector(`[data-path="${CSS.escape(path)}"]`);
    if (!item) return false;
    const list = item.parentElement;
    const siblings = itemsOf(list);
    if (path.startsWith("variants.") && siblings.length < 2) return true; // keep one variant
    const index = siblings.indexOf(item);
    item.remove();
    renumber();
    const rest = itemsOf(list);
    const target = rest[Math.min(index, rest.length - 1)];
    const focusable = target ? target.querySelector("input:not([type=hidden]), select") : null;
    if (focusable) focusable.focus();
    else if (list.parentElement) list.parentElement.querySelector("button")?.focus();
    return true;
  };

  document.addEventListener("click", (event) => {
    const button = event.target.closest('#campaign-form button[name="action"]');
    if (!button) return;
    const [verb, path] = button.value.split(":");
    const done = verb === "add" ? add(path) : verb === "remove" ? remove(path) : false;
    if (done) event.preventDefault();
  });

  // After a failed save, take keyboard and screen-reader users to the list of problems.
  const summary = document.getElementById("error-summary");
  if (summary && summary.hasAttribute("tabindex")) summary.focus();
  // --- live preview of a form (data-live-preview="FRAME"): the form's own "Preview changes"
  // button posts to the frame; typing does it too, a moment after the last key. ---------------
  const livePreview = (form) => {
    // The button and the preview's own choices may stand outside the form (form="…").
    const button = [...form.elements].find((el) => el.id === "preview-button");
    if (!button) return;
    let timer = 0;
    const refresh = () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(() => form.requestSubmit(button), 400);
    };
    form.addEventListener("input", refresh);
    form.addEventListener("change", refresh);
    for (const el of form.elements) if (!form.contains(el) && el !== button) el.addEventListener("change", refresh);
    form.addEventListener("preview", refresh);
    // Pressed by hand (or by the timer): nothing is left pending.
    form.addEventListener("submit", (event) => event.submitter === button && window.clearTimeout(timer));
    // The preview follows the email and the language being edited.
    const choice = form.querySelector("#f-preview-choice");
    form.addEventListener("focusin", (event) => {
      const step = event.target.closest("[data-step]");
      if (!step || !choice) return;
      const words = event.target.closest("[data-locale]");
      const want = `${step.dataset.step}:${words ? words.dataset.locale : choice.value.split(":")[1]}`;
      if (choice.value !== want && [...choice.options].some((o) => o.value === want)) {
        choice.value = want;
        refresh();
      }
    });
    refresh();
  };
  // The campaign editor's preview follows the variants on screen: added, removed or renamed,
  // and the one being edited.
  const variantChoice = document.getElementById("preview-variant");
  const campaignForm = document.getElementById("campaign-form");
  const variantsOnScreen = () => {
    const list = document.querySelector('[data-list="variants"]');
    return list ? itemsOf(list) : [];
  };
  const syncVariants = () => {
    if (!variantChoice) return;
    const chosen = variantChoice.value;
    variantChoice.replaceChildren(
      ...variantsOnScreen().map((item, i) => {
        const key = item.querySelector('input[name$=".key"]');
        const name = `Variant ${i + 1}` + (key && key.value.trim() ? ` (${key.value.trim()})` : "");
        return new Option(name, String(i));
      })
    );
    if ([...variantChoice.options].some((o) => o.value === chosen)) variantChoice.value = chosen;
  };
  if (variantChoice && campaignForm) {
    new MutationObserver(() => {
      syncVariants();
      campaignForm.dispatchEvent(new Event("preview"));
    }).observe(document.querySelector('[data-list="variants"]') || campaignForm, { childList: true });
    campaignForm.addEventListener("input", (event) => {
      if (event.target.name && /^variants\.[0-9]+\.key$/.test(event.target.name)) syncVariants();
    });
    const localeChoice = document.getElementById("preview-locale");
    campaignForm.addEventListener("focusin", (event) => {
      let changed = false;
      const item = event.target.closest('[data-list="variants"] > [data-item]');
      const at = item ? String(variantsOnScreen().indexOf(item)) : null;
      if (at !== null && at !== "-1" && variantChoice.value !== at) {
        variantChoice.value = at;
        changed = true;
      }
      // The words of another language: the preview shows that language; the base words, the
      // site's own.
      const name = event.target.name || "";
      const words = /\.offer\.translations\.([A-Za-z-]+)\./.exec(name);
      const base = /\.offer\.(headline|body|cta_label)$/.test(name);
      const locale = words ? words[1] : base && localeChoice ? localeChoice.options[0]?.value : null;
      if (localeChoice && locale && localeChoice.value !== locale && [...localeChoice.options].some((o) => o.value === locale)) {
        localeChoice.value = locale;
        changed = true;
      }
      if (changed) campaignForm.dispatchEvent(new Event("preview"));
    });
  }
  document.querySelectorAll("form[data-live-preview]").forEach(livePreview);
  // --- the campaign editor's sections fold; those with a problem stay open. -------------------
  const FOLDED = ["f-schedule", "f-experiment", "f-caps"];
  for (const section of document.querySelectorAll("#campaign-form > fieldset")) {
    const legend = section.querySelector(":scope > legend");
    if (!legend) continue;
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "fold";
    toggle.append(...legend.childNodes);
    legend.append(toggle);
    const fold = (folded) => {
      section.classList.toggle("folded", folded);
      toggle.setAttribute("aria-expanded", String(!folded));
    };
    fold(FOLDED.includes(section.id) && !section.querySelector(".field-error, [aria-invalid]"));
    toggle.addEventListener("click", () => fold(!section.classList.contains("folded")));
  }
  // A link to a field (the list of problems) opens its section.
  window.addEventListener("hashchange", () => {
    const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    const section = target && target.closest("#campaign-form > fieldset.folded");
    if (section) section.querySelector(":scope > legend > button.fold").click();
  });
  // --- the targeting value field suggests the values of the field chosen beside it. ----------
  document.addEventListener("change", (event) => {
    const select = event.target;
    if (!(select instanceof HTMLSelectElement) || !select.name.endsWith(".field")) return;
    const input = select.closest(".condition")?.querySelector('input[name$=".value"]');
    if (!input) return;
    const list = document.getElementById(`values-${select.value}`);
    input.setAttribute("list", list ? list.id : "known-values");
  });
  // --- the campaign editor says who sees the campaign, in words, while the marketer types. ----
  const audience = document.getElementById("audience-live");
  const editor = audience && audience.closest("form");
  if (audience && editor) {
    const sentence = document.getElementById("audience-sentence");
    let timer = 0;
    const update = () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(() => {
        fetch(audience.dataset.url, { method: "POST", body: new FormData(editor), credentials: "same-origin" })
          .then((answer) => (answer.ok ? answer.text() : null))
          .then((text) => {
            if (text) sentence.textContent = text;
          })
          .catch(() => {});
      }, 400);
    };
    editor.addEventListener("input", update);
    editor.addEventListener("change", update);
  }

  // An SMS step's text: its encoding and segments as it is typed (the server says the same on
  // every render; placeholders count as long as they get, see widget_server/sms/text.py).
  const GSM = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡" +
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  const GSM_EXT = "^{}\\[~]|€\f";
  const smsSize = (text) => {
    const chars = Array.from(text);
    const gsm = chars.every((c) => GSM.includes(c) || GSM_EXT.includes(c));
    const widths = chars.map((c) => (gsm ? (GSM_EXT.includes(c) ? 2 : 1) : c.length));
    const units = widths.reduce((a, b) => a + b, 0);
    const [single, part] = gsm ? [160, 153] : [70, 67];
    let segments = 1;
    if (units > single) {
      let used = 0;
      for (const w of widths) {
        if (used + w > part) [segments, used] = [segments + 1, 0];
        used += w;
      }
    }
    const per = segments === 1 ? single : part;
    const word = segments === 1 ? "1 segment" : `${segments} segments`;
    return `${gsm ? "GSM-7" : "UCS-2"} · ${word} · ${units} of ${per * segments}`;
  };
  document.addEventListener("input", (event) => {
    const area = event.target;
    if (!(area instanceof HTMLTextAreaElement) || !area.dataset.smsSize) return;
    const out = document.getElementById(area.dataset.smsSize);
    const [shop, link] = (area.dataset.smsSample || "30 70").split(" ").map(Number);
    const text = area.value.replaceAll("{shop}", "S".repeat(shop)).replaceAll("{link}", "h".repeat(link));
    if (out && area.value.trim()) out.textContent = smsSize(text);
  });
})();
