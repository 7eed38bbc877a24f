// pimmi viewer: the cluster graph (Cytoscape.js), review marks, the pair overlay. No network access beyond this server.
(function () {
  "use strict";

  function tooltip(show, x, y, src, text) {
    var tip = document.getElementById("tooltip");
    if (!tip) return;
    if (!show) { tip.hidden = true; return; }
    tip.querySelector("img").src = src;
    tip.querySelector("span").textContent = text;
    tip.style.left = (x + 16) + "px";
    tip.style.top = (y + 16) + "px";
    tip.hidden = false;
  }

  function drawGraph() {
    var box = document.getElementById("graph");
    var source = document.getElementById("graph-data");
    if (!box || !source || typeof cytoscape === "undefined") return;
    var data = JSON.parse(source.textContent);
    var big = data.nodes.length > 800;
    var maxInliers = Math.max.apply(null, data.edges.map(function (e) { return e.inliers; }).concat([1]));
    var elements = data.nodes.map(function (n) {
      return { group: "nodes", data: { id: String(n.id), path: n.path, copy: n.copy }, position: { x: n.x, y: n.y } };
    }).concat(data.edges.map(function (e) {
      return { group: "edges", data: { id: e.source + "-" + e.target, source: String(e.source), target: String(e.target),
        inliers: e.inliers, w: 1 + 5 * Math.sqrt(e.inliers / maxInliers), review: e.review || "" } };
    }));
    var cy = cytoscape({
      container: box,
      elements: elements,
      layout: { name: "preset", fit: true, padding: 30 },
      wheelSensitivity: 0.3,
      textureOnViewport: big,
      hideEdgesOnViewport: big,
      pixelRatio: big ? 1 : "auto",
      style: [
        { selector: "node", style: { width: 14, height: 14, "background-color": "#2f6fdf", "border-width": 1, "border-color": "#fff" } },
        { selector: "node[copy = 'part']", style: { "background-color": "#e07b00" } },
        { selector: "node:selected", style: { "border-color": "#111", "border-width": 3 } },
        { selector: "edge", style: { width: "data(w)", "line-color": "#9aa6bd", opacity: 0.7, "curve-style": "haystack" } },
        { selector: "edge[review = 'wrong']", style: { "line-color": "#c62828", "line-style": "dashed", opacity: 1, "curve-style": "straight" } }
      ]
    });
    cy.on("mouseover", "node", function (ev) {
      var n = ev.target, p = ev.renderedPosition, r = box.getBoundingClientRect();
      tooltip(true, r.left + p.x, r.top + p.y, data.thumb_url.replace("__ID__", n.id()), n.data("path"));
    });
    cy.on("mouseout", "node", function () { tooltip(false); });
    cy.on("tap", "node", function (ev) { window.location.href = data.image_url.replace("__ID__", ev.target.id()); });
    cy.on("tap", "edge", function (ev) {
      var e = ev.target;
      window.location.href = data.pair_url.replace("__A__", e.data("source")).replace("__B__", e.data("target"));
    });
    window.pimmiGraph = cy; // for scripts and tests: the graph object
  }

  function post(url, body) {
    return fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (r) { if (!r.ok) { return r.text().then(function (t) { throw new Error(t); }); } return r.json(); });
  }

  function reviews() {
    document.querySelectorAll("[data-match-verdict]").forEach(function (button) {
      button.addEventListener("click", function () {
        var holder = button.closest("[data-a]");
        post("/api/review/match", { a: +holder.dataset.a, b: +holder.dataset.b, verdict: button.dataset.matchVerdict || null })
          .then(function () { window.location.reload(); }, function (err) { alert(err.message); });
      });
    });
    document.querySelectorAll("[data-cluster-verdict]").forEach(function (button) {
      button.addEventListener("click", function () {
        post("/api/review/cluster", { cluster_id: +button.dataset.cluster, verdict: button.dataset.clusterVerdict || null })
          .then(function () { window.location.reload(); }, function (err) { alert(err.message); });
      });
    });
  }

  function pairControls() {
    var lines = document.getElementById("show-lines"), svg = document.getElementById("pair");
    if (lines && svg) lines.addEventListener("change", function () { svg.classList.toggle("hide-lines", !lines.checked); });
    var fade = document.getElementById("fade"), top = document.getElementById("overlay-b"), blink = document.getElementById("blink");
    if (!fade || !top) return;
    fade.addEventListener("input", function () { top.style.opacity = fade.value / 100; });
    var timer = null;
    blink.addEventListener("click", function () {
      if (timer) { clearInterval(timer); timer = null; top.style.opacity = fade.value / 100; blink.textContent = "blink"; return; }
      timer = setInterval(function () { top.style.opacity = top.style.opacity === "1" ? "0" : "1"; }, 600);
      blink.textContent = "stop";
    });
  }

  drawGraph();
  reviews();
  pairControls();
})();
