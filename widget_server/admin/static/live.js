/* The live view: applies the snapshots of the Server-Sent Events stream to the page.
 * Without JavaScript the page shows the figures as of loading it. */
(() => {
  "use strict";
  const root = document.getElementById("live");
  if (!root || !window.EventSource) return;
  const status = document.getElementById("live-status");
  const feed = document.getElementById("decision-feed");
  let shownFeed = "";

  const setText = (id, value) => {
    const el = document.getElementById(id);
    if (el && el.textContent !== String(value)) el.textContent = String(value);
  };
  const setStatus = (text) => {
    if (status.textContent !== text) status.textContent = text;
  };

  const cell = (text, className) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  };

  const row = (item) => {
    const tr = document.createElement("tr");
    const link = document.createElement("a");
    link.href = item.href;
    const code = document.createElement("code");
    code.textContent = item.visitor;
    link.append(code);
    const who = document.createElement("td");
    who.append(link);
    tr.append(cell(item.time, "nowrap"), cell(item.signal), cell(item.outcome, item.shown ? "shown" : ""), who);
    return tr;
  };

  const renderFeed = (items) => {
    const signature = JSON.stringify(items.map((i) => [i.at, i.href, i.outcome]));
    if (!feed || signature === shownFeed) return;
    shownFeed = signature;
    // Keep the keyboard focus on the same visitor link when the rows are replaced.
    const focused = feed.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
    feed.replaceChildren(...items.map(row));
    document.getElementById("feed-empty").hidden = items.length > 0;
    document.getElementById("feed-table").hidden = items.length === 0;
    if (focused) {
      const again = [...feed.querySelectorAll("a")].find((a) => a.getAttribute("href") === focused);
      if (again) again.focus();
    }
  };

  const source = new EventSource(root.dataset.stream);
  source.addEventListener("open", () => setStatus("Live, as of"));
  source.addEventListener("error", () => setStatus("Reconnecting… figures as of"));
  source.addEventListener("message", (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    setStatus("Live, as of");
    setText("live-updated", data.updated);
    setText("live-connected", data.connected);
    setText("live-events", data.per_minute.events);
    setText("live-signals", data.per_minute.signals);
    setText("live-offers", data.per_minute.offers);
    renderFeed(data.decisions);
    root.dataset.updated = String(data.at);
  });
  window.addEventListener("pagehide", () => source.close());
})();
