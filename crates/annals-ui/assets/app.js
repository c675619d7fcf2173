// Annals admin UI: keeps the server-rendered pages live and sends commands to the HTTP API.
// One server-sent event feed per page (/status/live, or /all/live on the $all tail); every value
// from the server is set as text (textContent), never as HTML.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // ---- messages -------------------------------------------------------------------------
  function say(text, kind) {
    const alerts = $("#alerts");
    if (!alerts) return;
    const p = document.createElement("p");
    p.className = kind === "error" ? "alert" : "notice";
    p.textContent = text;
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "Dismiss";
    close.setAttribute("aria-label", "Dismiss this message");
    close.addEventListener("click", () => p.remove());
    p.appendChild(document.createTextNode(" "));
    p.appendChild(close);
    alerts.appendChild(p);
    while (alerts.children.length > 5) alerts.firstElementChild.remove();
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.message) return body.message;
      if (body && body.error) return body.error;
    } catch (_) { /* not JSON */ }
    return response.status + " " + response.statusText;
  }

  // ---- formatting (as the server's format.rs) --------------------------------------------
  function fmtRate(r) { return (r < 100 ? r.toFixed(1) : r.toFixed(0)) + "/s"; }
  function fmtSeconds(s) {
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function fmtBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n, u = 0;
    while (v >= 1024 && u + 1 < units.length) { v /= 1024; u += 1; }
    return u === 0 ? n + " B" : v.toFixed(1) + " " + units[u];
  }
  function setText(sel, text) {
    const el = typeof sel === "string" ? $(sel) : sel;
    if (el && el.textContent !== String(text)) el.textContent = String(text);
  }

  // ---- commands ---------------------------------------------------------------------------
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-command]");
    if (!button) return;
    const question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      say("Cancelled: nothing was done.", "notice");
      return;
    }
    const label = button.getAttribute("aria-label") || button.textContent.trim();
    button.disabled = true;
    try {
      const response = await fetch(button.getAttribute("data-command"), {
        method: "POST",
        credentials: "same-origin",
      });
      if (response.ok) {
        say(label + ": done.", "notice");
      } else {
        say(label + " failed: " + (await errorText(response)), "error");
      }
    } catch (e) {
      say(label + " failed: the server did not answer (" + e.message + ")", "error");
    } finally {
      button.disabled = false;
    }
  });

  // ---- uptime -----------------------------------------------------------------------------
  const uptime = $("#uptime");
  if (uptime) {
    const started = Number(uptime.getAttribute("data-started"));
    const tick = () => setText(uptime, fmtSeconds(Math.max(0, Date.now() - started) / 1000));
    tick();
    setInterval(tick, 1000);
  }

  // ---- rates chart --------------------------------------------------------------------------
  let chart = null;
  const chartData = [[], [], []];
  const CHART_POINTS = 600;
  function chartWidth(el) { return Math.max(280, el.clientWidth || 600); }
  const chartEl = $("#rates-chart");
  if (chartEl && window.uPlot) {
    try {
      const history = JSON.parse(($("#rates-history") || {}).textContent || "[]");
      for (const [t, w, r] of history) {
        chartData[0].push(t / 1000); chartData[1].push(w); chartData[2].push(r);
      }
    } catch (_) { /* no history */ }
    chart = new window.uPlot({
      width: chartWidth(chartEl),
      height: 200,
      series: [
        {},
        { label: "Appended/s", stroke: "#2563eb", width: 2 },
        { label: "Read/s", stroke: "#16a34a", width: 2 },
      ],
      axes: [{}, { size: 60 }],
    }, chartData, chartEl);
    window.addEventListener("resize", () => chart.setSize({ width: chartWidth(chartEl), height: 200 }));
  }
  function chartPoint(s) {
    if (!chart) return;
    const t = Date.now() / 1000;
    chartData[0].push(t); chartData[1].push(s.appendRate); chartData[2].push(s.readRate);
    for (const series of chartData) while (series.length > CHART_POINTS) series.shift();
    chart.setData(chartData);
  }

  // ---- status feed ------------------------------------------------------------------------
  const CELLS = [
    ["c-kind", (c) => c.kind],
    ["c-name", null],
    ["c-state", (c) => c.state],
    ["c-position", (c) => c.position],
    ["c-lag-events", (c) => c.lagEvents],
    ["c-lag-seconds", (c) => fmtSeconds(c.lagSeconds)],
    ["c-rate", (c) => fmtRate(c.rate)],
    ["c-parked", (c) => c.parked],
    ["c-health", (c) => c.healthReason],
    ["c-error", (c) => c.lastError || ""],
  ];
  function consumerLink(c) {
    if (c.kind === "projection") return "/ui/projections/" + encodeURIComponent(c.name);
    return c.kind === "subscription" ? "/ui/subscriptions" : "/ui/relays";
  }
  function consumerRow(c) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-kind", c.kind);
    tr.setAttribute("data-name", c.name);
    for (const [cls] of CELLS) {
      const td = document.createElement("td");
      td.className = cls;
      if (cls === "c-name") {
        const a = document.createElement("a");
        a.href = consumerLink(c);
        a.textContent = c.name;
        td.appendChild(a);
      }
      tr.appendChild(td);
    }
    return tr;
  }
  function fillRow(tr, c) {
    tr.className = "health-" + c.health;
    for (const [cls, value] of CELLS) {
      if (!value) continue;
      const td = tr.querySelector("." + cls);
      if (td) setText(td, value(c));
    }
    for (const cls of ["c-position", "c-lag-events", "c-lag-seconds", "c-rate", "c-parked"]) {
      const td = tr.querySelector("." + cls);
      if (td) td.classList.add("num");
    }
  }
  function showConsumers(list) {
    const tbody = $("#consumers tbody");
    if (!tbody) return;
    const key = (kind, name) => kind + "\u0000" + name;
    const rows = $$("tr", tbody);
    const same = rows.length === list.length &&
      rows.every((tr, i) => key(tr.getAttribute("data-kind"), tr.getAttribute("data-name")) === key(list[i].kind, list[i].name));
    if (!same) {
      // The set or the order changed: rows are rebuilt (a focused link keeps its place).
      const focused = document.activeElement && tbody.contains(document.activeElement)
        ? document.activeElement.closest("tr") : null;
      const focusKey = focused ? key(focused.getAttribute("data-kind"), focused.getAttribute("data-name")) : null;
      tbody.replaceChildren(...list.map(consumerRow));
      if (focusKey) {
        const again = $$("tr", tbody).find((tr) => key(tr.getAttribute("data-kind"), tr.getAttribute("data-name")) === focusKey);
        const link = again && again.querySelector("a");
        if (link) link.focus();
      }
    }
    $$("tr", tbody).forEach((tr, i) => fillRow(tr, list[i]));
    const none = $("#no-consumers");
    if (none) none.hidden = list.length > 0;
  }
  function showProjection(name, s) {
    const c = (s.consumers || []).find((x) => x.kind === "projection" && x.name === name);
    if (!c) return;
    setText("#state", c.state);
    setText("#position", c.position);
    setText("#lag-events", c.lagEvents);
    setText("#lag-seconds", fmtSeconds(c.lagSeconds));
    setText("#rate", fmtRate(c.rate));
    setText("#parked", c.parked);
    if (c.generation !== undefined && c.generation !== null) setText("#generation", c.generation);
    const err = $("#last-error");
    if (err) { setText(err, c.lastError || ""); err.hidden = !c.lastError; }
    const rebuild = $("#rebuild");
    if (rebuild) {
      const r = c.rebuild;
      rebuild.hidden = !r;
      if (r) {
        const bar = $("#rebuild-progress");
        const total = Math.max(s.head, 1);
        bar.max = total;
        bar.value = Math.min(r.position, total);
        const now = Date.now();
        const prev = showProjection.last;
        let extra = "";
        if (prev && prev.generation === r.generation && now > prev.at) {
          const rate = (r.position - prev.position) / ((now - prev.at) / 1000);
          if (rate > 0) extra = ", " + fmtRate(rate) + ", about " + fmtSeconds((total - r.position) / rate) + " left";
        }
        showProjection.last = { generation: r.generation, position: r.position, at: now };
        setText("#rebuild-text", "Generation " + r.generation + ": " + r.position + " of " + total +
          " events" + extra + "; it replaces the serving one when it catches up.");
      }
    }
  }
  // Rows of other pages (relays, subscriptions) that follow a consumer of the feed.
  function showLiveRows(list) {
    for (const tr of $$("tr[data-live-kind]")) {
      const c = list.find((x) => x.kind === tr.getAttribute("data-live-kind") && x.name === tr.getAttribute("data-live-name"));
      if (c) fillRow(tr, c);
    }
  }
  function showStatus(s) {
    setText("#head", s.head);
    setText("#append-rate", fmtRate(s.appendRate));
    setText("#read-rate", fmtRate(s.readRate));
    setText("#store-size", fmtBytes(s.storeBytes));
    setText("#connections", s.connections);
    showConsumers(s.consumers || []);
    showLiveRows(s.consumers || []);
    chartPoint(s);
    const feed = $("[data-status-feed]");
    const projection = feed && feed.getAttribute("data-projection");
    if (projection) showProjection(projection, s);
  }
  if ($("[data-status-feed]") && window.EventSource) {
    const source = new EventSource("/status/live");
    source.addEventListener("status", (ev) => {
      try { showStatus(JSON.parse(ev.data)); } catch (e) { say("A status update could not be read: " + e.message, "error"); }
    });
  }

  // ---- $all tail ----------------------------------------------------------------------------
  const tail = $("[data-all-tail]");
  if (tail && window.EventSource) {
    const TAIL_ROWS = 200;
    const tbody = $("#tail tbody");
    const button = $("#tail-pause");
    const stateText = $("#tail-state");
    let next = Number(tail.getAttribute("data-from")) + 1;
    let source = null;
    const open = () => {
      source = new EventSource("/all/live?eventNames=false&from=" + next);
      source.addEventListener("message", (ev) => {
        let e;
        try { e = JSON.parse(ev.data); } catch (_) { return; }
        if (typeof e.position === "number") next = e.position + 1;
        const tr = document.createElement("tr");
        const link = document.createElement("a");
        link.href = "/ui/streams/" + encodeURIComponent(e.stream) + "/events/" + e.revision;
        link.textContent = e.stream;
        const cells = [e.position, null, e.revision, e.type];
        cells.forEach((v, i) => {
          const td = document.createElement("td");
          if (i === 1) td.appendChild(link); else td.textContent = String(v);
          tr.appendChild(td);
        });
        tbody.insertBefore(tr, tbody.firstChild);
        while (tbody.children.length > TAIL_ROWS) tbody.lastElementChild.remove();
      });
      source.addEventListener("error", () => setText(stateText, "Connection lost; the browser retries."));
      source.addEventListener("open", () => setText(stateText, "Following from position " + next + "."));
    };
    open();
    button.addEventListener("click", () => {
      const paused = button.getAttribute("aria-pressed") === "true";
      if (paused) {
        button.setAttribute("aria-pressed", "false");
        button.textContent = "Pause";
        open();
      } else {
        source.close();
        button.setAttribute("aria-pressed", "true");
        button.textContent = "Resume";
        setText(stateText, "Paused at position " + (next - 1) + ".");
      }
    });
  }

  // ---- projection view tables ----------------------------------------------------------------
  const TABLE_PAGE = 20;
  for (const box of $$(".view-table")) {
    let offset = 0;
    const url = box.getAttribute("data-table-url");
    const rowsEl = $(".table-rows", box);
    const prev = $(".prev", box);
    const next = $(".next", box);
    const load = async () => {
      try {
        const response = await fetch(url + "?limit=" + TABLE_PAGE + "&offset=" + offset, { credentials: "same-origin" });
        if (!response.ok) { setText(rowsEl, await errorText(response)); return; }
        const body = await response.json();
        const table = document.createElement("table");
        const head = document.createElement("tr");
        for (const c of body.columns) { const th = document.createElement("th"); th.scope = "col"; th.textContent = c; head.appendChild(th); }
        const thead = document.createElement("thead"); thead.appendChild(head); table.appendChild(thead);
        const tb = document.createElement("tbody");
        for (const row of body.rows) {
          const tr = document.createElement("tr");
          for (const c of body.columns) {
            const td = document.createElement("td");
            const v = row[c];
            td.textContent = v === null || v === undefined ? "" : (typeof v === "object" ? JSON.stringify(v) : String(v));
            tr.appendChild(td);
          }
          tb.appendChild(tr);
        }
        table.appendChild(tb);
        const caption = document.createElement("p");
        caption.textContent = body.rows.length === 0 ? "No row here." : "Rows " + (offset + 1) + "–" + (offset + body.rows.length) + " (as of position " + body.position + ").";
        rowsEl.replaceChildren(caption, table);
        prev.disabled = offset === 0;
        next.disabled = body.rows.length < TABLE_PAGE;
      } catch (e) {
        setText(rowsEl, "The rows could not be read: " + e.message);
      }
    };
    prev.addEventListener("click", () => { offset = Math.max(0, offset - TABLE_PAGE); load(); });
    next.addEventListener("click", () => { offset += TABLE_PAGE; load(); });
    load();
  }

  // ---- users ----------------------------------------------------------------------------------
  const usersEl = $("#users");
  async function loadUsers() {
    const response = await fetch("/users", { credentials: "same-origin" });
    if (!response.ok) { setText(usersEl, await errorText(response)); return; }
    const body = await response.json();
    const table = document.createElement("table");
    table.id = "users-table";
    const head = document.createElement("tr");
    for (const h of ["Login", "Full name", "Groups", "Enabled", "Commands"]) {
      const th = document.createElement("th"); th.scope = "col"; th.textContent = h; head.appendChild(th);
    }
    const thead = document.createElement("thead"); thead.appendChild(head); table.appendChild(thead);
    const tb = document.createElement("tbody");
    for (const u of body.users) {
      const tr = document.createElement("tr");
      const login = u.loginName || u.login || "";
      for (const v of [login, u.fullName || "", (u.groups || []).join(", "), u.disabled ? "no" : "yes"]) {
        const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      }
      const td = document.createElement("td");
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.textContent = u.disabled ? "Enable" : "Disable";
      toggle.setAttribute("aria-label", (u.disabled ? "Enable " : "Disable ") + login);
      toggle.setAttribute("data-command", "/users/" + encodeURIComponent(login) + (u.disabled ? "/enable" : "/disable"));
      if (!u.disabled) toggle.setAttribute("data-confirm", "Disable user " + login + "? They can no longer sign in.");
      const reset = document.createElement("button");
      reset.type = "button";
      reset.textContent = "Reset password";
      reset.setAttribute("aria-label", "Reset the password of " + login);
      reset.addEventListener("click", async () => {
        const password = window.prompt("New password for " + login);
        if (!password) return;
        const r = await fetch("/users/" + encodeURIComponent(login) + "/reset-password", {
          method: "POST", credentials: "same-origin",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ newPassword: password }),
        });
        say(r.ok ? "Password of " + login + " reset." : "Reset failed: " + (await errorText(r)), r.ok ? "notice" : "error");
      });
      td.append(toggle, " ", reset);
      tr.appendChild(td);
      tb.appendChild(tr);
    }
    table.appendChild(tb);
    usersEl.replaceChildren(table);
  }
  if (usersEl) {
    loadUsers();
    document.addEventListener("click", (ev) => {
      if (ev.target.closest("#users button[data-command]")) setTimeout(loadUsers, 300);
    });
    const form = $("#user-create");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const data = new FormData(form);
      const groups = String(data.get("groups") || "").split(",").map((g) => g.trim()).filter((g) => g);
      const r = await fetch("/users", {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ login: data.get("login"), fullName: data.get("fullName") || "", groups, password: data.get("password") }),
      });
      if (r.ok) { say("User " + data.get("login") + " created.", "notice"); form.reset(); loadUsers(); }
      else say("Creating the user failed: " + (await errorText(r)), "error");
    });
  }
})();
