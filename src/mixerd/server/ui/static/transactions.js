// /ui/transactions: search transactions (GET /api/v1/transactions), newest first; an id goes
// straight to its waterfall (GET /api/v1/transactions/{id}).
"use strict";

(function () {
  const { el, replace } = MC;
  const form = document.getElementById("search");
  const results = document.getElementById("results");
  const status = document.getElementById("status");
  const range = document.getElementById("f-range");
  const customs = [...form.querySelectorAll(".custom-range")];
  const fields = ["id", "service", "namespace", "status", "min_duration_ms", "range", "since", "until", "limit"];

  function showCustom() {
    for (const label of customs) label.hidden = range.value !== "custom";
  }

  /** The id a user pasted: a whole traceparent header counts as its trace id. */
  function normalizeId(text) {
    const value = text.trim();
    const m = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/i.exec(value);
    return m ? m[1].toLowerCase() : value;
  }

  function localToIso(value) {
    return value ? new Date(value).toISOString() : "";
  }

  function query() {
    const data = new FormData(form);
    const params = {
      service: data.get("service").trim(),
      namespace: data.get("namespace").trim(),
      status: data.get("status"),
      min_duration_ms: data.get("min_duration_ms"),
      limit: data.get("limit"),
    };
    if (range.value === "custom") {
      params.since = localToIso(data.get("since"));
      params.until = localToIso(data.get("until"));
    } else if (range.value !== "all") {
      params.since = new Date(Date.now() - MC.seconds(range.value) * 1000).toISOString();
    }
    return params;
  }

  function rangeText() {
    if (range.value === "all") return "everything kept";
    if (range.value === "custom") return "the chosen range";
    return `the last ${MC.windowText(range.value)}`;
  }

  function saveState() {
    const data = new FormData(form);
    const values = {};
    for (const name of fields) values[name] = (data.get(name) || "").trim();
    if (values.range === "1h") values.range = "";
    if (values.limit === "100") values.limit = "";
    if (range.value !== "custom") values.since = values.until = "";
    MC.setParams(values);
  }

  async function openId(id) {
    status.textContent = `Looking up ${id}…`;
    try {
      await MC.api(`transactions/${encodeURIComponent(id)}`);
    } catch (err) {
      status.textContent = "";
      if (err.status === 404) {
        replace(
          results,
          MC.notice(
            "empty",
            `No transaction with the key “${id}”.`,
            "The console finds a transaction by its correlation key: x-transaction-id, else the traceparent trace id, x-b3-traceid, then x-request-id " +
              "(the order --console-transaction-headers sets). A request id or trace id finds it only when it is the key. " +
              "Search by service and time below instead, or check the retention (--console-retention).",
          ),
        );
      } else {
        replace(results, MC.failure("the transaction", err));
      }
      return;
    }
    location.assign(MC.transactionUrl(id));
  }

  function row(t) {
    const url = MC.transactionUrl(t.id);
    const services = t.services.map(MC.shortHost);
    return el(
      "tr",
      {
        dataset: { id: t.id },
        onclick: (event) => {
          if (!event.target.closest("a") && !getSelection().toString()) location.assign(url);
        },
        style: { cursor: "pointer" },
      },
      el("td", { class: "time" }, el("a", { href: url, tabindex: "-1" }, MC.time(t.start))),
      el("td", { class: "num" }, MC.ms(t.duration_ms)),
      el("td", {}, MC.peer({ namespace: t.root.namespace, workload: t.root.workload, service: t.root.service })),
      el("td", { class: "services-list", title: services.join(", ") }, services.length > 6 ? `${services.slice(0, 6).join(", ")} +${services.length - 6}` : services.join(", ")),
      el("td", { class: "num" }, String(t.hops)),
      el("td", {}, MC.outcome(t)),
      el("td", { class: "id" }, el("a", { href: url, title: t.id }, t.id)),
    );
  }

  async function search() {
    const params = query();
    const filtered = params.service || params.namespace || params.status || params.min_duration_ms;
    status.textContent = "Searching…";
    let body;
    try {
      body = await MC.api("transactions", params);
    } catch (err) {
      status.textContent = "";
      replace(results, MC.failure("transactions", err));
      results.dataset.state = "error";
      return;
    }
    const list = body.transactions;
    results.dataset.state = "ready";
    if (!list.length) {
      status.textContent = "";
      replace(
        results,
        filtered
          ? MC.notice("empty", `No transaction in ${rangeText()} matches these filters.`, "Widen the time range or clear a filter.")
          : MC.notice(
              "empty",
              `No transactions recorded in ${rangeText()}.`,
              "Calls appear here when proxies report them to mixerd (Mixer Report or Envoy's access-log service) through a rule that feeds the console adapter; " +
                "the embedded default config's record-hops rule does. Try: ",
              el("code", {}, "mixerd report -a request.time=now -a response.code=200 -a 'request.headers[x-transaction-id]=demo-1'"),
            ),
      );
      return;
    }
    const limit = Number(params.limit);
    status.textContent =
      list.length >= limit ? `The newest ${list.length} transactions in ${rangeText()}; there are more: narrow the search or show more.` : `${list.length} transaction${list.length === 1 ? "" : "s"} in ${rangeText()}, newest first.`;
    replace(
      results,
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          {},
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              ["Started", "Duration", "Entered at", "Services", "Calls", "Status", "Transaction id"].map((h, i) => el("th", { scope: "col", class: i === 1 || i === 4 ? "num" : null }, h)),
            ),
          ),
          el("tbody", {}, list.map(row)),
        ),
      ),
    );
  }

  for (const name of fields) {
    const control = form.elements[name];
    if (!control) continue;
    const value = MC.params().get(name);
    if (value === null) continue;
    if (name === "since" || name === "until") {
      const d = new Date(value);
      if (!Number.isNaN(d.getTime())) control.value = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
    } else MC.fromParam(control, name);
  }
  showCustom();
  range.addEventListener("change", showCustom);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveState();
    const id = normalizeId(form.elements.id.value);
    if (id) openId(id);
    else search();
  });
  form.addEventListener("reset", () => {
    setTimeout(() => {
      showCustom();
      saveState();
      search();
    });
  });
  for (const name of ["status", "range", "limit"]) {
    form.elements[name].addEventListener("change", () => {
      if (name === "range" && range.value === "custom") return;
      saveState();
      search();
    });
  }

  const id = normalizeId(form.elements.id.value);
  if (id) openId(id);
  else search();
})();
