// coral-ebpf web view: fetches the /api JSON (the same the CLI prints) and draws it. No dependencies.
"use strict";
(function () {
  const main = document.getElementById("app");
  const BASE = main.dataset.base;
  const PAGE = main.dataset.page;
  const ARG = main.dataset.arg;
  const params = new URLSearchParams(location.search);
  const WINDOW = params.get("window") || "1h";
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // The CLI's format_ms, so a page and `coral-ebpf query` print the same text.
  function ms(value) {
    if (value === null || value === undefined) return "-";
    if (value >= 1000) return (value / 1000).toFixed(2) + "s";
    if (value >= 100) return value.toFixed(0) + "ms";
    return value >= 1 ? value.toFixed(1) + "ms" : value.toFixed(2) + "ms";
  }
  // The CLI's format_quantile: an explicit-bucket percentile that is only a bound prints as one.
  function quantile(row, name) {
    const bound = row[`${name}_bound`];
    const edge = row[`${name}_bound_ms`];
    if (bound === "upper" && edge !== null && edge !== undefined) return "≤" + ms(edge);
    if (bound === "lower" && edge !== null && edge !== undefined) return ">" + ms(edge);
    return ms(row[`${name}_ms`]);
  }
  const pct = (ratio) => (ratio * 100).toFixed(2) + "%";
  const rate = (value) => value.toFixed(2);
  const clock = (unix) => new Date(unix * 1000).toLocaleTimeString([], { hour12: false });

  async function api(path) {
    const response = await fetch(BASE + path, { credentials: "same-origin" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error + (body.hint ? " — " + body.hint : ""));
    return body;
  }

  function table(headers, rows, attrs) {
    return el(
      "div",
      { class: "scroll" },
      el(
        "table",
        attrs || {},
        el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
        el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c)))))
      )
    );
  }

  function windowPicker() {
    const select = el("select", { id: "window", "aria-label": "window" });
    for (const choice of ["5m", "15m", "1h", "6h", "1d"]) {
      const option = el("option", { value: choice }, "last " + choice);
      if (choice === WINDOW) option.selected = true;
      select.append(option);
    }
    select.addEventListener("change", () => {
      params.set("window", select.value);
      location.search = params.toString();
    });
    return el("label", { class: "picker" }, "Window ", select);
  }

  // One SVG line chart: `values` (null = no data) over the buckets; the y axis from 0 to the maximum.
  function chart(title, values, format, cls) {
    const width = 320, height = 110, left = 44, bottom = 18, top = 8;
    const present = values.filter((v) => v !== null);
    const max = Math.max(...present, 0) || 1;
    const x = (i) => left + (values.length > 1 ? (i * (width - left - 4)) / (values.length - 1) : 0);
    const y = (v) => top + (height - top - bottom) * (1 - v / max);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", "chart " + (cls || ""));
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title);
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    add("line", { x1: left, y1: y(0), x2: width - 4, y2: y(0), class: "axis" });
    add("text", { x: left - 4, y: y(max) + 4, class: "tick", "text-anchor": "end" }, format(max));
    add("text", { x: left - 4, y: y(0), class: "tick", "text-anchor": "end" }, format(0));
    let path = "";
    values.forEach((v, i) => {
      if (v === null) return;
      path += (path && values[i - 1] !== null ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1);
    });
    if (path) add("path", { d: path, class: "line" });
    values.forEach((v, i) => {
      if (v !== null && (i === 0 || values[i - 1] === null) && (i === values.length - 1 || values[i + 1] === null)) {
        add("circle", { cx: x(i), cy: y(v), r: 2.5, class: "dot" });
      }
    });
    return el("figure", { class: "chart-box" }, el("figcaption", {}, title), svg);
  }

  function redCharts(buckets) {
    const has = (b) => b.requests > 0;
    return el(
      "div",
      { class: "charts" },
      chart("Requests/s", buckets.map((b) => (has(b) ? b.rate_per_s : null)), rate),
      chart("Errors", buckets.map((b) => (has(b) ? b.errors : null)), (v) => String(Math.round(v)), "errors"),
      chart("p50", buckets.map((b) => b.p50_ms), ms),
      chart("p99", buckets.map((b) => b.p99_ms), ms, "p99")
    );
  }

  function traceLink(id) {
    return el("a", { href: `${BASE}/trace/${id}` }, id.slice(0, 16) + "…");
  }

  function tracesTable(items, id) {
    if (!items.length) return el("p", { class: "empty", id }, "No traces in this window.");
    return table(
      ["Trace", "Root", "Duration", "Spans", "Status", "Started"],
      items.map((t) => [
        traceLink(t.trace_id),
        `${t.root_service}: ${t.root_operation}`,
        ms(t.duration_ms),
        t.span_count,
        t.status === "ERROR" ? el("span", { class: "err" }, "ERROR") : t.status,
        clock(t.start_time),
      ]),
      { id }
    );
  }

  async function servicesPage() {
    const data = await api(`/api/services?window=${encodeURIComponent(WINDOW)}`);
    const rows = data.items.map((s) => [
      el(
        "a",
        { href: `${BASE}/service/${encodeURIComponent(s.service)}?window=${WINDOW}&protocol=${s.protocol || "http"}` },
        s.service
      ),
      s.protocol || "-",
      s.requests,
      rate(s.rate_per_s),
      s.errors ? el("span", { class: "err" }, pct(s.error_rate)) : pct(s.error_rate),
      quantile(s, "p50"),
      quantile(s, "p95"),
      quantile(s, "p99"),
      s.engine || "-",
      s.instances,
    ]);
    return [
      el("header", {}, el("h1", {}, "Services"), windowPicker()),
      data.items.length
        ? table(
            ["Service", "Protocol", "Requests", "Rate/s", "Errors", "P50", "P95", "P99", "Engine", "Instances"],
            rows,
            { id: "services" }
          )
        : el("p", { class: "empty" }, "No service has been seen in this window. Is the agent receiving data?"),
    ];
  }

  async function servicePage() {
    const service = ARG;
    const query = `service=${encodeURIComponent(service)}&window=${encodeURIComponent(WINDOW)}`;
    const protocol = params.get("protocol") === "grpc" ? "grpc" : "http";
    const [red, slow, failed] = await Promise.all([
      api(`/api/red?${query}&protocol=${protocol}`),
      api(`/api/traces?${query}&which=slow`),
      api(`/api/traces?${query}&which=failed`),
    ]);
    const total = red.buckets.reduce((sum, b) => sum + b.requests, 0);
    const errors = red.buckets.reduce((sum, b) => sum + b.errors, 0);
    const parts = [
      el("header", {}, el("h1", {}, `${service} (${protocol === "grpc" ? "gRPC" : "HTTP"})`), windowPicker()),
      el(
        "p",
        { class: "summary", id: "totals" },
        `${total} requests, ${errors} errors in ${red.buckets.length} buckets of ${Math.round(red.by)}s`
      ),
      redCharts(red.buckets),
    ];
    for (const series of red.series) {
      const name = [series.method, series.route].filter((v) => v).join(" ");
      parts.push(el("h2", { class: "route" }, `${name} — ${series.requests} requests`), redCharts(series.buckets));
    }
    parts.push(el("h2", {}, "Slowest traces"), tracesTable(slow.items, "slow"));
    parts.push(el("h2", {}, "Failed traces"), tracesTable(failed.items, "failed"));
    return parts;
  }

  function attributesText(attributes) {
    return Object.entries(attributes).map(([k, v]) => `${k}=${v}`).join("  ");
  }

  async function tracePage() {
    const trace = await api(`/api/trace/${encodeURIComponent(ARG)}`);
    const detail = el("section", { id: "detail", class: "detail" }, el("p", {}, "Select a span for its details."));
    const show = (span) => {
      detail.replaceChildren(
        el("h2", {}, span.name),
        table(
          ["Field", "Value"],
          [
            ["service", span.service],
            ["kind", span.kind],
            ["span id", span.span_id],
            ["parent", span.parent_span_id || "-"],
            ["start offset", ms(span.offset_ms)],
            ["duration", ms(span.duration_ms)],
            ["status", span.status + (span.status_message ? ": " + span.status_message : "")],
            ...Object.entries(span.attributes),
          ],
          { id: "detail-table" }
        )
      );
    };
    const rows = trace.spans.map((span) => {
      const left = trace.duration_ms > 0 ? (100 * span.offset_ms) / trace.duration_ms : 0;
      const width = trace.duration_ms > 0 ? (100 * span.duration_ms) / trace.duration_ms : 100;
      const row = el(
        "div",
        { class: "span" + (span.error ? " error" : ""), tabindex: "0", "data-span": span.span_id },
        el(
          "div",
          { class: "label", style: `padding-left:${span.depth * 14}px` },
          el("span", { class: "name" }, span.name),
          el("span", { class: "svc" }, span.service),
          span.error ? el("span", { class: "err" }, "ERROR") : null,
          el("span", { class: "attrs" }, attributesText(span.attributes))
        ),
        el(
          "div",
          { class: "track" },
          el("div", {
            class: "bar",
            style: `left:${left.toFixed(3)}%;width:${Math.max(width, 0.3).toFixed(3)}%`,
          }),
          el("span", { class: "dur" }, `+${ms(span.offset_ms)} ${ms(span.duration_ms)}`)
        )
      );
      row.addEventListener("click", () => show(span));
      row.addEventListener("keydown", (event) => event.key === "Enter" && show(span));
      return row;
    });
    if (trace.spans.length) show(trace.spans[0]);
    return [
      el("header", {}, el("h1", {}, "Trace"), el("code", { id: "trace-id" }, trace.trace_id)),
      el(
        "p",
        { class: "summary", id: "trace-summary" },
        `${ms(trace.duration_ms)} · ${trace.span_count} spans · ${trace.status} · ${trace.services.join(", ")}`
      ),
      el("div", { class: "waterfall", id: "waterfall" }, rows),
      detail,
    ];
  }

  async function healthPage() {
    const data = await api("/api/status");
    const summary = data.summary;
    const agent = summary.agent || {};
    const parts = Object.entries(summary.parts).map(([name, part]) => [
      name,
      el("span", { class: "state state-" + part.state }, part.state),
      part.reason || "",
    ]);
    const verdicts = Object.entries(summary.probe.verdicts || {}).map(([name, verdict]) => [
      name,
      el("span", { class: verdict === "ok" ? "ok" : "err" }, verdict),
    ]);
    const beyla = summary.beyla || {};
    const diagnosis = beyla.diagnosis || {};
    return [
      el("header", {}, el("h1", {}, "Health")),
      el(
        "p",
        { class: "summary", id: "agent" },
        agent.running
          ? `Agent running: pid ${agent.pid}, version ${agent.version}`
          : `Agent not running: ${agent.error || ""}`
      ),
      el("h2", {}, "Parts"),
      table(["Part", "State", "Reason"], parts, { id: "parts" }),
      el("h2", {}, `Probe verdicts (kernel ${summary.probe.kernel || "?"})`),
      table(["Capability", "Verdict"], verdicts, { id: "verdicts" }),
      el("h2", {}, "Beyla"),
      table(
        ["Field", "Value"],
        [
          ["state", beyla.state || "-"],
          ["reason", beyla.reason || "-"],
          ["pid", beyla.pid || "-"],
          ["version", beyla.version || "-"],
          ["restarts", beyla.restarts ?? "-"],
          ["diagnosis", diagnosis.message || "-"],
          ["fix", diagnosis.fix || "-"],
        ],
        { id: "beyla" }
      ),
      el("p", {}, "RED engine: ", el("strong", { id: "red-engine" }, summary.red_engine || "-")),
    ];
  }

  const pages = { services: servicesPage, service: servicePage, trace: tracePage, health: healthPage };
  pages[PAGE]()
    .then((nodes) => main.replaceChildren(...nodes))
    .catch((error) => main.replaceChildren(el("p", { class: "error", id: "error" }, String(error.message || error))))
    .finally(() => {
      // How long from navigation to a drawn page, for bench/ui.py.
      document.body.setAttribute("data-ready-ms", performance.now().toFixed(1));
      document.body.setAttribute("data-ready", "1");
    });
})();
