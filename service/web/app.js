// The service's page: models, training jobs, and a playground. Plain JavaScript against
// the documented API; nothing is fetched from another host.
"use strict";

const $ = (selector) => document.querySelector(selector);
const api = async (path, options = {}) => {
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) throw new Error(body.detail || body.error || response.statusText);
  return body;
};
let apiKey = null;
const authorized = () => (apiKey ? { Authorization: `Bearer ${apiKey}` } : {});

// -- views ---------------------------------------------------------------------------------
document.querySelectorAll("nav button").forEach((button) => {
  button.addEventListener("click", () => {
    document.querySelectorAll("nav button, .view").forEach((e) => e.classList.remove("active"));
    button.classList.add("active");
    $(`#${button.dataset.view}`).classList.add("active");
    if (button.dataset.view === "jobs") refreshJobs();
    if (button.dataset.view === "sweeps") refreshSweeps();
  });
});

// -- models --------------------------------------------------------------------------------
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

async function loadModels() {
  const models = await api("/models");
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>model</th><th>versions</th><th>aliases</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const model of models) {
    const row = document.createElement("tr");
    const name = cell(row, "");
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = model.name;
    link.addEventListener("click", (event) => { event.preventDefault(); showModel(model.name); });
    name.appendChild(link);
    cell(row, model.versions.join(", "));
    cell(row, Object.entries(model.aliases).map(([a, v]) => `${a} → ${v}`).join(", "));
    body.appendChild(row);
  }
  table.appendChild(body);
  $("#model-list").replaceChildren(models.length ? table : "No models yet: train one.");
  const select = $("#play-model");
  const current = select.value;
  select.replaceChildren(...models.map((m) => new Option(m.name, m.name)));
  if (current) select.value = current;
  if (models.length) refreshPlay();
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(2)}%`;
}

async function showModel(name) {
  const model = await api(`/models/${encodeURIComponent(name)}`);
  const detail = $("#model-detail");
  detail.replaceChildren();
  const title = document.createElement("h3");
  title.textContent = name;
  detail.appendChild(title);
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>version</th><th>aliases</th><th>created</th>" +
    "<th>test error</th><th>samples as asked</th><th>reconstruction</th><th>dataset</th>" +
    "<th></th></tr></thead>";
  const body = document.createElement("tbody");
  for (const v of model.version_details.slice().reverse()) {
    const row = document.createElement("tr");
    cell(row, v.version);
    cell(row, v.aliases.join(", "));
    cell(row, (v.created_at || "").slice(0, 19));
    cell(row, percent(v.metrics.test_error));
    // the share of its samples of each class its own classifier reads as that class
    cell(row, percent(v.metrics.sample_fidelity?.mean));
    cell(row, v.metrics.test_reconstruction_loss?.toFixed(4) ?? "–");
    cell(row, v.metrics.dataset ?? "–");
    const promote = document.createElement("button");
    promote.textContent = "make production";
    promote.addEventListener("click", () => moveAlias(name, v.version));
    cell(row, "").appendChild(promote);
    body.appendChild(row);
  }
  table.appendChild(body);
  detail.appendChild(table);
  const latest = model.version_details[model.version_details.length - 1];
  if (latest && latest.metrics.history) {
    const curves = new Image();
    curves.alt = "training curves";
    curves.src = `/figures/curves?model=${encodeURIComponent(name)}&version=${latest.version}`;
    detail.appendChild(curves);
  }
}

async function moveAlias(name, version) {
  const put = () => fetch(`/models/${encodeURIComponent(name)}/aliases/production`, {
    method: "PUT", headers: { "Content-Type": "application/json", ...authorized() },
    body: JSON.stringify({ version }),
  });
  let response = await put();
  if (response.status === 401) {
    apiKey = window.prompt("This server needs its API key to move aliases:");
    response = await put();
  }
  if (!response.ok) window.alert((await response.json()).detail);
  await loadModels();
  await showModel(name);
}

// -- jobs ----------------------------------------------------------------------------------
// The training form, built from the job API's own schema (TrainJobCreate in /openapi.json):
// a field left empty takes the preset's value.
const MAIN_FIELDS = ["mode", "preset", "n_labels", "epochs", "name", "dataset"];
let jobSchema = {};

function fieldSchema(schema, components) {
  const resolve = (s) => (s.$ref ? components[s.$ref.split("/").pop()] : s);
  let field = resolve(schema);
  if (field.anyOf) field = resolve(field.anyOf.find((s) => s.type !== "null") || field.anyOf[0]);
  return { ...field, description: schema.description || field.description };
}

function input(name, field) {
  const label = document.createElement("label");
  label.textContent = `${name} `;
  label.title = field.description || "";
  let control;
  if (field.enum || field.type === "boolean") {
    const choices = field.enum || ["true", "false"];
    control = document.createElement("select");
    control.append(new Option("(preset's)", ""), ...choices.map((v) => new Option(v, v)));
  } else {
    control = document.createElement("input");
    control.type = ["integer", "number"].includes(field.type) ? "number" : "text";
    if (field.type === "number") control.step = "any";
    if (field.type === "array") control.placeholder = "comma-separated";
  }
  control.name = name;
  control.dataset.type = field.type || "string";
  label.appendChild(control);
  return label;
}

async function loadJobForm() {
  const [openapi, presets] = await Promise.all([api("/openapi.json"), api("/presets")]);
  const components = openapi.components.schemas;
  const properties = components.TrainJobCreate.properties;
  jobSchema = Object.fromEntries(Object.entries(properties).map(
    ([name, schema]) => [name, fieldSchema(schema, components)]));
  const main = MAIN_FIELDS.filter((f) => f in jobSchema).map((f) => input(f, jobSchema[f]));
  const more = Object.keys(jobSchema).filter((f) => !MAIN_FIELDS.includes(f))
    .map((f) => input(f, jobSchema[f]));
  $("#job-fields").replaceChildren(...main);
  $("#job-more-fields").replaceChildren(...more);
  const form = $("#job-form");
  form.elements.mode.value = "semi_supervised";
  form.elements.preset.value = presets.default_preset;
  form.elements.n_labels.value = "100";
}

function jobBody(form) {
  const body = {};
  for (const control of form.querySelectorAll("[name]")) {
    const value = control.value.trim();
    if (value === "") continue;
    const type = control.dataset.type;
    if (type === "integer" || type === "number") body[control.name] = Number(value);
    else if (type === "array") body[control.name] = value.split(",").map((v) => Number(v));
    else if (type === "boolean") body[control.name] = value === "true";
    else body[control.name] = value;
  }
  if (body.mode && body.mode !== "semi_supervised" && body.mode !== "supervised") {
    delete body.n_labels;  // only meaningful with labels
  }
  return body;
}

async function refreshJobs() {
  let jobs = [];
  try { jobs = await api("/jobs?limit=20"); } catch (error) { return; }
  const rows = jobs.map((job) => {
    const row = document.createElement("tr");
    cell(row, job.id.slice(0, 8));
    cell(row, job.model);
    cell(row, job.status);
    const p = job.progress;
    cell(row, p ? `epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.total_steps}` : "");
    return row;
  });
  $("#job-list tbody").replaceChildren(...rows);
}

$("#job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#job-error").textContent = "";
  const body = jobBody(event.target);
  try {
    const submit = () => fetch("/jobs/train", {
      method: "POST", headers: { "Content-Type": "application/json", ...authorized() },
      body: JSON.stringify(body),
    });
    let response = await submit();
    if (response.status === 401) {
      apiKey = window.prompt("This server needs its API key to start jobs:");
      response = await submit();
    }
    const job = await response.json();
    if (!response.ok) throw new Error(job.detail);
    follow(job);
  } catch (error) {
    $("#job-error").textContent = error.message;
  }
});

let events = null;
function follow(job) {
  $("#job-live").hidden = false;
  $("#job-id").textContent = job.id;
  const curve = [];
  if (events) events.close();
  events = new EventSource(`/jobs/${job.id}/events`);
  const show = (message) => {
    const current = JSON.parse(message.data);
    $("#job-status").textContent = current.status;
    const p = current.progress;
    if (p) {
      $("#job-progress").value = p.step / p.total_steps;
      const eta = p.eta_s === null ? "" : `, ETA ${Math.round(p.eta_s)} s`;
      const losses = Object.entries(p.losses).map(([k, v]) => `${k} ${v.toFixed(3)}`);
      $("#job-text").textContent = `epoch ${p.epoch}/${p.epochs}, step ${p.step}/` +
        `${p.total_steps}${eta}; validation error ${percent(p.validation_error)}; ` +
        losses.join(", ");
      if (p.losses.reconstruction !== undefined) curve.push(p.losses.reconstruction);
      drawCurve(curve);
    }
    if (current.samples && $("#job-samples").getAttribute("src") !== current.samples) {
      $("#job-samples").src = current.samples;
      $("#job-samples").hidden = false;
    }
    if (current.result) $("#job-text").textContent +=
      ` Published ${current.result.model} version ${current.result.version}.`;
    if (current.error) $("#job-text").textContent += ` ${current.error}`;
  };
  events.addEventListener("job", show);
  events.addEventListener("end", (message) => {
    show(message);
    events.close();
    loadModels();
    refreshJobs();
  });
  $("#job-cancel").onclick = () => fetch(`/jobs/${job.id}/cancel`,
                                         { method: "POST", headers: authorized() });
}

// -- sweeps --------------------------------------------------------------------------------
const pointLabel = (overrides) =>
  Object.entries(overrides).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ") || "base";
const spread = (s) => (s ? `${percent(s.mean)} ± ${percent(s.std)} (n=${s.n})` : "");

async function refreshSweeps() {
  let sweeps = [];
  try { sweeps = await api("/sweeps?limit=20"); } catch (error) { return; }
  const rows = sweeps.map((sweep) => {
    const row = document.createElement("tr");
    const id = cell(row, "");
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = sweep.id.slice(0, 8);
    link.addEventListener("click", (event) => { event.preventDefault(); showSweep(sweep.id); });
    id.appendChild(link);
    cell(row, sweep.model);
    cell(row, sweep.status);
    cell(row, Object.entries(sweep.counts).map(([s, n]) => `${n} ${s}`).join(", "));
    const p = sweep.promotion;
    cell(row, sweep.promote ? `${sweep.promote}: ${p ? p.state : "pending"}` : "");
    return row;
  });
  $("#sweep-list tbody").replaceChildren(...rows);
}

async function showSweep(id) {
  const sweep = await api(`/sweeps/${id}`);
  $("#sweep-detail").hidden = false;
  $("#sweep-id").textContent = sweep.id;
  $("#sweep-figure").src = `/sweeps/${id}/figure.png?t=${Date.now()}`;
  $("#sweep-points tbody").replaceChildren(...sweep.points.map((p, i) => {
    const row = document.createElement("tr");
    [i + 1, pointLabel(p.overrides), p.status, percent(p.validation_error),
     p.validation_loss === null ? "" : p.validation_loss.toFixed(4), percent(p.test_error),
     p.version ?? ""].forEach((text) => cell(row, String(text)));
    return row;
  }));
  $("#sweep-seeds tbody").replaceChildren(...sweep.seeds.map((g) => {
    const row = document.createElement("tr");
    [pointLabel(g.overrides), g.seeds.join(", "), spread(g.validation_error),
     spread(g.test_error)].forEach((text) => cell(row, text));
    return row;
  }));
}

function drawCurve(values) {
  const canvas = $("#job-curve");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (values.length < 2) return;
  const max = Math.max(...values), min = Math.min(...values);
  g.strokeStyle = "#00796b";
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * (canvas.width - 10) + 5;
    const y = canvas.height - 5 - ((v - min) / (max - min || 1)) * (canvas.height - 10);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  g.fillText(`reconstruction loss ${values[values.length - 1].toFixed(4)}`, 8, 12);
}

// -- play ----------------------------------------------------------------------------------
const draw = $("#draw");
const pen = draw.getContext("2d");
function clearDrawing() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, draw.width, draw.height);
}
clearDrawing();
let drawing = false;
const point = (event, canvas) => {
  const box = canvas.getBoundingClientRect();
  return [event.clientX - box.left, event.clientY - box.top];
};
draw.addEventListener("pointerdown", (event) => {
  drawing = true;
  pen.beginPath();
  pen.moveTo(...point(event, draw));
});
draw.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  pen.strokeStyle = "#fff";
  pen.lineWidth = 20;
  pen.lineCap = "round";
  pen.lineJoin = "round";  // no spikes where a stroke turns sharply
  pen.lineTo(...point(event, draw));
  pen.stroke();
});
window.addEventListener("pointerup", () => {
  if (drawing) { drawing = false; classifyDrawing(); }
});
$("#draw-clear").addEventListener("click", () => {
  clearDrawing();
  $("#prediction").textContent = "Draw a digit (white on black).";
});

function drawingPng() {
  // the whole canvas as drawn: the service frames it as MNIST's digits were (aae.digits)
  return new Promise((resolve) => draw.toBlob(resolve, "image/png"));
}

function showSeen(pixels) {
  // the 28 x 28 input the model saw, enlarged
  const seen = $("#seen");
  const g = seen.getContext("2d");
  const image = g.createImageData(28, 28);
  pixels.forEach((v, i) => {
    image.data.set([255 * v, 255 * v, 255 * v, 255], 4 * i);
  });
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  small.getContext("2d").putImageData(image, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(small, 0, 0, seen.width, seen.height);
}

function model() {
  return encodeURIComponent($("#play-model").value);
}

async function classifyDrawing() {
  const png = await drawingPng();
  const post = (path, query = "") => fetch(`${path}?model=${model()}${query}`, {
    method: "POST", headers: { "Content-Type": "image/png" }, body: png,
  });
  if (served && ["semi_supervised", "clustering"].includes(served.mode)) {
    const response = await post("/classify", "&return_input=true");
    const body = await response.json();
    if (!response.ok) { $("#prediction").textContent = body.detail; return; }
    $("#prediction").textContent =
      `Prediction: ${body.label} (${(100 * Math.max(...body.probabilities)).toFixed(1)}%)`;
    showSeen(body.inputs[0]);
  } else {
    $("#prediction").textContent = "This model does not classify; its reconstruction:";
  }
  if (served && served.mode === "supervised") return;  // it reconstructs given a label
  const reconstructed = await post("/reconstruct");
  if (reconstructed.ok) $("#reconstruction").src = URL.createObjectURL(await reconstructed.blob());
}

const zpad = $("#zpad");
let z = [0, 0];
let served = null;  // the config of the version the service serves for the chosen model
function sliders() {
  // a slider per dimension for codes of more than 2 (the pad draws the first two)
  const box = $("#zsliders");
  if (!served || served.z_dim === 2) { box.replaceChildren(); return; }
  const range = 3 * served.prior_std;
  box.replaceChildren(...Array.from({ length: served.z_dim }, (_, i) => {
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", min: -range, max: range, step: range / 50,
                            value: z[i] ?? 0 });
    slider.dataset.dimension = i;
    slider.addEventListener("input", () => { z[i] = Number(slider.value); decodeZ(); });
    const label = document.createElement("label");
    label.textContent = `z${i} `;
    label.appendChild(slider);
    return label;
  }));
}

async function decodeZ() {
  if (!served) return;
  if (z.length !== served.z_dim) z = Array(served.z_dim).fill(0);
  const g = zpad.getContext("2d");
  g.clearRect(0, 0, zpad.width, zpad.height);
  g.fillStyle = "#000";
  g.fillRect(0, 0, zpad.width, zpad.height);
  g.strokeStyle = "#444";
  g.beginPath();
  g.moveTo(zpad.width / 2, 0); g.lineTo(zpad.width / 2, zpad.height);
  g.moveTo(0, zpad.height / 2); g.lineTo(zpad.width, zpad.height / 2);
  g.stroke();
  const extent = 2 * served.prior_std;
  g.fillStyle = "#80cbc4";
  g.beginPath();
  g.arc((z[0] / extent + 1) * zpad.width / 2, (1 - z[1] / extent) * zpad.height / 2, 5, 0,
        2 * Math.PI);
  g.fill();
  $("#z-text").textContent = `z = (${z.map((v) => v.toFixed(2)).join(", ")})`;
  const body = served.mode === "unsupervised" ? { z } : { z, label: Number($("#z-label").value) };
  const response = await fetch(`/decode?model=${model()}&scale=4`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (response.ok) $("#decoded").src = URL.createObjectURL(await response.blob());
  else $("#z-text").textContent += ` (${(await response.json()).detail})`;
}
zpad.addEventListener("pointerdown", (event) => {
  if (!served) return;
  const [x, y] = point(event, zpad);
  const extent = 2 * served.prior_std;
  z[0] = (x / zpad.width * 2 - 1) * extent;
  z[1] = (1 - y / zpad.height * 2) * extent;
  sliders();
  decodeZ();
});
$("#z-label").addEventListener("change", decodeZ);

async function refreshPlay() {
  const m = model();
  if (!m) return;
  const detail = await api(`/models/${m}`);
  const version = detail.aliases.production ?? detail.versions[detail.versions.length - 1];
  served = detail.version_details.find((v) => v.version === version).config;
  // only the figures that apply: the manifold of a 2-D code, the styles of a class input
  $("#manifold").hidden = served.z_dim !== 2;
  if (served.z_dim === 2) $("#manifold").src = `/figures/manifold?model=${m}&n=12`;
  $("#styles").hidden = served.mode === "unsupervised";
  if (served.mode !== "unsupervised") $("#styles").src = `/figures/styles?model=${m}&rows=6`;
  $("#z-label").hidden = served.mode === "unsupervised";
  z = Array(served.z_dim).fill(0);
  sliders();
  // the way between two codes two prior deviations apart, along the great circle
  const a = Array(served.z_dim).fill(-2 * served.prior_std / Math.sqrt(served.z_dim));
  const interpolated = await fetch(`/interpolate?model=${m}&steps=10&spherical=true`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ z: [a, a.map((v, i) => (i === 0 ? -v : v))] }),
  });
  if (interpolated.ok) $("#interpolation").src = URL.createObjectURL(await interpolated.blob());
  decodeZ();
}
$("#play-model").addEventListener("change", refreshPlay);

loadModels();
loadJobForm();
refreshJobs();
