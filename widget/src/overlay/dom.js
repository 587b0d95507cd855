// Building elements. Text always goes in with textContent, never as markup.

/** A new element; `className`, `text` and `parent` are optional (pass 0 or null to skip). */
export const el = (tag, className, text, parent) => {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text != null) element.textContent = text;
  if (parent) parent.append(element);
  return element;
};

export const attrs = (element, attributes) => {
  for (const name in attributes) element.setAttribute(name, attributes[name]);
  return element;
};

/** `url`, absolute, if it is http: or https:; else "" (javascript:, data: and the like). */
export const httpUrl = (url) => {
  try {
    const parsed = typeof url == "string" && url ? new URL(url, location.href) : null;
    return parsed && /^https?:$/.test(parsed.protocol) ? parsed.href : "";
  } catch (e) {
    return "";
  }
};

/** A price in the page's language. */
export const money = (value, currency) => {
  try {
    return new Intl.NumberFormat(document.documentElement.lang || undefined, {
      style: "currency",
      currency,
    }).format(value);
  } catch (e) {
    return value.toFixed(2) + (currency ? " " + currency : "");
  }
};
