/* ModelMeter portal: Chart.js charts from json_script data, copy buttons, the model playground. */
(function () {
  "use strict";
  var charts = {};

  function drawCharts(root) {
    if (typeof window.Chart === "undefined") return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var id = canvas.getAttribute("data-chart");
      var source = document.getElementById(id);
      if (!source) return;
      if (charts[id]) { charts[id].destroy(); }
      var data = JSON.parse(source.textContent);
      var stacked = canvas.getAttribute("data-stacked") === "true";
      var kind = canvas.getAttribute("data-kind") || "bar";
      charts[id] = new window.Chart(canvas, {
        type: kind,
        data: data,
        options: {
          responsive: true, maintainAspectRatio: false, animation: false, spanGaps: true,
          interaction: { mode: "index", intersect: false },
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
          scales: { x: { stacked: stacked }, y: { stacked: stacked, beginAtZero: true } }
        }
      });
    });
  }

  function copyText(text, button) {
    var done = function () { var label = button.textContent; button.textContent = "Copied"; setTimeout(function () { button.textContent = label; }, 1500); };
    var fallback = function () {
      var area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selectable */ }
      area.remove();
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else { fallback(); }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (target) copyText(target.value !== undefined && target.tagName === "INPUT" ? target.value : target.textContent, button);
  });

  /* Plain (non-htmx) forms that destroy something ask first: <form data-confirm="Remove …?">. */
  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
  });

  /* --- Playground ---------------------------------------------------------------------------- */
  /* A parsed JSON value as a Python literal (True, False, None), so the Python snippet runs as shown.
     Strings and numbers are written as JSON writes them: those escapes and forms mean the same in Python. */
  function pythonLiteral(value) {
    if (value === null) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (Array.isArray(value)) return "[" + value.map(pythonLiteral).join(", ") + "]";
    if (typeof value === "object") {
      return "{" + Object.keys(value).map(function (key) {
        return JSON.stringify(key) + ": " + pythonLiteral(value[key]);
      }).join(", ") + "}";
    }
    return JSON.stringify(value);
  }

  function playground() {
    var form = document.getElementById("playground-form");
    if (!form) return;
    var examples = JSON.parse(document.getElementById("playground-examples").textContent);
    var model = form.getAttribute("data-model");
    var base = form.getAttribute("data-api-base");
    var version = document.getElementById("pg-version");
    var body = document.getElementById("pg-body");
    var url = function () { return base + "/v1/models/" + model + "/versions/" + version.value + ":predict"; };
    var snippets = function () {
      var compact = body.value.trim(), literal = compact;
      try {
        var parsed = JSON.parse(compact);
        compact = JSON.stringify(parsed);
        literal = pythonLiteral(parsed);
      } catch (e) { /* not JSON: both shown as typed */ }
      document.getElementById("pg-curl").textContent =
        "curl -X POST '" + url() + "' \\\n  -H \"Authorization: Bearer $MODELMETER_API_KEY\" \\\n  -H 'Content-Type: application/json' \\\n  -d '" + compact.replace(/'/g, "'\\''") + "'";
      document.getElementById("pg-python").textContent =
        "import os\nimport requests\n\nresponse = requests.post(\n    " + JSON.stringify(url()) + ",\n    headers={\"Authorization\": f\"Bearer {os.environ['MODELMETER_API_KEY']}\"},\n    json=" + literal + ",\n    timeout=30,\n)\nresponse.raise_for_status()\nprint(response.json())";
    };
    var reset = function () { body.value = JSON.stringify(JSON.parse(examples[version.value]), null, 2); snippets(); };
    version.addEventListener("change", reset);
    body.addEventListener("input", snippets);
    reset();
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var out = document.getElementById("pg-response");
      var status = document.getElementById("pg-status");
      var key = document.getElementById("pg-key").value.trim();
      if (!key) { status.textContent = "a key is needed"; document.getElementById("pg-key").focus(); return; }
      status.textContent = "sending…";
      fetch(url(), { method: "POST", headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" }, body: body.value })
        .then(function (response) {
          status.textContent = response.status + " " + (response.ok ? "OK" : "error");
          return response.text().then(function (text) {
            try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
            out.textContent = text;
          });
        })
        .catch(function (error) { status.textContent = "network error"; out.textContent = String(error); });
    });
  }

  /* htmx swaps nothing on an error answer (a 403 after the CSRF token changed, a 500): say so, or the
     click (Revoke, Cancel, Refresh, Create a playground key) seems to do nothing. */
  function showError(text) {
    var main = document.getElementById("main");
    var box = main.querySelector(".messages");
    if (!box) { box = document.createElement("div"); box.className = "messages"; box.setAttribute("role", "status"); main.prepend(box); }
    var line = document.createElement("p");
    line.className = "msg error"; line.setAttribute("data-testid", "htmx-error"); line.textContent = text;
    box.appendChild(line);
    line.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    if (status === 409) { showError(event.detail.xhr.responseText); return; }  /* switched organisation in another tab */
    showError(status === 403
      ? "That was refused (403): your session or its security token changed. Reload the page and try again."
      : "That did not work (HTTP " + status + "). Reload the page and try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    showError("The server could not be reached. Check your connection and try again.");
  });

  /* A playground key created over htmx fills the key field (the secret never leaves this page). */
  document.addEventListener("htmx:afterSwap", function (event) {
    drawCharts(event.detail.target);
    var fresh = event.detail.target.querySelector("[data-fill]");
    if (fresh) { document.querySelector(fresh.getAttribute("data-fill")).value = fresh.value; fresh.remove(); }
  });

  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); playground(); });
})();
