// MegaRouter console: progressive enhancement only — every page reads without this file.
// Copy buttons, charts (uPlot, data fetched as JSON from the same origin: the CSP allows no
// inline data or script), and the CSRF header on htmx requests.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]');
  document.addEventListener("htmx:configRequest", (event) => {
    if (csrf) event.detail.headers["X-CSRF-Token"] = csrf.content;
  });

  // Copy buttons: data-copy names the element whose text (or value) is copied.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = "value" in source && source.value !== undefined ? source.value : source.textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (_error) {
      // No clipboard permission (e.g. plain http on a non-local host): select it for Ctrl-C.
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      if (source.select) source.select();
      button.textContent = "Press Ctrl-C";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });

  const palette = ["#0b72d9", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#1098ad", "#e03131", "#5c7cfa", "#868e96"];
  const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
  const axisColor = dark ? "#9da7b3" : "#57606a";
  const gridColor = dark ? "#30363d" : "#e5e8eb";

  function formatValue(metric, value) {
    if (value == null) return "—";
    if (metric === "cost_usd") return "$" + value.toFixed(value < 1 ? 4 : 2);
    if (metric.startsWith("latency")) return Math.round(value).toLocaleString() + " ms";
    return Math.round(value).toLocaleString();
  }

  async function drawChart(figure) {
    let data;
    try {
      const response = await fetch(figure.dataset.src, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      data = await response.json();
    } catch (error) {
      const note = document.createElement("p");
      note.className = "chart-empty";
      note.textContent = "The chart could not be loaded (" + error.message + ").";
      figure.appendChild(note);
      return;
    }
    if (!data.series.length) {
      const note = document.createElement("p");
      note.className = "chart-empty";
      note.textContent = "No usage in this range yet.";
      figure.appendChild(note);
      figure.dataset.drawn = "empty";
      return;
    }
    const width = Math.max(280, figure.clientWidth - 16);
    const options = {
      width, height: 200,
      series: [{ label: "Day", value: (_u, ts) => ts == null ? "—" : new Date(ts * 1000).toISOString().slice(0, 10) }]
        .concat(data.series.map((s, i) => ({
          label: s.label, stroke: palette[i % palette.length], width: 2, spanGaps: false,
          points: { show: true, size: 4 },
          fill: data.series.length === 1 ? palette[0] + "22" : undefined,
          value: (_u, v) => formatValue(data.metric, v),
        }))),
      axes: [
        { stroke: axisColor, grid: { stroke: gridColor } },
        { stroke: axisColor, grid: { stroke: gridColor }, size: data.metric === "cost_usd" || data.metric.startsWith("latency") ? 78 : 60, values: (_u, ticks) => ticks.map((v) => formatValue(data.metric, v)) },
      ],
      scales: { x: { time: true } },
      cursor: { points: { size: 6 } },
    };
    new uPlot(options, [data.x].concat(data.series.map((s) => s.values)), figure);
    figure.dataset.drawn = "chart";
  }

  // Bar charts over a JSON data block in the page (<script type="application/json">: data, not
  // code, so the CSP has nothing to block): {labels, values, metric}.
  function drawBars(figure) {
    const block = document.querySelector(figure.dataset.bars);
    if (!block) return;
    const data = JSON.parse(block.textContent);
    const x = data.labels.map((_label, i) => i);
    const options = {
      width: Math.max(280, figure.clientWidth - 16), height: 240,
      series: [{ label: "Strategy", value: (_u, i) => i == null ? "—" : data.labels[i] },
        { label: "Cost / month", stroke: palette[0], fill: palette[0] + "88", width: 1,
          paths: uPlot.paths.bars({ size: [0.6, 80] }), points: { show: false },
          value: (_u, v) => formatValue(data.metric, v) }],
      axes: [
        { stroke: axisColor, grid: { show: false }, values: (_u, ticks) => ticks.map((i) => data.labels[i] || "") },
        { stroke: axisColor, grid: { stroke: gridColor }, size: 90, values: (_u, ticks) => ticks.map((v) => formatValue(data.metric, v)) },
      ],
      scales: { x: { time: false, range: [-0.5, data.labels.length - 0.5] }, y: { range: (_u, _min, max) => [0, max * 1.1 || 1] } },
      cursor: { points: { show: false } },
    };
    new uPlot(options, [x, data.values], figure);
    figure.dataset.drawn = "chart";
  }

  // Fleet sparklines: one request for every endpoint's last half hour.
  async function drawSparklines(spans) {
    let history;
    try {
      const response = await fetch("/fleet/history.json", { credentials: "same-origin" });
      if (!response.ok) return;
      history = await response.json();
    } catch (_error) {
      return;
    }
    spans.forEach((span) => {
      const series = history.endpoints[span.dataset.endpoint];
      const which = span.dataset.series;
      if (!series || series.x.length < 2) {
        span.textContent = "—";
        span.dataset.drawn = "empty";
        return;
      }
      const values = series[which];
      const last = values[values.length - 1];
      span.title = which === "success" ? "success " + last + "% now" : "mean latency " + last + " ms now";
      const color = which === "success" && last < 99 ? "#e03131" : palette[which === "success" ? 2 : 0];
      new uPlot({
        width: 110, height: 28, legend: { show: false }, cursor: { show: false },
        axes: [{ show: false }, { show: false }],
        scales: { x: { time: false }, y: which === "success" ? { range: [0, 100] } : {} },
        series: [{}, { stroke: color, width: 1.5, points: { show: false } }],
      }, [series.x, values], span);
      span.dataset.drawn = "chart";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (typeof uPlot === "undefined") return;
    const sparks = document.querySelectorAll("span.spark[data-endpoint]");
    if (sparks.length) drawSparklines(sparks);
    document.querySelectorAll("figure.chart[data-src]").forEach(drawChart);
    document.querySelectorAll("figure.chart[data-bars]").forEach(drawBars);
  });
})();
