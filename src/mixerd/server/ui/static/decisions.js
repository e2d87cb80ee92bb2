// /ui/decisions: the live decision feed. The latest decisions come from GET /api/v1/decisions,
// new ones from the Server-Sent Events of GET /api/v1/decisions/stream (event "decision"), with
// the same filters; newest first; pause keeps new ones aside until resumed.
"use strict";

(function () {
  const { el, replace } = MC;
  const MAX_ROWS = 500;
  const feed = document.getElementById("feed");
  const status = document.getElementById("status");
  const live = document.getElementById("live");
  const verdict = document.getElementById("d-verdict");
  const rule = document.getElementById("d-rule");
  const service = document.getElementById("d-service");
  const pause = document.getElementById("d-pause");
  const clear = document.getElementById("d-clear");
  const ruleList = document.getElementById("d-rule-list");

  let source = null;
  let generation = 0;
  let rows = [];
  let keys = new Set();
  let pending = [];
  let queued = [];
  let paused = false;
  let tbody = null;
  let lost = 0;
  const rules = new Set();

  const keyOf = (d) =>
    [d.time, d.frontend, d.verdict, d.rule, d.transaction_id, d.request.id, d.source.workload, d.destination.workload, d.request.path].join("\u0000");

  function filters() {
    return { verdict: verdict.value, rule: rule.value.trim(), service: service.value.trim() };
  }

  function matchesService(d, wanted) {
    if (!wanted) return true;
    return wanted === d.destination.service || wanted === d.destination.workload;
  }

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  function describeFilters() {
    const f = filters();
    const parts = [];
    if (f.verdict) parts.push(`verdict ${f.verdict.replace("_", " ")}`);
    if (f.rule) parts.push(`rule ${f.rule}`);
    if (f.service) parts.push(`service ${f.service}`);
    return parts.length ? ` matching ${parts.join(", ")}` : "";
  }

  function row(d, fresh) {
    const url = d.transaction_id ? MC.transactionUrl(d.transaction_id) : null;
    const what = [d.request.method, d.request.path].filter(Boolean).join(" ");
    return el(
      "tr",
      {
        class: fresh ? "new" : null,
        dataset: { verdict: d.verdict, rule: d.rule, transaction: d.transaction_id },
        onclick: url
          ? (event) => {
              if (!event.target.closest("a") && !getSelection().toString()) location.assign(url);
            }
          : null,
        style: url ? { cursor: "pointer" } : null,
      },
      el("td", { class: "time" }, MC.time(d.time)),
      el("td", {}, MC.verdict(d.verdict), el("div", { class: "frontend" }, el("small", {}, d.frontend.replaceAll("_", " ")))),
      el(
        "td",
        { class: "rule" },
        d.rule ? MC.dotted(d.rule) : el("small", {}, d.verdict === "allow" ? "(no rule denied it)" : "—"),
        d.handler ? el("div", {}, el("small", {}, MC.dotted(d.handler))) : null,
        Object.keys(d.quotas).length ? el("div", {}, el("small", {}, Object.entries(d.quotas).map(([q, n]) => `${q}: ${n} granted`).join(", "))) : null,
      ),
      el("td", {}, MC.edge(d.source, d.destination)),
      el("td", { class: "what", title: what || null }, what || el("small", {}, "—")),
      el("td", { class: "message" }, d.status.name && d.status.name !== "OK" ? el("strong", {}, d.status.name) : null, d.status.name !== "OK" && d.status.message ? ": " : null, d.status.message),
      el(
        "td",
        { class: "id" },
        url ? el("a", { href: url, title: d.transaction_id }, d.transaction_id) : el("small", { title: "The request carried none of the transaction headers" }, "none"),
      ),
    );
  }

  function renderAll() {
    if (!rows.length) {
      tbody = null;
      replace(
        feed,
        MC.notice(
          "empty",
          `No decisions${describeFilters()} yet; new ones appear here as they are made.`,
          "mixerd records every Mixer Check, Envoy ext_authz and rate-limit decision (unless started with --console-decisions=false). Try: ",
          el("code", {}, "mixerd check -a 'request.headers[x-user]=blocked'"),
        ),
      );
      return;
    }
    tbody = el("tbody", {}, rows.map((d) => row(d, false)));
    replace(
      feed,
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ["Time", "Verdict", "Rule and handler", "Source → destination", "Request", "Status", "Transaction"].map((h) => el("th", { scope: "col" }, h)))),
          tbody,
        ),
      ),
    );
  }

  function updateStatus() {
    const parts = [`${rows.length} decision${rows.length === 1 ? "" : "s"}${describeFilters()}, newest first`];
    if (rows.length >= MAX_ROWS) parts[0] += ` (the latest ${MAX_ROWS} are kept on this page)`;
    if (paused) parts.push(`paused: ${pending.length} new waiting`);
    if (lost) parts.push(`${lost} decisions were not shown: the page did not keep up`);
    status.textContent = parts.join(" · ");
  }

  function noteRules(list) {
    let changed = false;
    for (const d of list) {
      if (d.rule && !rules.has(d.rule)) {
        rules.add(d.rule);
        changed = true;
      }
    }
    if (changed) replace(ruleList, [...rules].sort().map((r) => el("option", { value: r })));
  }

  /** Show new live decisions (newest first), a frame at a time. */
  function flush() {
    const batch = queued;
    queued = [];
    if (!batch.length) return;
    batch.sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0));
    rows = batch.concat(rows).slice(0, MAX_ROWS);
    noteRules(batch);
    if (!tbody) renderAll();
    else {
      const fragment = document.createDocumentFragment();
      for (const d of batch) fragment.append(row(d, true));
      tbody.prepend(fragment);
      while (tbody.children.length > MAX_ROWS) tbody.lastElementChild.remove();
    }
    updateStatus();
  }

  function add(d) {
    const key = keyOf(d);
    if (keys.has(key)) return;
    keys.add(key);
    if (paused) {
      pending.unshift(d);
      if (pending.length > MAX_ROWS) pending.length = MAX_ROWS;
      updateStatus();
      return;
    }
    if (!queued.length) requestAnimationFrame(flush);
    queued.push(d);
  }

  async function explainFailure(url) {
    const controller = new AbortController();
    try {
      const resp = await fetch(url, { signal: controller.signal });
      if (!resp.ok) {
        const body = await resp.json().catch(() => null);
        return body && body.error ? body.error : `HTTP ${resp.status}`;
      }
      return "";
    } catch (err) {
      return "mixerd did not answer (is it still running?)";
    } finally {
      controller.abort();
    }
  }

  function connect() {
    const mine = ++generation;
    if (source) source.close();
    rows = [];
    keys = new Set();
    pending = [];
    queued = [];
    tbody = null;
    const f = filters();
    MC.setParams(f);
    const url = new URL("/api/v1/decisions/stream", location.origin);
    for (const [k, v] of Object.entries(f)) if (v) url.searchParams.set(k, v);
    setLive("connecting", "connecting…");
    source = new EventSource(url);
    source.addEventListener("open", () => {
      if (mine === generation && !paused) setLive("open", "live");
    });
    source.addEventListener("decision", (event) => {
      if (mine === generation) add(JSON.parse(event.data));
    });
    source.addEventListener("lost", (event) => {
      lost += Number(event.data) || 0;
      updateStatus();
    });
    source.addEventListener("error", async () => {
      if (mine !== generation) return;
      if (source.readyState === EventSource.CLOSED) {
        const why = await explainFailure(url);
        setLive("error", "stopped");
        status.textContent = "";
        replace(feed, MC.notice("error", `The live feed stopped: ${why || "the connection was refused"}.`, "Reload the page to try again."));
      } else {
        setLive("error", "reconnecting…");
      }
    });

    MC.api("decisions", { verdict: f.verdict, rule: f.rule, limit: MAX_ROWS })
      .then((body) => {
        if (mine !== generation) return;
        const fresh = rows;
        const listed = body.decisions.filter((d) => matchesService(d, f.service));
        for (const d of listed) keys.add(keyOf(d));
        const seen = new Set(fresh.map(keyOf));
        rows = fresh.concat(listed.filter((d) => !seen.has(keyOf(d))));
        rows.sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0));
        rows = rows.slice(0, MAX_ROWS);
        noteRules(rows);
        renderAll();
        updateStatus();
        feed.dataset.state = "ready";
      })
      .catch((err) => {
        if (mine !== generation) return;
        replace(feed, MC.failure("the latest decisions", err), el("p", { class: "hint" }, "New decisions still appear below as they are made."));
        feed.dataset.state = "error";
      });
  }

  function setPaused(value) {
    paused = value;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (paused) setLive("paused", "paused");
    else {
      setLive(source && source.readyState === EventSource.OPEN ? "open" : "connecting", source && source.readyState === EventSource.OPEN ? "live" : "connecting…");
      const waiting = pending;
      pending = [];
      if (waiting.length) {
        queued = waiting.concat(queued);
        flush();
      }
    }
    updateStatus();
  }

  MC.fromParam(verdict, "verdict");
  MC.fromParam(rule, "rule");
  MC.fromParam(service, "service");

  let typing = null;
  for (const input of [rule, service]) {
    input.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(connect, 500);
    });
    input.addEventListener("change", () => {
      clearTimeout(typing);
      connect();
    });
  }
  document.getElementById("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typing);
    connect();
  });
  verdict.addEventListener("change", connect);
  pause.addEventListener("click", () => setPaused(!paused));
  clear.addEventListener("click", () => {
    rows = [];
    queued = [];
    pending = [];
    renderAll();
    updateStatus();
  });
  window.addEventListener("pagehide", () => source && source.close());

  connect();
})();
