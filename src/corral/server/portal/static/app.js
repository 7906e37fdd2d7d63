// Corral's portal: what the pages do in the browser. Everything it asks for is the API at /api/v1, on this
// origin, signed in by the portal's cookie; whatever changes something carries the page's CSRF token.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const $ = (sel, root = document) => root.querySelector(sel);
  const COLORS = ["#0b63c9", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#3d5a80", "#8ab17d", "#b5651d"];

  function flash(message, ok = false) {
    const box = $("#flash");
    box.textContent = message;
    box.className = ok ? "ok" : "";
    box.hidden = false;
  }

  async function api(method, url, body) {
    const headers = { "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error?.message || message; } catch { /* not JSON */ }
      throw new Error(message);
    }
    return response;
  }

  function confirmed(text) {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
  }

  function then(where) {
    if (where === "reload") location.reload();
    else if (where) location.assign(where);
  }

  // htmx's refreshes carry the token too, and a refresh that fails says so.
  document.body.addEventListener("htmx:configRequest", (e) => { e.detail.headers["X-CSRF-Token"] = csrf; });
  document.body.addEventListener("htmx:responseError", (e) => {
    flash(`This page could not refresh (${e.detail.xhr.status}): reload it.`);
  });

  // Buttons that call the API: <button data-action="POST" data-url=… data-confirm=… data-then="reload|/path">
  document.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    if (button.dataset.confirm && !(await confirmed(button.dataset.confirm))) return;
    button.disabled = true;
    try {
      await api(button.dataset.action, button.dataset.url);
      then(button.dataset.then);
    } catch (err) {
      flash(err.message);
      button.disabled = false;
    }
  });

  // Forms that post JSON to the API: <form data-api=… data-confirm=…>
  document.addEventListener("submit", async (e) => {
    const form = e.target.closest("form[data-api]");
    if (!form) return;
    e.preventDefault();
    if (form.dataset.confirm && !(await confirmed(form.dataset.confirm))) return;
    const body = {};
    for (const field of form.elements) {
      if (!field.name || field.value === "") continue;
      body[field.name] = field.type === "number" ? Number(field.value) : field.value;
    }
    try {
      await api("POST", form.dataset.api, body);
      flash("Done.", true);
      setTimeout(() => location.reload(), 800);
    } catch (err) {
      flash(err.message);
    }
  });

  $("#workspace")?.addEventListener("change", (e) => location.assign(`/w/${encodeURIComponent(e.target.value)}`));

  // ------------------------------------------------------------ live logs (Server-Sent Events of the API)
  const log = $("#log");
  if (log) {
    const MAX_LINES = 5000;
    const status = $("#log-status");
    let source = null;
    let lines = 0;
    const follow = () => {
      source?.close();
      log.textContent = "";
      lines = 0;
      const rank = $("#log-rank").value;
      const url = `${log.dataset.src}&ranks=${rank}&streams=${$("#log-streams").value}`;
      const many = rank === "all" && Number(log.dataset.ranks) > 1;
      source = new EventSource(url);
      source.addEventListener("state", (e) => {
        const s = JSON.parse(e.data);
        status.textContent = s.state + (s.reason ? ` (waiting for ${s.reason})` : "") + (s.attempt ? `, attempt ${s.attempt}` : "");
      });
      source.addEventListener("attempt", (e) => {
        log.append(document.createTextNode(`--- attempt ${JSON.parse(e.data).attempt} ---\n`));
      });
      source.addEventListener("log", (e) => {
        const d = JSON.parse(e.data);
        const chunk = document.createDocumentFragment();
        for (const text of d.lines) {
          const line = document.createElement("span");
          if (d.stream === "stderr") line.className = "e";
          if (many) {
            const prefix = document.createElement("span");
            prefix.className = "r";
            prefix.textContent = `[${d.rank}] `;
            line.append(prefix);
          }
          line.append(document.createTextNode(text.replace(/\r$/, "") + "\n"));
          chunk.append(line);
        }
        log.append(chunk);
        lines += d.lines.length;
        while (lines > MAX_LINES && log.firstChild) { log.firstChild.remove(); lines--; }
        if ($("#log-follow").checked) log.scrollTop = log.scrollHeight;
      });
      source.addEventListener("end", (e) => {
        const end = JSON.parse(e.data);
        status.textContent = `${end.state}` + (end.exit_code != null ? `, exit code ${end.exit_code}` : "");
        log.dataset.ended = end.state;
        source.close();
      });
      source.onerror = () => { if (source.readyState !== EventSource.CLOSED) status.textContent = "reconnecting…"; };
    };
    $("#log-rank").addEventListener("change", follow);
    $("#log-streams").addEventListener("change", follow);
    follow();
  }

  // ------------------------------------------------------------ charts (uPlot)
  const size = (el, height = 280) => ({ width: Math.max(260, el.clientWidth), height });
  const fmt = (n) => (n == null ? "" : Math.abs(n) >= 1e5 || (Math.abs(n) < 1e-3 && n !== 0) ? n.toExponential(3) : +n.toPrecision(6));

  async function metricChart(figure) {
    const started = performance.now();
    const chart = JSON.parse(figure.dataset.chart);
    const plot = $(".plot", figure);
    try {
      const answers = await Promise.all(chart.series.map((s) => api("GET", s.url).then((r) => r.json())));
      const tables = answers.map((a) => [a.points.map((p) => p.step), a.points.map((p) => p.value)]);
      let data;
      const series = [{ label: "step" }];
      const bands = [];
      if (answers.length === 1) {  // one job: its mean, and the band from min to max of each bucket
        const points = answers[0].points;
        data = [tables[0][0], tables[0][1], points.map((p) => p.min), points.map((p) => p.max)];
        series.push({ label: chart.series[0].label, stroke: COLORS[0], width: 1.5 });
        series.push({ label: "min", stroke: "rgba(11,99,201,.25)", width: 1 });
        series.push({ label: "max", stroke: "rgba(11,99,201,.25)", width: 1 });
        bands.push({ series: [3, 2], fill: "rgba(11,99,201,.12)" });
      } else {
        data = uPlot.join(tables);
        chart.series.forEach((s, i) => series.push({ label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }));
      }
      const total = answers.reduce((n, a) => n + a.total, 0);
      const shown = answers.reduce((n, a) => n + a.points.length, 0);
      new uPlot({
        ...size(plot), scales: { x: { time: false } }, series, bands,
        axes: [{ label: "step" }, { values: (u, ticks) => ticks.map(fmt) }],
        hooks: { draw: [() => {  // first drawn: how long its data took (drawnMs), and since navigation (drawnAt)
          if (figure.dataset.drawnMs) return;
          figure.dataset.drawnMs = (performance.now() - started).toFixed(1);
          figure.dataset.drawnAt = performance.now().toFixed(1);
        }] },
      }, data, plot);
      figure.dataset.points = String(total);
      $(".chart-note", figure).textContent = total > shown
        ? `${total.toLocaleString()} points, shown as ${shown.toLocaleString()} buckets (mean, with each bucket's min and max)`
        : `${total.toLocaleString()} points`;
    } catch (err) {
      $(".chart-note", figure).textContent = `Could not load: ${err.message}`;
      figure.dataset.error = err.message;
    }
  }
  document.querySelectorAll("figure[data-chart]").forEach(metricChart);

  // ------------------------------------------------------------ a sweep: objective by trial, parallel coordinates
  const sweepData = $("#sweep-data");
  if (sweepData) {
    const sweep = JSON.parse(sweepData.textContent);
    const trials = sweep.trials.slice().sort((a, b) => a.number - b.number);
    const better = (a, b) => (sweep.mode === "max" ? a > b : a < b);
    let best = null;
    const bestSoFar = trials.map((t) => {
      if (t.state === "complete" && t.value != null && (best == null || better(t.value, best))) best = t.value;
      return best;
    });
    const pick = (state) => trials.map((t) => (t.state === state && t.value != null ? t.value : null));
    const figure = $("#objective-chart");
    const dots = (color) => ({ stroke: color, paths: () => null, points: { show: true, size: 8, fill: color } });
    new uPlot({
      ...size($(".plot", figure)), scales: { x: { time: false } },
      series: [{ label: "trial" }, { label: "complete", ...dots("#0b63c9") }, { label: "pruned", ...dots("#e9a03b") },
        { label: "best so far", stroke: "#2a9d8f", width: 1.5, spanGaps: true }],
      axes: [{ label: "trial" }, { values: (u, ticks) => ticks.map(fmt) }],
    }, [trials.map((t) => t.number), pick("complete"), pick("pruned"), bestSoFar], $(".plot", figure));
    parallel($("#parallel"), sweep);
  }

  function parallel(canvas, sweep) {
    const keys = Object.keys(sweep.parameters);
    const axes = keys.map((key) => {
      const values = sweep.trials.map((t) => t.params[key]);
      const numeric = values.every((v) => typeof v === "number");
      if (numeric) {
        const lo = Math.min(...values), hi = Math.max(...values);
        return { name: key, at: (v) => (hi === lo ? 0.5 : (v - lo) / (hi - lo)), ticks: [[0, fmt(lo)], [1, fmt(hi)]] };
      }
      const cats = [...new Set(values.map((v) => JSON.stringify(v)))].sort();
      const at = (v) => (cats.length === 1 ? 0.5 : cats.indexOf(JSON.stringify(v)) / (cats.length - 1));
      return { name: key, at, ticks: cats.map((c, i) => [cats.length === 1 ? 0.5 : i / (cats.length - 1), c.replace(/^"|"$/g, "")]) };
    });
    const scored = sweep.trials.filter((t) => t.value != null).map((t) => t.value);
    const lo = Math.min(...scored), hi = Math.max(...scored);
    const norm = (v) => (hi === lo ? 0.5 : (v - lo) / (hi - lo));
    axes.push({ name: sweep.metric, at: norm, ticks: scored.length ? [[0, fmt(lo)], [1, fmt(hi)]] : [], objective: true });

    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(300, canvas.clientWidth), height = 320;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    canvas.style.height = `${height}px`;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    const top = 44, bottom = height - 24, left = 60, right = width - 60;
    const x = (i) => left + (axes.length === 1 ? 0 : (i * (right - left)) / (axes.length - 1));
    const y = (f) => bottom - f * (bottom - top);
    // Best trials on top and in the strongest colour; pruned ones dashed.
    const quality = (t) => (t.value == null ? -1 : sweep.mode === "max" ? norm(t.value) : 1 - norm(t.value));
    const order = sweep.trials.slice().sort((a, b) => quality(a) - quality(b));
    let drawn = 0;
    for (const t of order) {
      g.beginPath();
      g.setLineDash(t.state === "pruned" ? [5, 4] : []);
      const q = quality(t);
      g.strokeStyle = q < 0 ? "rgba(150,150,150,.35)" : t.state === "pruned" ? "rgba(233,160,59,.75)"
        : `hsla(${210 - 180 * q}, 75%, ${58 - 18 * q}%, ${0.35 + 0.6 * q})`;
      g.lineWidth = q >= 0.999 ? 2.5 : 1.2;
      axes.forEach((axis, i) => {
        const v = axis.objective ? t.value : t.params[axis.name];
        if (axis.objective && v == null) return;
        const py = y(axis.at(v));
        if (i === 0) g.moveTo(x(i), py); else g.lineTo(x(i), py);
      });
      g.stroke();
      drawn++;
    }
    g.setLineDash([]);
    g.fillStyle = "#1d2430";
    g.font = "12px system-ui, sans-serif";
    g.textAlign = "center";
    axes.forEach((axis, i) => {
      g.strokeStyle = "#667085";
      g.lineWidth = 1;
      g.beginPath(); g.moveTo(x(i), top); g.lineTo(x(i), bottom); g.stroke();
      g.font = "bold 12px system-ui, sans-serif";
      g.fillText(axis.name, x(i), top - 24);
      g.font = "12px system-ui, sans-serif";
      for (const [f, label] of axis.ticks) g.fillText(String(label).slice(0, 14), x(i), f === 0 ? bottom + 16 : y(f) - 6);
    });
    canvas.dataset.lines = String(drawn);
  }
})();
