// coral-ebpf web view: fetches the /api JSON (the same the CLI prints) and draws it. No dependencies.
"use strict";
(function () {
  const main = document.getElementById("app");
  const BASE = main.dataset.base;
  const PAGE = main.dataset.page;
  const ARG = main.dataset.arg;
  const params = new URLSearchParams(location.search);
  const WINDOW = params.get("window") || "1h";
  // On a colony: answers cover every agent it polls; `agent` narrows the pages to one.
  const FLEET = main.dataset.fleet === "1";
  const AGENT = FLEET ? params.get("agent") || "" : "";
  const SCOPE = AGENT ? "&agent=" + encodeURIComponent(AGENT) : "";
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

  // Python's format rounds an exact tie (18.25 to 1 digit) to even, toFixed away from zero: round
  // ties as the CLI does, so a page and `coral-ebpf query` print the same text.
  function fixed(value, digits) {
    const scaled = value * 10 ** digits;
    const floor = Math.floor(scaled);
    if (scaled - floor === 0.5 && floor % 2 === 0) return (floor / 10 ** digits).toFixed(digits);
    return value.toFixed(digits);
  }

  // The CLI's format_ms.
  function ms(value) {
    if (value === null || value === undefined) return "-";
    if (value >= 1000) return fixed(value / 1000, 2) + "s";
    if (value >= 100) return fixed(value, 0) + "ms";
    return value >= 1 ? fixed(value, 1) + "ms" : fixed(value, 2) + "ms";
  }
  // The CLI's format_quantile: an explicit-bucket percentile that is only a bound prints as one.
  function quantile(row, name) {
    const bound = row[`${name}_bound`];
    const edge = row[`${name}_bound_ms`];
    if (bound === "upper" && edge !== null && edge !== undefined) return "≤" + ms(edge);
    if (bound === "lower" && edge !== null && edge !== undefined) return ">" + ms(edge);
    return ms(row[`${name}_ms`]);
  }
  const pct = (ratio) => fixed(ratio * 100, 2) + "%";
  const rate = (value) => fixed(value, 2);
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

  // The agent filter of a colony's pages: every agent it polls, and "all agents".
  function agentPicker(agents) {
    const select = el("select", { id: "agent", "aria-label": "agent" }, el("option", { value: "" }, "all agents"));
    for (const agent of agents) {
      const option = el("option", { value: agent.agent_id }, agent.agent_id);
      if (agent.agent_id === AGENT) option.selected = true;
      select.append(option);
    }
    select.addEventListener("change", () => {
      if (select.value) params.set("agent", select.value);
      else params.delete("agent");
      location.search = params.toString();
    });
    return el("label", { class: "picker" }, "Agent ", select);
  }

  async function pickers() {
    if (!FLEET) return [windowPicker()];
    const agents = await api("/api/agents");
    return [el("div", { class: "pickers" }, agentPicker(agents.items), " ", windowPicker())];
  }

  // "alpha 55 · beta 20": the agents behind a figure, each with its requests.
  const perAgent = (entries) => entries.map((e) => `${e.agent} ${e.requests}`).join(" · ") || "-";

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
      ["Trace", "Root", "Duration", "Spans", "Status", "Started", ...(FLEET ? ["Agents"] : [])],
      items.map((t) => [
        traceLink(t.trace_id),
        `${t.root_service}: ${t.root_operation}`,
        ms(t.duration_ms),
        t.span_count,
        t.status === "ERROR" ? el("span", { class: "err" }, "ERROR") : t.status,
        clock(t.start_time),
        ...(FLEET ? [t.agents.join(", ")] : []),
      ]),
      { id }
    );
  }

  async function servicesPage() {
    const [data, controls] = await Promise.all([
      api(`/api/services?window=${encodeURIComponent(WINDOW)}${SCOPE}`),
      pickers(),
    ]);
    const rows = data.items.map((s) => [
      el(
        "a",
        {
          href: `${BASE}/service/${encodeURIComponent(s.service)}?window=${WINDOW}&protocol=${s.protocol || "http"}${SCOPE}`,
        },
        s.service
      ),
      s.protocol || "-",
      s.requests,
      rate(s.rate_per_s),
      s.errors ? el("span", { class: "err" }, pct(s.error_rate)) : pct(s.error_rate),
      quantile(s, "p50"),
      quantile(s, "p95"),
      quantile(s, "p99"),
      ...(FLEET ? [] : [s.engine || "-"]),
      s.instances,
      ...(FLEET ? [perAgent(s.agents)] : []),
    ]);
    const headers = ["Service", "Protocol", "Requests", "Rate/s", "Errors", "P50", "P95", "P99"];
    headers.push(...(FLEET ? ["Instances", "Agents"] : ["Engine", "Instances"]));
    const nothing = FLEET
      ? "No service has been seen in this window. Are the agents polled (Health)?"
      : "No service has been seen in this window. Is the agent receiving data?";
    return [
      el("header", {}, el("h1", {}, "Services"), ...controls),
      data.items.length ? table(headers, rows, { id: "services" }) : el("p", { class: "empty" }, nothing),
    ];
  }

  async function servicePage() {
    const service = ARG;
    const query = `service=${encodeURIComponent(service)}&window=${encodeURIComponent(WINDOW)}${SCOPE}`;
    const protocol = params.get("protocol") === "grpc" ? "grpc" : "http";
    const [red, slow, failed, controls] = await Promise.all([
      api(`/api/red?${query}&protocol=${protocol}`),
      api(`/api/traces?${query}&which=slow`),
      api(`/api/traces?${query}&which=failed`),
      pickers(),
    ]);
    const total = red.buckets.reduce((sum, b) => sum + b.requests, 0);
    const errors = red.buckets.reduce((sum, b) => sum + b.errors, 0);
    const parts = [
      el("header", {}, el("h1", {}, `${service} (${protocol === "grpc" ? "gRPC" : "HTTP"})`), ...controls),
      el(
        "p",
        { class: "summary", id: "totals" },
        `${total} requests, ${errors} errors in ${red.buckets.length} buckets of ${Math.round(red.by)}s`
      ),
      redCharts(red.buckets),
    ];
    if (FLEET) {
      parts.push(
        el("h2", {}, "By agent"),
        table(
          ["Agent", "Requests", "Errors", "P50", "P95", "P99"],
          red.by_agent.map((a) => [a.agent, a.requests, a.errors, quantile(a, "p50"), quantile(a, "p95"), quantile(a, "p99")]),
          { id: "by-agent" }
        )
      );
    }
    for (const series of red.series) {
      const name = [series.method, series.route].filter((v) => v).join(" ");
      parts.push(el("h2", { class: "route" }, `${name} — ${series.requests} ${series.requests === 1 ? "request" : "requests"}`), redCharts(series.buckets));
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
            ["agent", span.agent],
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
          el("span", { class: "svc" }, FLEET ? `${span.service} @ ${span.agent}` : span.service),
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
        `${ms(trace.duration_ms)} · ${trace.span_count} ${trace.span_count === 1 ? "span" : "spans"} · ${trace.status} · ${trace.services.join(", ")}`
      ),
      el("div", { class: "waterfall", id: "waterfall" }, rows),
      detail,
    ];
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    return seconds < 120 ? `${Math.round(seconds)}s ago` : `${Math.round(seconds / 60)}m ago`;
  }

  // A colony's health: is it polling, and each agent's state, last seen and lag.
  function colonyHealth(summary) {
    const colony = summary.colony;
    const states = Object.entries(summary.states).map(([state, count]) => `${count} ${state}`).join(", ");
    const rows = summary.agents.map((a) => [
      a.agent_id,
      a.address || "-",
      el("span", { class: "state state-" + (a.state === "up" ? "running" : "failed") }, a.state),
      ago(a.seconds_since_seen),
      a.lag_rows ?? "-",
      a.rows_stored,
      a.open_gaps,
      a.last_error ? `${a.consecutive_failures}x ${a.last_error}` : "",
    ]);
    return [
      el("header", {}, el("h1", {}, "Health")),
      el(
        "p",
        { class: "summary", id: "colony" },
        `Colony ${colony.polling ? "polling" : "not polling"}: pid ${colony.pid}, version ${colony.version}; ` +
          `agents ${states}`
      ),
      el("h2", {}, "Agents"),
      table(["Agent", "Address", "State", "Last seen", "Lag rows", "Rows", "Open gaps", "Error"], rows, {
        id: "agents",
      }),
    ];
  }

  async function healthPage() {
    const data = await api("/api/status");
    const summary = data.summary;
    if (FLEET) return colonyHealth(summary);
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
