// /ui/graph: the service graph of GET /api/v1/graph, drawn with Cytoscape.js and the dagre
// layout, refreshed in place. Node positions are kept in localStorage (per graph type): a node
// stays where it was, or where the user dragged it, across refreshes and reloads; only nodes
// never seen before are placed, next to a neighbour that already has a place. The same edges are
// in a table under the graph. window.cy is the Cytoscape instance (tests read the model from it).
// Positions are kept per view (graph type and namespace filter): a filtered view is laid out for
// its own nodes.
"use strict";

(function () {
  const { el, replace } = MC;
  const POSITIONS = "mixerd.graph.positions.v2";
  const cyEl = document.getElementById("cy");
  const panel = document.getElementById("panel");
  const edgesEl = document.getElementById("edges");
  const status = document.getElementById("status");
  const type = document.getElementById("g-type");
  const namespacesInput = document.getElementById("g-namespaces");
  const duration = document.getElementById("g-duration");
  const labels = document.getElementById("g-labels");
  const refresh = document.getElementById("g-refresh");
  const nsList = document.getElementById("g-namespace-list");

  let cy = null;
  let graphType = null;
  let view = null; // graph type and namespaces: what positions are kept under
  let graph = null;
  let loadedAt = null;
  let stopTimer = () => {};
  let loading = null;
  let loads = 0;
  let tableSort = { key: "rate", descending: true };
  let selection = null;
  const overlay = el("div", { class: "graph-overlay", hidden: true });
  cyEl.after(overlay);

  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // -- health (Kiali's default thresholds) -------------------------------------------------------

  function shares(responses) {
    let total = 0;
    let c4 = 0;
    let c5 = 0;
    for (const [code, n] of Object.entries(responses || {})) {
      total += n;
      const c = Number(code);
      if (c >= 400 && c < 500) c4 += n;
      else if (c >= 500 || c === 0) c5 += n;
    }
    return { total, pct4: total ? (100 * c4) / total : 0, pct5: total ? (100 * c5) / total : 0 };
  }

  function health(s) {
    if (!s.total) return "idle";
    if (s.pct5 >= 10 || s.pct4 >= 20) return "failure";
    if (s.pct5 >= 0.1 || s.pct4 >= 10) return "degraded";
    return "healthy";
  }

  const HEALTH_TEXT = { healthy: "healthy", degraded: "degraded", failure: "failure", idle: "no requests" };

  function addResponses(into, responses) {
    for (const [code, n] of Object.entries(responses || {})) into[code] = (into[code] || 0) + n;
    return into;
  }

  // -- the model -------------------------------------------------------------------------------

  function nodeName(d) {
    if (d.nodeType === "unknown") return "unknown";
    if (d.nodeType === "service") return d.service;
    if (d.nodeType === "app") return d.version ? `${d.app} ${d.version}` : d.app;
    return d.workload;
  }

  /** A hop's peer as the id of its node in a graph of this type (graph.py's rules), or null. */
  function nodeIdOf(peer, side, kind) {
    const known = MC.known;
    const ns = known(peer.namespace) ? peer.namespace : "unknown";
    const serviceNode = () => {
      let sns = ns;
      const parts = (peer.service || "").split(".");
      if (sns === "unknown" && parts.length >= 3 && parts[2] === "svc") sns = parts[1];
      const short = parts.length >= 3 && parts[2] === "svc" ? parts[0] : parts.length === 2 && parts[1] === sns ? parts[0] : peer.service;
      return `svc_${sns}_${short}`;
    };
    if (side === "destination" && kind === "service" && known(peer.service)) return serviceNode();
    if (!known(peer.workload)) {
      if (side === "destination" && known(peer.service)) return serviceNode();
      return "unknown";
    }
    if (side === "source" && kind === "service") return null; // the entry service is not in a hop
    if ((kind === "app" || kind === "versionedApp") && known(peer.app)) {
      if (kind === "versionedApp" && known(peer.version)) return `vapp_${ns}_${peer.app}_${peer.version}`;
      return `app_${ns}_${peer.app}`;
    }
    return `wl_${ns}_${peer.workload}`;
  }

  function edgeLabel(e, mode) {
    if (mode === "none") return "";
    const rate = MC.rate(e.rate);
    if (mode === "rate") return rate;
    return `${rate} · p95 ${MC.ms(e.p95)}\n${MC.pct(e.errPct)} err · ${MC.rate(e.denied)} denied`;
  }

  function model(body) {
    const nodes = body.elements.nodes.map((n) => n.data);
    const edges = body.elements.edges.map((e) => {
      const d = e.data;
      const s = shares(d.traffic.responses);
      return {
        id: d.id,
        source: d.source,
        target: d.target,
        protocol: d.traffic.protocol,
        rate: d.traffic.rates.http,
        errPct: d.traffic.rates.httpPercentErr,
        denied: d.traffic.rates.httpDenied,
        p95: d.responseTime,
        responses: d.traffic.responses,
        health: health(s),
        requests: s.total,
      };
    });
    const inbound = new Map();
    const outbound = new Map();
    for (const e of edges) {
      inbound.set(e.target, addResponses(inbound.get(e.target) || {}, e.responses));
      outbound.set(e.source, addResponses(outbound.get(e.source) || {}, e.responses));
    }
    const many = new Set(nodes.filter((n) => n.nodeType !== "unknown").map((n) => n.namespace)).size > 1;
    for (const n of nodes) {
      n.name = nodeName(n);
      n.health = health(shares(inbound.get(n.id) || outbound.get(n.id)));
      n.label = n.nodeType === "unknown" ? "unknown\n(outside the mesh)" : many ? `${n.name}\n${n.namespace}` : n.name;
    }
    const byId = new Map(nodes.map((n) => [n.id, n]));
    return { nodes, edges, byId, namespaces: [...new Set(nodes.map((n) => n.namespace).filter((ns) => MC.known(ns)))].sort() };
  }

  // -- positions -------------------------------------------------------------------------------

  function stored() {
    try {
      return JSON.parse(localStorage.getItem(POSITIONS)) || {};
    } catch (err) {
      return {};
    }
  }

  function savePositions() {
    if (!cy) return;
    const all = stored();
    const mine = (all[view] = all[view] || {});
    cy.nodes().forEach((n) => {
      const p = n.position();
      mine[n.id()] = { x: Math.round(p.x), y: Math.round(p.y) };
    });
    try {
      localStorage.setItem(POSITIONS, JSON.stringify(all));
    } catch (err) {
      /* storage full or off: positions last as long as the page */
    }
  }

  const LAYOUT = { name: "dagre", rankDir: "LR", nodeSep: 100, rankSep: 230, edgeSep: 40, padding: 40, animate: false, fit: false };

  /** Place the nodes of `fresh` (a cy collection): where the dagre layout of the whole graph
   * puts them relative to a neighbour that already has a place, kept clear of other nodes. */
  function place(fresh) {
    if (!fresh.length) return;
    const settled = cy.nodes().not(fresh);
    if (!settled.length) {
      cy.layout({ ...LAYOUT }).run();
      return;
    }
    const dag = {};
    cy.layout({
      ...LAYOUT,
      transform: (node, p) => {
        dag[node.id()] = p;
        return node.position();
      },
    }).run();
    const bb = settled.boundingBox();
    const loose = [];
    fresh.forEach((node) => {
      const anchor = node.neighborhood("node").filter((n) => !fresh.contains(n))[0];
      if (anchor) {
        const a = anchor.position();
        const d = dag[anchor.id()];
        node.position({ x: a.x + dag[node.id()].x - d.x, y: a.y + dag[node.id()].y - d.y });
      } else loose.push(node);
    });
    if (loose.length) {
      const minX = Math.min(...loose.map((n) => dag[n.id()].x));
      const minY = Math.min(...loose.map((n) => dag[n.id()].y));
      for (const n of loose) n.position({ x: bb.x1 + dag[n.id()].x - minX, y: bb.y2 + 110 + dag[n.id()].y - minY });
    }
    // nudge each new node down until it overlaps no other node
    const taken = settled.map((n) => n.position());
    fresh.forEach((node) => {
      const p = { ...node.position() };
      while (taken.some((q) => Math.abs(q.x - p.x) < 70 && Math.abs(q.y - p.y) < 70)) p.y += 80;
      node.position(p);
      taken.push(p);
    });
  }

  // -- drawing ---------------------------------------------------------------------------------

  function style() {
    const text = css("--text");
    const surface = css("--surface");
    const font = getComputedStyle(document.body).fontFamily;
    return [
      {
        selector: "node",
        style: {
          label: "data(label)",
          "font-family": font,
          "font-size": 13,
          color: text,
          "text-wrap": "wrap",
          "text-valign": "bottom",
          "text-margin-y": 6,
          "text-background-color": surface,
          "text-background-opacity": 0.85,
          "text-background-padding": 2,
          "text-background-shape": "round-rectangle",
          "background-color": surface,
          "border-width": 3,
          "border-color": css("--healthy"),
          width: 36,
          height: 36,
          "min-zoomed-font-size": 6,
        },
      },
      { selector: "node[nodeType = 'workload']", style: { shape: "ellipse" } },
      { selector: "node[nodeType = 'app']", style: { shape: "round-rectangle" } },
      { selector: "node[nodeType = 'service']", style: { shape: "round-triangle", width: 40, height: 38 } },
      { selector: "node[nodeType = 'unknown']", style: { shape: "ellipse", "border-style": "dashed", "border-color": css("--idle") } },
      { selector: "node[health = 'degraded']", style: { "border-color": css("--degraded"), "border-width": 5 } },
      { selector: "node[health = 'failure']", style: { "border-color": css("--failure"), "border-width": 7, "border-style": "double" } },
      { selector: "node[health = 'idle'][nodeType != 'unknown']", style: { "border-color": css("--idle") } },
      {
        selector: "edge",
        style: {
          width: 2,
          "curve-style": "bezier",
          "line-color": css("--muted"),
          "target-arrow-color": css("--muted"),
          "target-arrow-shape": "triangle",
          "arrow-scale": 1.1,
          label: "data(label)",
          "font-family": font,
          "font-size": 11,
          color: text,
          "text-wrap": "wrap",
          "text-background-color": surface,
          "text-background-opacity": 0.92,
          "text-background-padding": 3,
          "text-background-shape": "round-rectangle",
          "text-border-width": 1,
          "text-border-color": css("--border"),
          "text-border-opacity": 1,
          "min-zoomed-font-size": 7,
          "text-events": "yes", // a click on the label selects the edge
        },
      },
      { selector: "edge[health = 'degraded']", style: { "line-color": css("--degraded"), "target-arrow-color": css("--degraded"), width: 3 } },
      { selector: "edge[health = 'failure']", style: { "line-color": css("--failure"), "target-arrow-color": css("--failure"), width: 3, "line-style": "dashed" } },
      { selector: "edge[denied > 0]", style: { "text-border-color": css("--denied"), "text-border-width": 2 } },
      { selector: ":selected", style: { "overlay-color": css("--accent"), "overlay-opacity": 0.18, "overlay-padding": 6 } },
    ];
  }

  function elementsOf(m) {
    const mode = labels.value;
    return {
      nodes: m.nodes.map((n) => ({ group: "nodes", data: n })),
      edges: m.edges.map((e) => ({ group: "edges", data: { ...e, label: edgeLabel(e, mode) } })),
    };
  }

  let size = { w: cyEl.clientWidth, h: cyEl.clientHeight };
  let reveal = null;

  function inView(eles, w, h) {
    const bb = eles.renderedBoundingBox();
    return bb.x1 >= 0 && bb.y1 >= 0 && bb.x2 <= w && bb.y2 <= h;
  }

  function capZoom() {
    if (cy.zoom() > 1.25) cy.zoom({ level: 1.25, renderedPosition: { x: cyEl.clientWidth / 2, y: cyEl.clientHeight / 2 } });
  }

  /** The panel opened or closed, or the window changed: keep the view's centre where it was and,
   * when the whole graph was in view, keep it in view. */
  function resized() {
    if (!cy) return;
    const w = cyEl.clientWidth;
    const h = cyEl.clientHeight;
    const whole = cy.elements().length > 0 && inView(cy.elements(), size.w, size.h);
    cy.resize();
    cy.panBy({ x: (w - size.w) / 2, y: (h - size.h) / 2 });
    size = { w, h };
    if (whole && !inView(cy.elements(), w, h)) {
      cy.fit(undefined, 40);
      capZoom();
    }
    if (reveal && !inView(reveal, w, h)) cy.center(reveal);
    reveal = null;
  }

  function draw(m) {
    const els = elementsOf(m);
    const saved = stored()[view] || {};
    if (!cy) {
      cy = cytoscape({
        container: cyEl,
        elements: [],
        style: style(),
        minZoom: 0.02,
        maxZoom: 3,
        boxSelectionEnabled: false,
      });
      window.cy = cy;
      new ResizeObserver(resized).observe(cyEl);
      cy.on("dragfree", "node", savePositions);
      cy.on("tap", "edge", (event) => select(event.target.id(), "edge"));
      cy.on("tap", "node", (event) => select(event.target.id(), "node"));
      cy.on("tap", (event) => {
        if (event.target === cy) closePanel();
      });
    }
    const fresh = [];
    cy.batch(() => {
      const wanted = new Set([...els.nodes, ...els.edges].map((e) => e.data.id));
      cy.elements().forEach((e) => {
        if (!wanted.has(e.id())) cy.remove(e);
      });
      for (const item of els.nodes) {
        const node = cy.getElementById(item.data.id);
        if (node.length) node.data(item.data);
        else {
          const p = saved[item.data.id];
          const added = cy.add({ ...item, position: p ? { ...p } : { x: 0, y: 0 } });
          if (!p) fresh.push(added);
        }
      }
      for (const item of els.edges) {
        const edge = cy.getElementById(item.data.id);
        if (edge.length) edge.data(item.data);
        else cy.add(item);
      }
    });
    const first = loads === 0;
    if (fresh.length) {
      place(cy.collection(fresh));
      savePositions();
    }
    if (first || (fresh.length && fresh.length === cy.nodes().length)) {
      cy.fit(undefined, 40);
      capZoom();
    }
  }

  // -- the table and the side panel ------------------------------------------------------------

  function nodeCell(id) {
    const n = graph.byId.get(id);
    if (!n) return id;
    if (n.nodeType === "unknown") return el("span", { class: "peer unknown" }, "outside the mesh");
    return el("span", { class: "peer" }, n.name, MC.known(n.namespace) ? el("span", { class: "ns" }, ` · ${n.namespace}`) : null);
  }

  function healthCell(h) {
    return el("span", {}, el("i", { class: `health-dot ${h}`, "aria-hidden": "true" }), HEALTH_TEXT[h]);
  }

  function responsesText(responses) {
    return Object.entries(responses)
      .map(([code, n]) => `${code === "0" ? "no answer" : code}: ${MC.count(n)}`)
      .join(", ");
  }

  function renderTable() {
    if (!graph.edges.length) {
      replace(edgesEl, el("p", { class: "status" }, "No edges."));
      return;
    }
    const columns = [
      { key: "source", label: "Source", render: (e) => nodeCell(e.source), value: (e) => graph.byId.get(e.source)?.name || e.source },
      { key: "target", label: "Destination", render: (e) => nodeCell(e.target), value: (e) => graph.byId.get(e.target)?.name || e.target },
      { key: "protocol", label: "Protocol" },
      { key: "rate", label: "Requests/s", num: true, render: (e) => MC.rate(e.rate) },
      { key: "errPct", label: "Errors", num: true, render: (e) => MC.pct(e.errPct) },
      { key: "p95", label: "p95", num: true, render: (e) => MC.ms(e.p95) },
      { key: "denied", label: "Denied/s", num: true, render: (e) => MC.rate(e.denied) },
      { key: "responses", label: "Responses", sortable: false, render: (e) => responsesText(e.responses) },
      { key: "health", label: "Health", render: (e) => healthCell(e.health), value: (e) => ["failure", "degraded", "healthy", "idle"].indexOf(e.health) },
      {
        key: "details",
        label: "",
        sortable: false,
        render: (e) => el("button", { type: "button", class: "small", onclick: () => select(e.id, "edge", true), "aria-label": `Details and transactions of ${e.id}` }, "Details"),
      },
    ];
    replace(
      edgesEl,
      MC.table({
        columns,
        rows: graph.edges,
        sort: tableSort,
        onsort: (s) => (tableSort = s),
        caption: "Edges of the graph",
        rowAttrs: (e) => ({ dataset: { edgeId: e.id, source: e.source, target: e.target }, class: selection && selection.id === e.id ? "selected" : null }),
      }),
    );
  }

  function closePanel() {
    selection = null;
    panel.hidden = true;
    if (cy) cy.elements().unselect();
    for (const tr of edgesEl.querySelectorAll("tr.selected")) tr.classList.remove("selected");
  }

  function transactionsRange() {
    const s = MC.seconds(duration.value);
    for (const r of ["15m", "1h", "6h", "24h"]) if (MC.seconds(r) >= s) return r;
    return "7d";
  }

  function targetName(n) {
    if (n.nodeType === "service") return n.service;
    if (n.nodeType === "app") return n.app;
    return n.workload;
  }

  async function recentTransactions(edge, list) {
    const target = graph.byId.get(edge.target);
    if (!target || target.nodeType === "unknown") {
      replace(list, el("p", { class: "hint" }, "Calls that left the mesh are not searchable by destination."));
      return;
    }
    const since = new Date(Date.now() - MC.seconds(duration.value) * 1000).toISOString();
    let body;
    try {
      body = await MC.api("transactions", { service: targetName(target), namespace: target.namespace, since, limit: 40 });
    } catch (err) {
      replace(list, MC.failure("its transactions", err));
      return;
    }
    // keep the transactions with a call on this very edge (one look at each, in parallel)
    const kind = graphType;
    const checks = await Promise.all(
      body.transactions.map((t) =>
        MC.api(`transactions/${encodeURIComponent(t.id)}`)
          .then((detail) => detail.hops.some((h) => nodeIdOf(h.destination, "destination", kind) === edge.target && [edge.source, null].includes(nodeIdOf(h.source, "source", kind))))
          .catch(() => false),
      ),
    );
    const found = body.transactions.filter((_, i) => checks[i]).slice(0, 15);
    if (!found.length) {
      replace(
        list,
        el(
          "p",
          { class: "hint" },
          `No stored transaction has a call on this edge in the last ${MC.windowText(duration.value)}. Calls without a correlation key (x-transaction-id, traceparent, x-b3-traceid, x-request-id) count in the graph but are not transactions.`,
        ),
      );
      return;
    }
    replace(
      list,
      el(
        "ul",
        { class: "txn-list" },
        found.map((t) => el("li", {}, el("a", { href: MC.transactionUrl(t.id) }, MC.time(t.start)), " ", MC.ms(t.duration_ms), " ", MC.outcome(t), el("div", { class: "id" }, el("small", {}, t.id)))),
      ),
      el(
        "a",
        { href: `/ui/transactions?service=${encodeURIComponent(targetName(target))}&namespace=${encodeURIComponent(target.namespace)}&range=${transactionsRange()}` },
        "Search all transactions to it →",
      ),
    );
  }

  function select(id, what, fromTable) {
    const item = what === "edge" ? graph.edges.find((e) => e.id === id) : graph.byId.get(id);
    if (!item) return;
    selection = { id, what };
    if (cy) {
      cy.elements().unselect();
      const ele = cy.getElementById(id);
      ele.select();
      if (fromTable) {
        if (panel.hidden) reveal = ele; // once the panel has made room
        else if (!inView(ele, cyEl.clientWidth, cyEl.clientHeight)) cy.center(ele);
      }
    }
    for (const tr of edgesEl.querySelectorAll("tr[data-edge-id]")) tr.classList.toggle("selected", tr.dataset.edgeId === id);
    const close = el("button", { type: "button", "aria-label": "Close the details", onclick: closePanel }, "×");
    if (what === "edge") {
      const list = el("div", { class: "txns" }, el("p", { class: "loading" }, "Looking for its transactions…"));
      replace(
        panel,
        el("h2", {}, el("span", {}, nodeCell(item.source), el("span", { class: "arrow" }, " → "), nodeCell(item.target)), close),
        el(
          "dl",
          {},
          [
            ["Protocol", item.protocol],
            ["Requests", `${MC.rate(item.rate)} (${MC.count(item.requests)} in ${MC.windowText(duration.value)})`],
            ["Errors", MC.pct(item.errPct)],
            ["p95", MC.ms(item.p95)],
            ["Denied", MC.rate(item.denied)],
            ["Responses", responsesText(item.responses)],
            ["Health", healthCell(item.health)],
          ].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
        ),
        el("h3", {}, "Recent transactions on this edge"),
        list,
      );
      recentTransactions(item, list);
    } else {
      const links = [];
      const name = targetName(item);
      if (item.nodeType !== "unknown") {
        links.push(el("li", {}, el("a", { href: `/ui/transactions?service=${encodeURIComponent(name)}&namespace=${encodeURIComponent(item.namespace)}&range=${transactionsRange()}` }, "Its transactions")));
        const svc = item.nodeType === "service" ? item.service : item.app;
        if (svc) links.push(el("li", {}, el("a", { href: MC.serviceUrl(item.namespace, svc) }, item.nodeType === "service" ? "RED charts by version" : `RED charts of the service ${svc}`)));
        if (item.nodeType === "workload") links.push(el("li", {}, el("a", { href: `/ui/decisions?service=${encodeURIComponent(item.workload)}` }, "Decisions about calls to it")));
      }
      const fields = ["nodeType", "namespace", "workload", "app", "version", "service"].filter((k) => item[k]);
      replace(
        panel,
        el("h2", {}, el("span", {}, item.nodeType === "unknown" ? "Outside the mesh" : item.name), close),
        el("dl", {}, fields.flatMap((k) => [el("dt", {}, k), el("dd", {}, item[k])]), el("dt", {}, "health"), el("dd", {}, healthCell(item.health))),
        links.length ? el("ul", {}, links) : el("p", { class: "hint" }, "Callers the proxies could not identify: traffic from outside the mesh, or from proxies that do not report."),
      );
    }
    panel.hidden = false;
  }

  // -- loading ---------------------------------------------------------------------------------

  function params() {
    return { graphType: type.value, namespaces: namespacesInput.value.split(",").map((s) => s.trim()).filter(Boolean).join(","), duration: duration.value };
  }

  async function load() {
    if (loading) return loading;
    loading = (async () => {
      const p = params();
      MC.setParams({ graphType: p.graphType === "workload" ? "" : p.graphType, namespaces: p.namespaces, duration: p.duration === "10m" ? "" : p.duration, labels: labels.value === "all" ? "" : labels.value, refresh: refresh.value === "15" ? "" : refresh.value });
      let body;
      try {
        body = await MC.api("graph", p);
      } catch (err) {
        if (graph) status.textContent = `Refreshing failed (${err.message}); showing the graph of ${MC.local(loadedAt, { ms: false })}.`;
        else {
          status.textContent = "";
          overlay.hidden = false;
          replace(overlay, MC.failure("the graph", err));
          cyEl.dataset.state = "error";
        }
        return;
      }
      const key = `${p.graphType}|${p.namespaces.split(",").filter(Boolean).sort().join(",")}`;
      if (view !== key) {
        if (cy) cy.elements().remove();
        graphType = p.graphType;
        view = key;
        loads = 0;
      }
      graph = model(body);
      loadedAt = new Date();
      replace(nsList, graph.namespaces.map((ns) => el("option", { value: ns })));
      draw(graph);
      loads += 1;
      renderTable();
      if (selection && !(selection.what === "edge" ? graph.edges.some((e) => e.id === selection.id) : graph.byId.has(selection.id))) closePanel();
      else if (selection && cy) cy.getElementById(selection.id).select();
      const where = p.namespaces ? ` in ${p.namespaces.split(",").join(", ")}` : "";
      if (!graph.nodes.length) {
        overlay.hidden = false;
        replace(
          overlay,
          MC.notice(
            "empty",
            `No traffic${where} in the last ${MC.windowText(p.duration)}.`,
            "The graph is drawn from the calls mixerd recorded: Mixer Reports and Envoy access-log entries that a rule sends to the console adapter " +
              "(the embedded default config's record-hops rule does). Widen the window, clear the namespace filter, or send traffic.",
          ),
        );
      } else overlay.hidden = true;
      const small = cy && graph.edges.length && cy.zoom() * 11 < 7 ? " · zoom in (wheel, pinch) to read the labels" : "";
      status.textContent = `${graph.nodes.length} nodes, ${graph.edges.length} edges${where}, last ${MC.windowText(p.duration)} · updated ${MC.local(loadedAt, { ms: false })}${small}`;
      cyEl.dataset.state = "ready";
      cyEl.dataset.loads = String(loads);
    })();
    try {
      await loading;
    } finally {
      loading = null;
    }
  }

  function schedule() {
    stopTimer();
    stopTimer = MC.every(Number(refresh.value), load);
  }

  MC.fromParam(type, "graphType");
  MC.fromParam(namespacesInput, "namespaces");
  MC.fromParam(duration, "duration");
  MC.fromParam(labels, "labels");
  MC.fromParam(refresh, "refresh");

  for (const control of [type, duration]) control.addEventListener("change", load);
  namespacesInput.addEventListener("change", load);
  document.getElementById("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  labels.addEventListener("change", () => {
    if (graph) draw(graph);
    MC.setParams({ labels: labels.value === "all" ? "" : labels.value });
  });
  refresh.addEventListener("change", () => {
    schedule();
    MC.setParams({ refresh: refresh.value === "15" ? "" : refresh.value });
  });
  document.getElementById("g-reload").addEventListener("click", load);
  document.getElementById("g-fit").addEventListener("click", () => {
    if (!cy) return;
    cy.fit(undefined, 40);
    capZoom();
  });
  document.getElementById("g-relayout").addEventListener("click", () => {
    if (!cy) return;
    const all = stored();
    delete all[view];
    localStorage.setItem(POSITIONS, JSON.stringify(all));
    cy.layout({ ...LAYOUT }).run();
    cy.fit(undefined, 40);
    capZoom();
    savePositions();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden) closePanel();
  });

  MC.libraries().then(
    () => {
      load();
      schedule();
    },
    (err) => {
      overlay.hidden = false;
      replace(overlay, MC.notice("error", "The graph library did not load.", err.message));
      cyEl.dataset.state = "error";
    },
  );
})();
