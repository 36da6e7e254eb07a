// geospot web page: upload photos, show each answer and its probability map.
// Everything (this script, Leaflet, the map layers) comes from the local server.
"use strict";

const FLOOR = 1e-3;            // cells under FLOOR x the top probability are left unshaded (as in the PNG maps)
const STOPS = ["#ffffcc", "#fed976", "#fd8d3c", "#e31a1c", "#800026"];  // YlOrRd, like the PNG maps
const BLUE = "#1f4e9c", GREEN = "#13a44a";

// Web Mercator (Leaflet's default): circles stay round; no tile layer, only our own GeoJSON.
const map = L.map("map", { zoomSnap: 0.25, minZoom: 1, maxZoom: 12,
                           maxBounds: [[-89, -400], [89, 400]], attributionControl: false });
map.fitBounds([[-60, -180], [80, 180]]);
map.createPane("land").style.zIndex = 300;
map.createPane("cells").style.zIndex = 400;
map.createPane("borders").style.zIndex = 450;
map.getPane("borders").style.pointerEvents = "none";
map.createPane("marks").style.zIndex = 600;
L.control.scale({ imperial: false }).addTo(map);

let cellsLayer = null, marks = L.layerGroup().addTo(map), results = [], probs = null, cellIds = [];

function hexToRgb(h) { return [1, 3, 5].map(i => parseInt(h.slice(i, i + 2), 16)); }
function colour(t) {  // t in [0, 1] along the ramp
  const x = Math.min(Math.max(t, 0), 1) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2);
  const a = hexToRgb(STOPS[i]), b = hexToRgb(STOPS[i + 1]), f = x - i;
  return "rgb(" + a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",") + ")";
}
function pct(p) { return (100 * p).toFixed(p >= 0.1 ? 1 : (p >= 0.001 ? 2 : 3)) + "%"; }
function latlon(lat, lon) {
  return Math.abs(lat).toFixed(4) + "°" + (lat >= 0 ? "N" : "S") + ", " + Math.abs(lon).toFixed(4) + "°" + (lon >= 0 ? "E" : "W");
}
function esc(s) { const d = document.createElement("div"); d.textContent = String(s); return d.innerHTML; }

function cellStyle(i) {
  if (!probs) return { fillOpacity: 0, color: "#b5aca3", weight: 0.6, opacity: 0.6 };
  const top = Math.max(...probs), p = probs[i];
  if (p < top * FLOOR) return { fillOpacity: 0, color: "#b5aca3", weight: 0.6, opacity: 0.6 };
  const t = Math.log(p / (top * FLOOR)) / Math.log(1 / FLOOR);
  return { fillColor: colour(t), fillOpacity: 0.8, color: "#7a6a5a", weight: 0.8, opacity: 0.9 };
}

function restyleCells() {
  if (!cellsLayer) return;
  const top = probs ? Math.max(...probs) : 1;
  cellsLayer.eachLayer(layer => {
    const i = layer.feature.properties.i;
    layer.setStyle(cellStyle(i));
    const el = layer.getElement && layer.getElement();
    if (el) el.classList.toggle("cell-shaded", !!probs && probs[i] >= top * FLOOR);
  });
}

async function loadLayers() {
  const [land, cells, info] = await Promise.all([
    fetch("/api/basemap.geojson").then(r => r.json()),
    fetch("/api/cells.geojson").then(r => r.json()),
    fetch("/api/info").then(r => r.json()),
  ]);
  L.geoJSON(land, { pane: "land", interactive: false, style: { fillColor: "#f4f1ea", fillOpacity: 1, stroke: false } }).addTo(map);
  cellIds = cells.features.map(f => f.properties.id);
  cellsLayer = L.geoJSON(cells, {
    pane: "cells",
    style: f => cellStyle(f.properties.i),
    onEachFeature: (f, layer) => {
      layer.options.className = "cell";
      layer.bindTooltip(() => {
        const i = f.properties.i;
        return "cell " + esc(f.properties.id) + (probs ? ": " + pct(probs[i]) : "");
      }, { sticky: true });
    },
  }).addTo(map);
  L.geoJSON(land, { pane: "borders", interactive: false, style: { fill: false, color: "#8c8c8c", weight: 0.8 } }).addTo(map);
  document.getElementById("model").textContent =
    "Model: " + info.encoder + ", " + info.cells + " " + info.scheme + " cells. Limits: " + info.limits.max_files +
    " photos per request, " + info.limits.max_file_mb + " MB and " + info.limits.max_megapixels + " MP per photo.";
  if (!info.gradcam) document.getElementById("gradcam").parentElement.style.display = "none";
}

function legend(top) {
  const el = document.getElementById("legend");
  if (!top) { el.innerHTML = ""; return; }
  el.innerHTML = "<div>probability of the cell (log scale)</div><div class='bar'></div>" +
    "<div class='ticks'><span>" + pct(top * FLOOR) + "</span><span>" + pct(top * Math.sqrt(FLOOR)) +
    "</span><span>" + pct(top) + "</span></div>" +
    "<div><span style='color:" + BLUE + "'>&#9679;</span> estimate &nbsp; " +
    "<span style='color:" + BLUE + "'>&#9473;</span> 50% &nbsp; <span style='color:" + BLUE + "'>&#9476;</span> 90% of the probability</div>";
}

