// /ui/: what needs attention, from the same API as the other pages: the busiest edges (the
// workload graph), the rules that denied the most (the decision list), the slowest services (the
// service graph's p95 into each service) and the latest failed or denied transactions.
"use strict";

(function () {
  const { el, replace } = MC;
  const windowSelect = document.getElementById("window");
  const status = document.getElementById("status");
  const TOP = 8;
  const DECISIONS = 1000;

  function meter(fraction, kind) {
    return el("div", { class: `meter ${kind || ""}`, "aria-hidden": "true" }, el("span", { style: { width: `${Math.max(2, Math.min(100, fraction * 100))}%` } }));
  }

  function nameOf(node) {
    if (!node || node.nodeType === "unknown") return null;
    if (node.nodeType === "service") return node.service;
    if (node.nodeType === "app") return node.version ? `${node.app} ${node.version}` : node.app;
    return node.workload;
  }

  function nodeCell(node) {
    const name = nameOf(node);
    if (!name) return el("span", { class: "peer unknown" }, "outside the mesh");
    return el("span", { class: "peer" }, name, el("span", { class: "ns" }, ` · ${node.namespace}`));
  }

  function busiest(graph, win) {
    const target = document.getElementById("edges");
    const nodes = new Map(graph.elements.nodes.map((n) => [n.data.id, n.data]));
    const edges = graph.elements.edges.map((e) => e.data).sort((a, b) => b.traffic.rates.http - a.traffic.rates.http).slice(0, TOP);
    if (!edges.length) {
      replace(
        target,
        MC.notice(
          "empty",
          `No calls recorded in the last ${MC.windowText(win)}.`,
          "Calls appear when proxies report them (Mixer Report, Envoy's access-log service) through a rule that sends them to the console adapter; " +
            "the embedded default config's record-hops rule does. Try: ",
          el("code", {}, "mixerd report -a request.time=now -a response.code=200 -a source.workload.name=web -a destination.workload.name=api"),
        ),
      );
      return;
    }
    const max = edges[0].traffic.rates.http || 1;
    replace(
      target,
      MC.table({
        columns: [
          { key: "edge", label: "Edge", sortable: false, render: (e) => el("span", {}, el("div", {}, nodeCell(nodes.get(e.source))), el("div", {}, el("span", { class: "arrow" }, " → "), nodeCell(nodes.get(e.target)))) },
          { key: "rate", label: "Requests/s", num: true, sortable: false, class: "bar-cell", render: (e) => [MC.rate(e.traffic.rates.http), meter(e.traffic.rates.http / max)] },
          { key: "err", label: "Errors", num: true, sortable: false, render: (e) => MC.pct(e.traffic.rates.httpPercentErr) },
          { key: "p95", label: "p95", num: true, sortable: false, render: (e) => MC.ms(e.responseTime) },
          { key: "denied", label: "Denied/s", num: true, sortable: false, render: (e) => MC.rate(e.traffic.rates.httpDenied) },
        ],
        rows: edges,
      }),
    );
  }

  function deniedRules(lists, win) {
    const target = document.getElementById("rules");
    const all = lists.flat();
    const byRule = new Map();
    for (const d of all) {
      const key = d.rule || (d.verdict === "quota_exhausted" ? `quota ${Object.keys(d.quotas).join(", ")}` : "(no rule named)");
      const r = byRule.get(key) || { rule: key, named: Boolean(d.rule), count: 0, deny: 0, quota: 0, last: d.time, handler: d.handler };
      r.count += 1;
      if (d.verdict === "deny") r.deny += 1;
      else r.quota += 1;
      if (d.time > r.last) r.last = d.time;
      byRule.set(key, r);
    }
    const rows = [...byRule.values()].sort((a, b) => b.count - a.count).slice(0, TOP);
    if (!rows.length) {
      replace(
        target,
        MC.notice(
          "empty",
          `Nothing denied in the last ${MC.windowText(win)}.`,
          "Every Mixer Check, Envoy ext_authz and rate-limit decision is recorded (unless mixerd runs with --console-decisions=false). Try: ",
          el("code", {}, "mixerd check -a 'request.headers[x-user]=blocked'"),
        ),
      );
      return;
    }
    const max = rows[0].count;
    const capped = lists.some((l) => l.length >= DECISIONS);
    replace(
      target,
      MC.table({
        columns: [
          {
            key: "rule",
            label: "Rule",
            sortable: false,
            class: "rule",
            render: (r) => (r.named ? el("a", { href: `/ui/decisions?rule=${encodeURIComponent(r.rule)}` }, MC.dotted(r.rule)) : r.rule),
          },
          { key: "count", label: capped ? `Refusals (of the latest ${DECISIONS})` : "Refusals", num: true, sortable: false, class: "bar-cell", render: (r) => [MC.count(r.count), meter(r.count / max, "denied")] },
          { key: "kind", label: "Kind", sortable: false, render: (r) => (r.quota && !r.deny ? MC.verdict("quota_exhausted") : MC.verdict("deny")) },
          { key: "last", label: "Latest", sortable: false, class: "time", render: (r) => MC.time(r.last, { ms: false }) },
        ],
        rows,
      }),
    );
  }

  function slowest(graph, win) {
    const target = document.getElementById("slow");
    const nodes = new Map(graph.elements.nodes.map((n) => [n.data.id, n.data]));
    const worst = new Map();
    for (const e of graph.elements.edges.map((x) => x.data)) {
      const node = nodes.get(e.target);
      if (!node || node.nodeType !== "service" || e.responseTime === null) continue;
      const have = worst.get(node.id);
      const rate = e.traffic.rates.http;
      if (!have) worst.set(node.id, { node, p95: e.responseTime, rate, err: e.traffic.rates.httpPercentErr });
      else {
        have.p95 = Math.max(have.p95, e.responseTime);
        have.err = (have.err * have.rate + e.traffic.rates.httpPercentErr * rate) / Math.max(have.rate + rate, 1e-12);
        have.rate += rate;
      }
    }
    const rows = [...worst.values()].sort((a, b) => b.p95 - a.p95).slice(0, TOP);
    if (!rows.length) {
      replace(target, MC.notice("empty", `No service latencies in the last ${MC.windowText(win)}.`, "Latencies come from the durations of recorded calls into services (the destination service host of each call)."));
      return;
    }
    const max = rows[0].p95 || 1;
    replace(
      target,
      MC.table({
        columns: [
          { key: "service", label: "Service", sortable: false, render: (r) => el("a", { href: MC.serviceUrl(r.node.namespace, r.node.service) }, r.node.service, el("span", { class: "ns" }, ` · ${r.node.namespace}`)) },
          { key: "p95", label: "p95", num: true, sortable: false, class: "bar-cell", render: (r) => [MC.ms(r.p95), meter(r.p95 / max, "slow")] },
          { key: "rate", label: "Requests/s", num: true, sortable: false, render: (r) => MC.rate(r.rate) },
          { key: "err", label: "Errors", num: true, sortable: false, render: (r) => MC.pct(r.err) },
        ],
        rows,
      }),
    );
  }

  function failed(lists, win) {
    const target = document.getElementById("failed");
    const seen = new Set();
    const rows = lists
      .flat()
      .filter((t) => !seen.has(t.id) && seen.add(t.id))
      .sort((a, b) => (a.start < b.start ? 1 : -1))
      .slice(0, TOP);
    if (!rows.length) {
      replace(target, MC.notice("empty", `No failed or denied transactions in the last ${MC.windowText(win)}.`, "A transaction fails when one of its calls answered 5xx or not at all, and is denied when policy refused one."));
      return;
    }
    replace(
      target,
      MC.table({
        columns: [
          { key: "start", label: "Started", sortable: false, class: "time", render: (t) => el("a", { href: MC.transactionUrl(t.id), title: `Transaction ${t.id}` }, MC.time(t.start, { ms: false })) },
          { key: "root", label: "Entered at", sortable: false, render: (t) => MC.peer(t.root) },
          { key: "services", label: "Services", sortable: false, class: "services-list", render: (t) => t.services.map(MC.shortHost).join(", ") },
          { key: "duration", label: "Duration", num: true, sortable: false, render: (t) => MC.ms(t.duration_ms) },
          { key: "status", label: "Status", sortable: false, render: (t) => MC.outcome(t) },
        ],
        rows,
      }),
    );
  }

  async function section(id, what, work) {
    try {
      await work();
    } catch (err) {
      replace(document.getElementById(id), MC.failure(what, err));
    }
  }

  async function load() {
    const win = windowSelect.value;
    MC.setParams({ window: win === "1h" ? "" : win });
    const since = new Date(Date.now() - MC.seconds(win) * 1000).toISOString();
    const graph = (graphType) => MC.api("graph", { graphType, duration: win });
    await Promise.all([
      section("edges", "the busiest edges", async () => busiest(await graph("workload"), win)),
      section("rules", "the denied decisions", async () =>
        deniedRules(
          (await Promise.all(["deny", "quota_exhausted"].map((verdict) => MC.api("decisions", { verdict, since, limit: DECISIONS })))).map((b) => b.decisions),
          win,
        ),
      ),
      section("slow", "the service latencies", async () => slowest(await graph("service"), win)),
      section("failed", "the failed transactions", async () =>
        failed((await Promise.all(["error", "denied"].map((s) => MC.api("transactions", { status: s, since, limit: TOP })))).map((b) => b.transactions), win),
      ),
    ]);
    status.textContent = `The last ${MC.windowText(win)} · updated ${MC.local(new Date(), { ms: false })}`;
    document.body.dataset.state = "ready";
  }

  MC.fromParam(windowSelect, "window");
  windowSelect.addEventListener("change", load);
  document.getElementById("refresh").addEventListener("click", load);
  document.getElementById("controls").addEventListener("submit", (event) => event.preventDefault());
  load();
  MC.every(30, load);
})();
