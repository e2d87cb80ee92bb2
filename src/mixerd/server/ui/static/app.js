// mixerd console: helpers every page uses (window.MC). No build step, no dependencies.
// Pages read the JSON API under /api/v1/ (documented in mixerd.server.console) and render it.
"use strict";

(function () {
  const MC = {};
  window.MC = MC;

  MC.page = JSON.parse(document.getElementById("page-data").textContent || "{}");

  // -- DOM --------------------------------------------------------------------------------------

  /** el("a", {href: "/x", class: "y"}, "text", child...): text is always set as text, never HTML. */
  MC.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "style") {
        for (const [prop, v] of Object.entries(value)) {
          if (prop.startsWith("--")) node.style.setProperty(prop, String(v));
          else node.style[prop] = v;
        }
      }
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    MC.append(node, children);
    return node;
  };

  MC.append = function (node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  MC.replace = function (node, ...children) {
    node.replaceChildren();
    return MC.append(node, children);
  };

  MC.$ = (selector, root) => (root || document).querySelector(selector);

  /** A dotted name (a rule, a handler, a host) that wraps only after its dots. */
  MC.dotted = function (text) {
    const parts = String(text).split(".");
    return MC.el("span", { class: "dotted" }, parts.map((p, i) => [MC.el("span", {}, i < parts.length - 1 ? `${p}.` : p), i < parts.length - 1 ? document.createElement("wbr") : null]));
  };

  // -- the API ----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }
  MC.ApiError = ApiError;

  /** GET /api/v1/<path> with the given query parameters (empty ones left out), as JSON. */
  MC.api = async function (path, params) {
    const url = new URL("/api/v1/" + path, location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
    }
    let resp;
    try {
      resp = await fetch(url, { headers: { Accept: "application/json" } });
    } catch (err) {
      throw new ApiError(`mixerd did not answer ${url.pathname} (is it still running?)`, 0);
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (err) {
      body = null;
    }
    if (!resp.ok) {
      const why = body && body.error ? body.error : `HTTP ${resp.status}`;
      throw new ApiError(why, resp.status);
    }
    return body;
  };

  /** A notice box: kind "error" (something failed) or "empty" (nothing to show, and why). */
  MC.notice = function (kind, title, ...hint) {
    return MC.el(
      "div",
      { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : null },
      MC.el("strong", {}, title),
      hint.length ? MC.el("p", { class: "hint" }, ...hint) : null,
    );
  };

  /** The notice for a failed API call: what failed, and what to do about it. */
  MC.failure = function (what, err) {
    const status = err && err.status;
    let hint = "";
    if (status === 503) hint = "The console store cannot be reached; mixerd keeps recording and retries. Reload in a moment.";
    else if (status === 403) hint = "The console API is served to this machine only unless mixerd runs with --console-remote.";
    else if (status === 0) hint = "Check that mixerd is running and reload the page.";
    return MC.notice("error", `Could not load ${what}: ${err.message}`, hint);
  };

  // -- formatting -------------------------------------------------------------------------------

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  /** "2026-12-04 19:13:20.123 UTC" */
  MC.utc = function (date) {
    return (
      `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} ` +
      `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}.` +
      `${pad(date.getUTCMilliseconds(), 3)} UTC`
    );
  };

  /** Local time: "19:13:20.123" today, "Dec 4, 19:13:20" on other days (with the year when not this one). */
  MC.local = function (date, { ms = true } = {}) {
    const now = new Date();
    const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` + (ms ? `.${pad(date.getMilliseconds(), 3)}` : "");
    if (date.toDateString() === now.toDateString()) return time;
    const opts = { month: "short", day: "numeric" };
    if (date.getFullYear() !== now.getFullYear()) opts.year = "numeric";
    return `${date.toLocaleDateString(undefined, opts)}, ${time}`;
  };

  /** <time> in the viewer's zone, UTC in its title. */
  MC.time = function (iso, opts) {
    if (!iso) return MC.el("span", { class: "muted" }, "—");
    const date = new Date(iso);
    return MC.el("time", { datetime: iso, title: MC.utc(date) }, MC.local(date, opts));
  };

  MC.ms = function (value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    if (value >= 10000) return `${(value / 1000).toFixed(1)} s`;
    if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
    if (value >= 100) return `${value.toFixed(0)} ms`;
    if (value >= 10) return `${value.toFixed(1)} ms`;
    if (value >= 1) return `${value.toFixed(2)} ms`;
    if (value > 0) return `${(value * 1000).toFixed(0)} µs`;
    return "0 ms";
  };

  /** A per-second rate: "12/s", "0.35/s", "4.2k/s"; "0/s" only for nothing at all. */
  MC.rate = function (value) {
    if (value === null || value === undefined) return "—";
    if (value === 0) return "0/s";
    if (value >= 1000) return `${(value / 1000).toFixed(1)}k/s`;
    if (value >= 100) return `${value.toFixed(0)}/s`;
    if (value >= 10) return `${value.toFixed(1)}/s`;
    if (value >= 0.01) return `${value.toFixed(2)}/s`;
    return `${value.toPrecision(1)}/s`;
  };

  MC.pct = function (value) {
    if (value === null || value === undefined) return "—";
    if (value === 0) return "0%";
    if (value < 0.1) return "<0.1%";
    if (value < 10) return `${value.toFixed(1)}%`;
    return `${value.toFixed(0)}%`;
  };

  MC.count = (n) => Number(n).toLocaleString();

  const UNKNOWN = new Set(["", "unknown"]);
  MC.known = (value) => value !== null && value !== undefined && !UNKNOWN.has(value);

  /** The short name of a service host: reviews.shop.svc.cluster.local -> reviews. */
  MC.shortHost = function (host) {
    if (!host) return "";
    const parts = host.split(".");
    return parts.length >= 3 && parts[2] === "svc" ? parts[0] : host;
  };

  /** A peer of the API (source or destination) as "workload ns", the best name it has. */
  MC.peerName = function (peer) {
    if (!peer) return "unknown";
    for (const key of ["workload", "app", "service"]) {
      if (MC.known(peer[key])) return key === "service" ? MC.shortHost(peer[key]) : peer[key];
    }
    return "unknown";
  };

  MC.peer = function (peer, { outside = "outside the mesh" } = {}) {
    const name = MC.peerName(peer);
    if (name === "unknown") return MC.el("span", { class: "peer unknown", title: "The reporting proxy did not know this peer" }, outside);
    const ns = peer && MC.known(peer.namespace) ? peer.namespace : "";
    const version = peer && MC.known(peer.version) ? peer.version : "";
    return MC.el(
      "span",
      { class: "peer", title: [name, version && `version ${version}`, ns && `namespace ${ns}`].filter(Boolean).join(", ") },
      name,
      version ? MC.el("span", { class: "ns" }, ` ${version}`) : null,
      ns ? MC.el("span", { class: "ns" }, ` · ${ns}`) : null,
    );
  };

  MC.edge = (source, destination) => MC.el("span", { class: "edge" }, MC.peer(source), MC.el("span", { class: "arrow", "aria-label": "calls" }, " → "), MC.peer(destination));

  MC.outcome = function (item) {
    if (item.denied) return MC.el("span", { class: "badge denied" }, "denied");
    if (item.error) return MC.el("span", { class: "badge error" }, "error");
    return MC.el("span", { class: "badge ok" }, "ok");
  };

  MC.verdict = (verdict) => MC.el("span", { class: `badge ${verdict}` }, verdict === "quota_exhausted" ? "quota exhausted" : verdict);

  MC.transactionUrl = (id) => `/ui/transactions/${encodeURIComponent(id)}`;
  MC.serviceUrl = (namespace, service) => `/ui/services/${encodeURIComponent(namespace)}/${encodeURIComponent(service)}`;

  /** A Go-style duration ("5m", "1h", "7d") in seconds. */
  MC.seconds = function (text) {
    const m = /^(\d+)([smhd])$/.exec(text || "");
    if (!m) return null;
    return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2]];
  };

  MC.windowText = function (text) {
    const s = MC.seconds(text);
    if (s === null) return text;
    if (s % 86400 === 0) return s === 86400 ? "24 hours" : `${s / 86400} days`;
    if (s % 3600 === 0) return s === 3600 ? "hour" : `${s / 3600} hours`;
    if (s % 60 === 0) return s === 60 ? "minute" : `${s / 60} minutes`;
    return `${s} seconds`;
  };

  // -- URL state: pages keep their controls in the query string, so views can be linked --------

  MC.params = () => new URLSearchParams(location.search);

  MC.setParams = function (values) {
    const params = new URLSearchParams(location.search);
    for (const [key, value] of Object.entries(values)) {
      if (value === "" || value === null || value === undefined) params.delete(key);
      else params.set(key, value);
    }
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? `?${query}` : ""));
  };

  /** Set a form control from the URL when the URL has a value it can take. */
  MC.fromParam = function (control, name) {
    const value = MC.params().get(name || control.name);
    if (value === null) return;
    if (control.tagName === "SELECT" && ![...control.options].some((o) => o.value === value)) return;
    control.value = value;
  };

  /** A sortable table. columns: [{key, label, num, render(row), value(row)}]; rows: objects. */
  MC.table = function ({ columns, rows, sort, onsort, caption, rowAttrs }) {
    let sortKey = sort ? sort.key : null;
    let descending = sort ? sort.descending !== false : false;
    const table = MC.el("table", {});
    if (caption) table.append(MC.el("caption", { class: "visually-hidden" }, caption));
    const head = MC.el("thead");
    const body = MC.el("tbody");
    table.append(head, body);

    function render() {
      const sorted = [...rows];
      const column = columns.find((c) => c.key === sortKey);
      if (column) {
        const value = column.value || ((row) => row[column.key]);
        sorted.sort((a, b) => {
          const x = value(a);
          const y = value(b);
          const order = x === y ? 0 : x === null || x === undefined ? 1 : y === null || y === undefined ? -1 : x < y ? -1 : 1;
          return descending ? -order : order;
        });
      }
      MC.replace(
        head,
        MC.el(
          "tr",
          {},
          columns.map((c) =>
            MC.el(
              "th",
              {
                class: c.num ? "num" : null,
                scope: "col",
                "aria-sort": c.key === sortKey ? (descending ? "descending" : "ascending") : null,
              },
              c.sortable === false
                ? c.label
                : MC.el(
                    "button",
                    {
                      class: "sort",
                      type: "button",
                      onclick: () => {
                        descending = c.key === sortKey ? !descending : !!c.num;
                        sortKey = c.key;
                        if (onsort) onsort({ key: sortKey, descending });
                        render();
                      },
                    },
                    c.label,
                  ),
            ),
          ),
        ),
      );
      MC.replace(
        body,
        sorted.map((row) =>
          MC.el(
            "tr",
            rowAttrs ? rowAttrs(row) : {},
            columns.map((c) => MC.el("td", { class: [c.num ? "num" : "", c.class || ""].join(" ").trim() || null }, c.render ? c.render(row) : row[c.key])),
          ),
        ),
      );
    }
    render();
    return MC.el("div", { class: "table-wrap" }, table);
  };

  /** Run fn every `seconds` while the page is visible (0: never); returns a stop function. */
  MC.every = function (seconds, fn) {
    if (!seconds) return () => {};
    const timer = setInterval(() => {
      if (document.visibilityState === "visible") fn();
    }, seconds * 1000);
    return () => clearInterval(timer);
  };

  /** Resolves once the browser has painted the page as it is now. */
  MC.afterPaint = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

  /** Run the page's browser libraries (body data-libraries, preloaded by the page) in order, after
   * the first paint: parsing them must not hold the page's first paint back. */
  MC.libraries = async function () {
    const urls = (document.body.dataset.libraries || "").split(" ").filter(Boolean);
    await MC.afterPaint();
    for (const src of urls) {
      await new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = src;
        script.onload = resolve;
        script.onerror = () => reject(new Error(`could not load ${src.split("?")[0]}; reload the page, or run make install if this persists`));
        document.head.append(script);
      });
    }
  };

  // -- every page -------------------------------------------------------------------------------

  function zoneLabel() {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    const offset = -new Date().getTimezoneOffset();
    const sign = offset >= 0 ? "+" : "-";
    const abs = Math.abs(offset);
    return `Times in ${zone} (UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)})`;
  }
  const tz = document.getElementById("tz");
  if (tz) tz.textContent = zoneLabel();
})();