function show(k) {
  const r = results[k];
  document.querySelectorAll(".card").forEach((c, j) => c.classList.toggle("active", j === k));
  marks.clearLayers();
  if (!r || !r.probs) { probs = null; restyleCells(); legend(null); return; }
  probs = r.probs;
  restyleCells();
  const a = r.answer;
  for (const [level, dash] of [["90", "6 5"], ["50", null]]) {
    if (r.circles && r.circles[level]) {
      L.geoJSON(r.circles[level], { pane: "marks", interactive: false,
        style: { fill: false, color: BLUE, weight: 2, dashArray: dash } }).addTo(marks);
    }
  }
  L.circleMarker([a.lat, a.lon], { pane: "marks", radius: 7, color: "white", weight: 2, fillColor: BLUE, fillOpacity: 1 })
    .bindTooltip("estimate: " + latlon(a.lat, a.lon)).addTo(marks);
  legend(Math.max(...probs));
  if (r.bounds) map.fitBounds(r.bounds, { padding: [10, 10] });
}

function card(r, k) {
  const a = r.answer, div = document.createElement("div");
  const names = (a.paths && a.paths.length > 1) ? a.paths.join(" + ") : a.path;
  if (a.error) {
    div.className = "card error";
    div.innerHTML = "<h3>" + esc(names) + "</h3><div class='error-text'>error: " + esc(a.error) + "</div>";
    return div;
  }
  div.className = "card";
  const where = [a.city, a.region, a.country].filter(x => x).join(", ") || "unknown place";
  let html = "<h3>" + esc(names) + "</h3>" +
    "<div class='answer'>" + esc(latlon(a.lat, a.lon)) + " — near " + esc(where) + "</div>" +
    "<div class='confidence'>50% of the probability within " + Math.round(a.radius_km["50"]) + " km, 90% within " +
    Math.round(a.radius_km["90"]) + " km</div>" +
    "<div class='small muted'>country: " + esc(a.country || "?") + (a.region ? " · region: " + esc(a.region) : "") + "</div>" +
    "<table class='cells'>" + a.top_cells.map(c => "<tr><td>" + esc(c.id) + "</td><td class='p'>" + pct(c.prob) +
    "</td><td class='small muted'>" + esc(latlon(c.lat, c.lon)) + "</td></tr>").join("") + "</table>";
  if (r.gradcam) html += "<img alt='Grad-CAM of the top cell' src='" + r.gradcam + "'><div class='small muted'>Grad-CAM of the top cell: red = where the model found its evidence</div>";
  if (r.gradcam_error) html += "<div class='small muted'>" + esc(r.gradcam_error) + "</div>";
  div.innerHTML = html;
  div.addEventListener("click", () => show(k));
  return div;
}

const input = document.getElementById("photos"), drop = document.getElementById("drop");
let files = [];
function choose(list) {
  files = Array.from(list);
  document.getElementById("chosen").textContent = files.length ? files.map(f => f.name).join(", ") : "No photo chosen.";
  document.getElementById("go").disabled = files.length === 0;
}
input.addEventListener("change", () => choose(input.files));
["dragenter", "dragover"].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", ev => { choose(ev.dataTransfer.files); if (files.length) locate(); });

async function locate() {
  const status = document.getElementById("status"), out = document.getElementById("results");
  const form = new FormData();
  files.forEach(f => form.append("photos", f, f.name));
  form.append("same_place", document.getElementById("same_place").checked ? "true" : "false");
  form.append("gradcam", document.getElementById("gradcam").checked ? "true" : "false");
  status.textContent = "Locating " + files.length + " photo" + (files.length > 1 ? "s" : "") + "…";
  document.getElementById("go").disabled = true;
  try {
    const resp = await fetch("/api/locate/details", { method: "POST", body: form });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.detail || resp.statusText);
    results = body.results;
    out.innerHTML = "";
    results.forEach((r, k) => out.appendChild(card(r, k)));
    const ok = results.filter(r => !r.answer.error).length;
    status.textContent = ok + " of " + results.length + " answered" + (ok ? " — click an answer to see its map." : ".");
    const first = results.findIndex(r => r.probs);
    show(first);
    document.body.dataset.state = "answered";
  } catch (err) {
    status.textContent = "error: " + err.message;
    document.body.dataset.state = "failed";
  } finally {
    document.getElementById("go").disabled = files.length === 0;
  }
}
document.getElementById("form").addEventListener("submit", ev => { ev.preventDefault(); locate(); });

loadLayers().then(() => { document.body.dataset.state = "ready"; })
  .catch(err => { document.getElementById("status").textContent = "could not load the map layers: " + err.message; });
