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
    treeToggle(cy, data);
  }

  // The derivation tree (pimmi provenance): parent -> child arrows, laid out from the likely original down.
  function treeToggle(cy, data) {
    var button = document.getElementById("show-tree");
    if (!button) return;
    var saved = null;
    button.addEventListener("click", function () {
      if (saved) {
        cy.remove("edge.derivation");
        cy.edges().style("display", "element");
        cy.nodes().removeStyle("background-image background-fit shape width height");
        cy.nodes().removeClass("root");
        cy.nodes().forEach(function (n) { n.position(saved[n.id()]); });
        cy.fit(undefined, 30);
        saved = null;
        button.textContent = "derivation tree";
        return;
      }
      button.disabled = true;
      button.textContent = "computing…";
      var got = data.tree ? Promise.resolve(data.tree) : fetch(data.tree_url).then(function (r) { return r.json(); });
      got.then(function (tree) {
        saved = {};
        cy.nodes().forEach(function (n) { saved[n.id()] = Object.assign({}, n.position()); });
        cy.edges().style("display", "none");
        var roots = [];
        tree.forEach(function (t) {
          if (t.parent === null) { roots.push("#" + t.id); return; }
          cy.add({ group: "edges", classes: "derivation",
                   data: { id: "d" + t.id, source: String(t.parent), target: String(t.id), relation: t.relation } });
        });
        cy.style().selector("edge.derivation").style({ "curve-style": "bezier", "target-arrow-shape": "triangle",
          "line-color": "#444", "target-arrow-color": "#444", width: 1.5, label: "data(relation)", "font-size": 9,
          color: "#666", "text-rotation": "autorotate" }).update();
        cy.nodes().filter(function (n) { return roots.indexOf("#" + n.id()) >= 0; }).addClass("root");
        cy.style().selector("node.root").style({ "border-color": "#111", "border-width": 3, width: 20, height: 20 }).update();
        if (cy.nodes().length <= 300) {  // small enough to draw each image as its thumbnail
          cy.nodes().forEach(function (n) {
            n.style({ "background-image": data.thumb_url.replace("__ID__", n.id()), "background-fit": "cover",
                      shape: "round-rectangle", width: 44, height: 44 });
          });
        }
        cy.elements("node, edge.derivation").layout({ name: "breadthfirst", directed: true, roots: roots.join(","),
          spacingFactor: 1.1, padding: 30 }).run();
        window.pimmiTree = tree;
        button.disabled = false;
        button.textContent = "similarity graph";
      }, function () { button.disabled = false; button.textContent = "derivation tree (failed)"; });
    });
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
