/* autotuner report site: draws the charts, sorts and filters tables, copies commands, and
 * reloads pages of running specs. Plain ES2017, no dependencies besides plotly.min.js, so the
 * site works offline and from any static file server (or straight from disk). */
(function () {
  "use strict";

  function drawCharts() {
    var plots = document.querySelectorAll("[data-figure]");
    if (!plots.length) { return; }
    if (typeof window.Plotly === "undefined") {
      // without plotly.js the data tables are the charts: open them
      document.querySelectorAll("figure.chart details.data").forEach(function (d) { d.open = true; });
      return;
    }
    plots.forEach(function (div) {
      var source = document.getElementById(div.getAttribute("data-figure"));
      if (!source) { return; }
      var fig = JSON.parse(source.textContent);
      window.Plotly.newPlot(div, fig.data, fig.layout, {
        displaylogo: false,
        responsive: true,
        modeBarButtonsToRemove: ["select2d", "lasso2d"]
      }).then(function () { div.setAttribute("data-drawn", "true"); });
    });
  }

  function cellValue(row, index, kind) {
    var cell = row.cells[index];
    if (!cell) { return kind === "num" ? -Infinity : ""; }
    var raw = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
    if (kind === "num") {
      var n = parseFloat(raw);
      return isNaN(n) ? -Infinity : n;
    }
    return raw.toLowerCase();
  }

  function sortBy(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var kind = th.getAttribute("data-sort");
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[aria-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, kind);
      var y = cellValue(b, index, kind);
      var order = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? order : -order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function setupSorting() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("th[data-sort]").forEach(function (th) {
        th.tabIndex = 0;
        th.addEventListener("click", function () { sortBy(table, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
        });
      });
    });
  }

  function applyFilter(tableId) {
    var table = document.getElementById(tableId);
    if (!table) { return; }
    var input = document.querySelector('[data-filter-for="' + tableId + '"]');
    var state = document.querySelector('[data-state-filter-for="' + tableId + '"]');
    var gen = document.querySelector('[data-gen-filter-for="' + tableId + '"]');
    var terms = input ? input.value.toLowerCase().split(/\s+/).filter(Boolean) : [];
    var wanted = state ? state.value : "";
    var wantedGen = gen ? gen.value : "";
    var shown = 0;
    var rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var text = row.textContent.toLowerCase();
      var ok = terms.every(function (t) { return text.indexOf(t) !== -1; });
      if (ok && wanted) { ok = (" " + (row.getAttribute("data-state") || "") + " ").indexOf(" " + wanted + " ") !== -1; }
      if (ok && wantedGen) { ok = row.getAttribute("data-gen") === wantedGen; }
      row.hidden = !ok;
      if (ok) { shown += 1; }
    }
    var counter = document.querySelector('[data-count-for="' + tableId + '"]');
    if (counter) { counter.textContent = shown + " of " + rows.length + " shown"; }
  }

  function setupFilters() {
    var ids = {};
    document.querySelectorAll("[data-filter-for],[data-state-filter-for],[data-gen-filter-for]").forEach(function (el) {
      var id = el.getAttribute("data-filter-for") || el.getAttribute("data-state-filter-for") ||
        el.getAttribute("data-gen-filter-for");
      ids[id] = true;
      el.addEventListener("input", function () { applyFilter(id); });
      el.addEventListener("change", function () { applyFilter(id); });
    });
    Object.keys(ids).forEach(applyFilter);
  }

  function setupCopy() {
    document.querySelectorAll("button[data-copy-target]").forEach(function (button) {
      button.addEventListener("click", function (event) {
        event.preventDefault(); // the button sits in a <summary>: copy, do not fold
        var target = document.getElementById(button.getAttribute("data-copy-target"));
        if (!target) { return; }
        var label = button.textContent;
        function done(ok) {
          button.textContent = ok ? "Copied" : "Selected: press Ctrl+C";
          window.setTimeout(function () { button.textContent = label; }, 2000);
        }
        function select() {
          var range = document.createRange();
          range.selectNodeContents(target);
          var selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          var ok = false;
          try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
          done(ok);
        }
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(target.textContent).then(function () { done(true); }, select);
        } else {
          select();
        }
      });
    });
  }

  function setupRefresh() {
    var url = document.body.getAttribute("data-refresh-url");
    if (!url) { return; }
    var input = document.body.getAttribute("data-input");
    if (window.location.protocol === "file:") {
      // browsers do not let a page read files next to it from disk: reload it whole instead
      window.setTimeout(function () { window.location.reload(); }, 30000);
      return;
    }
    window.setInterval(function () {
      window.fetch(url, { cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data && data.input !== input) { window.location.reload(); } })
        .catch(function () { /* the server may be restarting; try again next time */ });
    }, 10000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupSorting();
    setupFilters();
    setupCopy();
    setupRefresh();
    drawCharts();
  });
}());
