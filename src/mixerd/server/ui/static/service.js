// /ui/services/{namespace}/{service}: RED charts of GET /api/v1/services/{ns}/{svc}/metrics with
// one series per version (uPlot), for comparing a canary with the stable version, and the
// versions' share of the traffic over the window.
"use strict";

(function () {
  const { el, replace } = MC;
  const { namespace, service } = MC.page;
  const charts = document.getElementById("charts");
  const split = document.getElementById("split");
  const status = document.getElementById("status");
  const durationSelect = document.getElementById("s-duration");
  // Okabe-Ito: blue, orange, bluish green, reddish purple, sky blue, vermillion, yellow, black
  const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];
  const plots = [];
  let stopTimer = () => {};

  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const colour = (i) => PALETTE[i % PALETTE.length];

  function peak(values) {
    const v = values.filter((x) => x !== null);
    return v.length ? Math.max(...v) : null;
  }

  function renderSplit(body, versions) {
    const rows = versions.map((v, i) => {
      const s = body.versions[v];
      const requests = s.requests.reduce((a, b) => a + b, 0);
      const errors = s.errors.reduce((a, b) => a + b, 0);
      return { version: v, i, requests, errors, errPct: requests ? (100 * errors) / requests : null, p95: peak(s.p95), p99: peak(s.p99) };
    });
    const total = rows.reduce((a, r) => a + r.requests, 0);
    for (const r of rows) r.share = total ? (100 * r.requests) / total : 0;
    const bar = el(
      "div",
      { class: "split-bar", role: "img", "aria-label": rows.map((r) => `${r.version} ${MC.pct(r.share)}`).join(", ") },
      rows.map((r) => el("span", { style: { width: `${r.share}%`, background: colour(r.i) }, title: `${r.version}: ${MC.count(r.requests)} requests, ${MC.pct(r.share)}` }, r.share >= 8 ? `${r.version} ${MC.pct(r.share)}` : "")),
    );
    const table = MC.table({
      columns: [
        { key: "version", label: "Version", render: (r) => el("span", {}, el("i", { class: "vkey", style: { background: colour(r.i) } }), r.version) },
        { key: "requests", label: "Requests", num: true, render: (r) => MC.count(r.requests) },
        { key: "share", label: "Share", num: true, render: (r) => MC.pct(r.share) },
        { key: "errors", label: "Errors", num: true, render: (r) => MC.count(r.errors) },
        { key: "errPct", label: "Error %", num: true, render: (r) => MC.pct(r.errPct) },
        { key: "p95", label: "Highest p95", num: true, render: (r) => MC.ms(r.p95) },
        { key: "p99", label: "Highest p99", num: true, render: (r) => MC.ms(r.p99) },
      ],
      rows,
      sort: { key: "version", descending: false },
      caption: "Traffic by version",
      rowAttrs: (r) => ({ dataset: { version: r.version } }),
    });
    replace(split, bar, table);
  }

  function chart(figure, body, versions, pick, format, withTotal) {
    const times = body.timestamps.map((ts) => Date.parse(ts) / 1000);
    const series = [{}];
    const data = [times];
    versions.forEach((v, i) => {
      series.push({ label: v, stroke: colour(i), width: 2, points: { show: times.length < 40, size: 5 }, value: (u, x) => format(x) });
      data.push(pick(body.versions[v]));
    });
    if (withTotal && versions.length > 1) {
      series.push({ label: "all versions", stroke: css("--muted"), width: 1.5, dash: [6, 4], points: { show: false }, value: (u, x) => format(x) });
      data.push(pick(body.total));
    }
    const span = times.length > 1 ? times[times.length - 1] - times[0] : 0;
    const pad2 = (n) => String(n).padStart(2, "0");
    const clock = (d, seconds) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}${seconds ? `:${pad2(d.getSeconds())}` : ""}`;
    const tick = (ts) => {
      const d = new Date(ts * 1000);
      return span > 86400 ? `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${clock(d)}` : clock(d, body.step_s < 60);
    };
    series[0] = { value: (u, ts) => (ts === null ? "—" : MC.local(new Date(ts * 1000), { ms: false })) };
    const axis = { stroke: css("--muted"), grid: { stroke: css("--border"), width: 1 }, ticks: { stroke: css("--border"), width: 1 }, font: `12px ${getComputedStyle(document.body).fontFamily}` };
    const opts = {
      width: Math.max(figure.clientWidth - 28, 200),
      height: 220,
      series,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{ ...axis, values: (u, ticks) => ticks.map(tick) }, { ...axis, size: 64, values: (u, ticks) => ticks.map(format) }],
      cursor: { sync: { key: "red" } },
      legend: { live: true },
    };
    const old = figure.querySelector(".uplot");
    if (old) old.remove();
    const plot = new uPlot(opts, data, figure);
    plots.push({ plot, figure });
  }

  async function load() {
    const duration = durationSelect.value;
    MC.setParams({ duration: duration === "1h" ? "" : duration });
    let body;
    try {
      body = await MC.api(`services/${encodeURIComponent(namespace)}/${encodeURIComponent(service)}/metrics`, { duration });
    } catch (err) {
      replace(split, MC.failure(`the metrics of ${service}`, err));
      charts.hidden = true;
      charts.dataset.state = "error";
      return;
    }
    const versions = Object.keys(body.versions);
    plots.length = 0;
    if (!versions.length) {
      charts.hidden = true;
      replace(
        split,
        MC.notice(
          "empty",
          `No requests to ${service} in ${namespace} in the last ${MC.windowText(duration)}.`,
          "The service is matched by its host (such as ",
          el("code", {}, `${service}.${namespace}.svc.cluster.local`),
          ") or its short name, from the calls the console recorded (reported by the callee's proxy, else the caller's). " +
            "Versions come from the destination's version label. Widen the window, or check the name in the graph's service view.",
        ),
      );
      status.textContent = "";
      charts.dataset.state = "empty";
      return;
    }
    charts.hidden = false;
    renderSplit(body, versions);
    chart(document.getElementById("c-rate"), body, versions, (s) => s.request_rate, MC.rate, true);
    chart(document.getElementById("c-err"), body, versions, (s) => s.error_percent, MC.pct, false);
    chart(document.getElementById("c-p50"), body, versions, (s) => s.p50, MC.ms, false);
    chart(document.getElementById("c-p95"), body, versions, (s) => s.p95, MC.ms, false);
    chart(document.getElementById("c-p99"), body, versions, (s) => s.p99, MC.ms, false);
    status.textContent = `${versions.length} version${versions.length === 1 ? "" : "s"} (${versions.join(", ")}) over the last ${MC.windowText(duration)}, one point per ${MC.windowText(`${Math.round(body.step_s)}s`)} · updated ${MC.local(new Date(), { ms: false })}`;
    charts.dataset.state = "ready";
    charts.dataset.versions = versions.join(",");
  }

  new ResizeObserver(() => {
    for (const { plot, figure } of plots) plot.setSize({ width: Math.max(figure.clientWidth - 28, 200), height: 220 });
  }).observe(charts);

  MC.fromParam(durationSelect, "duration");
  durationSelect.addEventListener("change", load);
  document.getElementById("s-reload").addEventListener("click", load);
  document.getElementById("controls").addEventListener("submit", (event) => event.preventDefault());
  MC.libraries().then(
    () => {
      load();
      stopTimer = MC.every(30, load);
    },
    (err) => {
      replace(split, MC.notice("error", "The chart library did not load.", err.message));
      charts.dataset.state = "error";
    },
  );
  window.addEventListener("pagehide", () => stopTimer());
})();
