// /ui/transactions/{id}: the waterfall of one transaction, from GET /api/v1/transactions/{id}.
// One row per hop, nested by parent, on a shared time axis; each hop's decisions, and the spans
// and log lines of the services it called, interleaved beneath it at their times.
"use strict";

(function () {
  const { el, append, replace } = MC;
  const id = MC.page.id;
  const waterfall = document.getElementById("waterfall");
  const summary = document.getElementById("summary");

  const t = (iso) => Date.parse(iso);
  const SKEW_MS = 5;

  function niceStep(total) {
    const rough = total / 5;
    const power = 10 ** Math.floor(Math.log10(rough));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= rough) return m * power;
    return 10 * power;
  }

  /** The names a span's or log's service may go by on a hop's destination. */
  function servesAs(dest, service) {
    if (!service) return false;
    return [dest.workload, dest.app, MC.shortHost(dest.service), dest.service].includes(service);
  }

  function build(txn) {
    const hops = txn.hops.map((hop, index) => {
      const client = hop.timings.source;
      const server = hop.timings.destination;
      const outer = client || server || { start: hop.start, duration_ms: hop.duration_ms };
      const start = Math.min(t(hop.start), t(outer.start));
      return {
        kind: "hop",
        index,
        hop,
        time: start,
        end: Math.max(t(hop.start) + hop.duration_ms, t(outer.start) + outer.duration_ms),
        depth: hop.depth,
        children: [],
      };
    });
    const roots = [];
    for (const item of hops) {
      const parent = item.hop.parent;
      (parent !== null && hops[parent] ? hops[parent].children : roots).push(item);
    }
    for (const d of txn.decisions) {
      const time = t(d.time);
      const item = { kind: "decision", decision: d, time, end: time + d.duration_ms };
      if (d.hop !== null && hops[d.hop]) {
        item.depth = hops[d.hop].depth + 1;
        hops[d.hop].children.push(item);
      } else {
        item.depth = 0;
        roots.push(item);
      }
    }
    // spans and logs go under the deepest hop into their service whose interval holds them
    function hopFor(service, time) {
      let best = null;
      for (const item of hops) {
        if (!servesAs(item.hop.destination, service)) continue;
        if (time < item.time - SKEW_MS || time > item.end + SKEW_MS) continue;
        if (!best || item.depth > best.depth || (item.depth === best.depth && item.end - item.time < best.end - best.time)) best = item;
      }
      return best;
    }
    const spanDepth = new Map();
    const byId = new Map(txn.spans.map((s) => [s.span_id, s]));
    function depthOf(span, seen = new Set()) {
      if (spanDepth.has(span.span_id)) return spanDepth.get(span.span_id);
      const parent = byId.get(span.parent_span_id);
      const depth = parent && !seen.has(parent.span_id) ? depthOf(parent, seen.add(span.span_id)) + 1 : 0;
      spanDepth.set(span.span_id, depth);
      return depth;
    }
    for (const s of txn.spans) {
      const time = t(s.start);
      const item = { kind: "span", span: s, time, end: time + s.duration_ms };
      const owner = hopFor(s.service, time);
      item.depth = (owner ? owner.depth + 1 : 0) + depthOf(s);
      (owner ? owner.children : roots).push(item);
    }
    for (const r of txn.logs) {
      const time = t(r.time);
      const item = { kind: "log", log: r, time, end: time };
      const owner = hopFor(r.service, time);
      item.depth = owner ? owner.depth + 1 : 0;
      (owner ? owner.children : roots).push(item);
    }
    const order = { hop: 0, decision: 1, span: 2, log: 3 };
    const byTime = (a, b) => a.time - b.time || order[a.kind] - order[b.kind] || (a.index || 0) - (b.index || 0);
    const rows = [];
    (function walk(items) {
      items.sort(byTime);
      for (const item of items) {
        rows.push(item);
        if (item.children) walk(item.children);
      }
    })(roots);

    const all = rows.flatMap((r) => [r.time, r.end]).filter((x) => !Number.isNaN(x));
    const t0 = Math.min(...all);
    const t1 = Math.max(...all);
    return { rows, hops, t0, total: Math.max(t1 - t0, 1) };
  }

  function pos(model, time) {
    return ((time - model.t0) / model.total) * 100;
  }

  function offset(model, time) {
    return `+${MC.ms(time - model.t0)}`;
  }

  function bar(model, start, duration, attrs, ...children) {
    const left = pos(model, start);
    const width = (duration / model.total) * 100;
    return el("div", { ...attrs, style: { left: `${left}%`, width: `${width}%` } }, ...children);
  }

  /** The duration text of a bar: right of it, else left of it, else inside it at its end. */
  function durLabel(model, start, end, text) {
    const a = pos(model, start);
    const b = pos(model, end);
    if (b <= 72) return el("span", { class: "wf-dur", style: { left: `${b}%` } }, text);
    if (a >= 28) return el("span", { class: "wf-dur before", style: { right: `${100 - a}%` } }, text);
    return el("span", { class: "wf-dur inside", style: { right: `${100 - b}%` } }, text);
  }

  /** A peer without its namespace (the second line of a row says it): name and version. */
  function shortPeer(peer) {
    const name = MC.peerName(peer);
    if (name === "unknown") return el("span", { class: "peer unknown" }, "outside the mesh");
    const version = MC.known(peer.version) && !name.endsWith(peer.version) ? peer.version : "";
    return el("span", { class: "peer" }, name, version ? el("span", { class: "ns" }, ` ${version}`) : null);
  }

  function namespaces(hop) {
    const a = MC.known(hop.source.namespace) ? hop.source.namespace : "";
    const b = MC.known(hop.destination.namespace) ? hop.destination.namespace : "";
    if (a && b && a !== b) return `${a} → ${b}`;
    return b || a;
  }

  function hopRow(model, item) {
    const hop = item.hop;
    const client = hop.timings.source;
    const server = hop.timings.destination;
    const outcome = hop.denied ? "denied" : hop.error ? "error" : "ok";
    const outer = client || server || { start: hop.start, duration_ms: hop.duration_ms };
    const inner = client && server ? server : null;
    const tip = [];
    if (client) tip.push(`client side (caller's proxy): ${offset(model, t(client.start))}, ${MC.ms(client.duration_ms)}`);
    if (server) tip.push(`server side (callee's proxy): ${offset(model, t(server.start))}, ${MC.ms(server.duration_ms)}`);
    if (client && server) tip.push(`network and proxy: ${MC.ms(Math.max(0, client.duration_ms - server.duration_ms))}`);
    const barEl = bar(
      model,
      t(outer.start),
      outer.duration_ms,
      { class: `wf-bar ${outcome}${inner ? "" : " no-inner"}`, title: tip.join("\n") },
      inner
        ? el("div", {
            class: "inner",
            style: {
              left: `${((t(inner.start) - t(outer.start)) / Math.max(outer.duration_ms, 0.001)) * 100}%`,
              width: `${(inner.duration_ms / Math.max(outer.duration_ms, 0.001)) * 100}%`,
            },
          })
        : null,
    );
    const durText = inner ? `${MC.ms(outer.duration_ms)} · server ${MC.ms(inner.duration_ms)}` : MC.ms(outer.duration_ms);
    const code = hop.response.code ? String(hop.response.code) : "no answer";
    const flags = hop.response.flags && hop.response.flags !== "-" ? ` ${hop.response.flags}` : "";
    const what = [hop.request.method, hop.request.path].filter(Boolean).join(" ");
    const row = el(
      "div",
      {
        class: `wf-row hop ${outcome}`,
        role: "button",
        tabindex: "0",
        "aria-expanded": "false",
        dataset: { kind: "hop", index: String(item.index) },
        style: { "--depth": item.depth },
      },
      el(
        "div",
        { class: "wf-label", style: { "--depth": item.depth }, title: `${MC.peerName(hop.source)} → ${MC.peerName(hop.destination)}  ${what}` },
        el("div", { class: "l1" }, shortPeer(hop.source), el("span", { class: "arrow" }, " → "), shortPeer(hop.destination), outcome !== "ok" ? [" ", MC.outcome(hop)] : null),
        el("div", { class: "l2" }, [what, el("span", { class: "code" }, code + flags), namespaces(hop)].filter(Boolean).flatMap((x, i) => (i ? [" · ", x] : [x]))),
      ),
      el("div", { class: "wf-track" }, barEl, durLabel(model, t(outer.start), t(outer.start) + outer.duration_ms, durText)),
    );
    const toggle = () => {
      const open = row.getAttribute("aria-expanded") === "true";
      row.setAttribute("aria-expanded", String(!open));
      row.classList.toggle("open", !open);
      if (open) row.querySelector(".wf-detail").remove();
      else row.append(detail(model, item));
    };
    row.addEventListener("click", (event) => {
      if (event.target.closest("a, .wf-detail")) return;
      toggle();
    });
    row.addEventListener("keydown", (event) => {
      if (event.target !== row) return;
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        toggle();
      }
    });
    return row;
  }

  function flatten(prefix, value, out) {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const keys = Object.keys(value);
      if (!keys.length) out.push([prefix, "{}"]);
      for (const key of keys) flatten(prefix ? `${prefix}.${key}` : key, value[key], out);
    } else if (Array.isArray(value)) {
      out.push([prefix, value.length ? value.join(", ") : "—"]);
    } else {
      out.push([prefix, value === "" || value === null || value === undefined ? "—" : String(value)]);
    }
    return out;
  }

  function detail(model, item) {
    const fields = flatten("", item.hop, []);
    const dl = el("dl", {});
    for (const [key, value] of fields) {
      let shown = value;
      if (/(^|\.)start$/.test(key) && value !== "—") {
        shown = el("span", {}, MC.time(value), ` (${offset(model, t(value))})`);
      }
      append(dl, [el("dt", {}, key), el("dd", {}, shown)]);
    }
    append(dl, [el("dt", {}, "hop"), el("dd", {}, `#${item.index}`)]);
    return el("div", { class: "wf-detail", style: { "--depth": item.depth } }, dl);
  }

  /** Text beside a marker in the track: after it in the left part, before it in the right part. */
  function note(model, time, ...children) {
    const at = pos(model, time);
    const style = at <= 55 ? { paddingLeft: `calc(${at}% + 0.7rem)` } : { paddingRight: `calc(${100 - at}% + 0.7rem)`, textAlign: "right" };
    return el("div", { class: "wf-note", style }, ...children);
  }

  function mark(model, time) {
    return el("div", { class: "wf-mark", style: { left: `${pos(model, time)}%` }, title: `${offset(model, time)} · ${MC.utc(new Date(time))}` });
  }

  function decisionRow(model, item) {
    const d = item.decision;
    const verb = d.verdict === "deny" ? "denied" : d.verdict === "quota_exhausted" ? "quota exhausted" : "allowed";
    const label = el(
      "div",
      { class: "wf-label", style: { "--depth": item.depth } },
      el("div", { class: "l1" }, MC.verdict(d.verdict), " ", d.rule ? ["rule ", el("code", { class: "rule" }, MC.dotted(d.rule))] : d.verdict === "allow" ? "no rule denied it" : ""),
      el("div", { class: "l2" }, `${verb} at ${(d.frontend || "check").replaceAll("_", " ")}`, d.handler ? [" · handler ", el("code", {}, MC.dotted(d.handler))] : null),
    );
    const status = d.status.name && d.status.name !== "OK" ? d.status.name : "";
    return el(
      "div",
      { class: `wf-row decision ${d.verdict}`, dataset: { kind: "decision", rule: d.rule, verdict: d.verdict } },
      label,
      el(
        "div",
        { class: "wf-track tall" },
        mark(model, item.time),
        note(model, item.time, status ? el("strong", {}, status) : null, status && d.status.message ? ": " : null, d.status.message || (status ? "" : verb)),
      ),
    );
  }

  function spanRow(model, item) {
    const s = item.span;
    return el(
      "div",
      { class: `wf-row span ${s.status === "error" ? "error" : ""}`, dataset: { kind: "span" } },
      el("div", { class: "wf-label", style: { "--depth": item.depth }, title: `trace ${s.trace_id} span ${s.span_id}` }, s.name || "(unnamed)", el("span", { class: "what" }, s.service)),
      el("div", { class: "wf-track" }, bar(model, item.time, s.duration_ms, { class: "wf-bar", title: `${offset(model, item.time)}, ${MC.ms(s.duration_ms)}` }), durLabel(model, item.time, item.end, MC.ms(s.duration_ms))),
    );
  }

  function logRow(model, item) {
    const r = item.log;
    const sev = (r.severity || "").toLowerCase();
    return el(
      "div",
      { class: "wf-row log", dataset: { kind: "log" } },
      el("div", { class: "wf-label", style: { "--depth": item.depth } }, el("span", { class: `sev ${sev}` }, r.severity || "LOG"), el("span", { class: "what" }, r.service)),
      el("div", { class: "wf-track tall" }, mark(model, item.time), note(model, item.time, el("span", { class: "body" }, r.body))),
    );
  }

  function axis(model) {
    const step = niceStep(model.total);
    const ticks = [];
    const label = (x) => (x >= 1000 ? `${+(x / 1000).toFixed(3)} s` : `${+x.toFixed(3)} ms`);
    for (let x = 0; x < model.total - step * 0.5; x += step) {
      ticks.push(el("span", { class: "wf-tick", style: { left: `${(x / model.total) * 100}%` } }, label(x)));
    }
    ticks.push(el("span", { class: "wf-tick last", style: { left: "100%" } }, MC.ms(model.total)));
    return el("div", { class: "wf-axis", "aria-hidden": "true" }, el("div", { class: "wf-label" }, "Call"), el("div", { class: "wf-ticks" }, ticks));
  }

  function renderSummary(txn, model) {
    const hops = txn.hops;
    const denied = hops.some((h) => h.denied) || txn.decisions.some((d) => d.verdict !== "allow");
    const error = hops.some((h) => h.error);
    const services = [...new Set(hops.map((h) => MC.peerName(h.destination)))];
    const root = hops.find((h) => h.parent === null);
    const field = (label, ...value) => el("div", {}, el("dt", {}, label), el("dd", {}, ...value));
    replace(
      summary,
      el(
        "dl",
        {},
        field("Started", MC.time(txn.start)),
        field("Duration", MC.ms(model.total)),
        field("Status", denied ? MC.outcome({ denied }) : MC.outcome({ error })),
        root ? field("Entered at", MC.peer(root.destination)) : null,
        field("Calls", String(hops.length)),
        field("Workloads called", services.join(", ") || "—"),
        field("Decisions", String(txn.decisions.length)),
        txn.spans.length ? field("Spans", String(txn.spans.length)) : null,
        txn.logs.length ? field("Log lines", String(txn.logs.length)) : null,
      ),
    );
  }

  async function load() {
    let txn;
    try {
      txn = await MC.api(`transactions/${encodeURIComponent(id)}`);
    } catch (err) {
      summary.remove();
      if (err.status === 404) {
        replace(
          waterfall,
          MC.notice(
            "empty",
            `No transaction “${id}” in the console store.`,
            "Transactions are found by their correlation key: the x-transaction-id header, else the W3C traceparent trace id, x-b3-traceid, then x-request-id " +
              "(the order --console-transaction-headers sets). An inner hop's request id is only found when it is the key. " +
              "It may also be older than the retention (--console-retention), or not written yet (the store is written every half second).",
          ),
        );
      } else {
        replace(waterfall, MC.failure("the transaction", err));
      }
      waterfall.dataset.state = "error";
      return;
    }
    const model = build(txn);
    renderSummary(txn, model);
    const rows = model.rows.map((item) => {
      if (item.kind === "hop") return hopRow(model, item);
      if (item.kind === "decision") return decisionRow(model, item);
      if (item.kind === "span") return spanRow(model, item);
      return logRow(model, item);
    });
    if (!rows.length) {
      replace(waterfall, MC.notice("empty", "This transaction has no records."));
    } else {
      replace(waterfall, axis(model), rows);
      document.getElementById("legend").hidden = false;
    }
    waterfall.dataset.state = "ready";
  }

  load();
})();
