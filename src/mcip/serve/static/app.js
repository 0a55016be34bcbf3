// The mcip search page: plain JavaScript, no external resources (works offline).
// Text queries and clicks on results are GET /search (their state lives in the address bar, so the back
// button and shared links work); image uploads are POST /search with multipart form data.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("query-form");
const textBox = $("text");
const imageInput = $("image");
const alphaInput = $("alpha");
const kSelect = $("k");
const resultsBox = $("results");
let limits = { max_upload_bytes: Infinity };
let latest = 0; // sequence number of the newest request: older responses are dropped

function describeError(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return `request failed (HTTP ${status})`;
}

// API keys (mcip serve --api-key-file): on a 401 the page asks for the key once, keeps it for this
// browser session, and sends it as "Authorization: Bearer KEY" with every request (images included:
// they are fetched and shown from blob URLs, since an <img src> cannot carry the header).
let apiKey = sessionStorage.getItem("mcip-api-key");

async function authorizedFetch(url, options = {}) {
  const withKey = () => {
    const headers = new Headers(options.headers || {});
    if (apiKey) headers.set("Authorization", `Bearer ${apiKey}`);
    return fetch(url, { ...options, headers });
  };
  let response = await withKey();
  if (response.status === 401) {
    const given = window.prompt("This server needs an API key:");
    if (given && given.trim()) {
      apiKey = given.trim();
      sessionStorage.setItem("mcip-api-key", apiKey);
      response = await withKey();
    }
  }
  return response;
}

async function showImage(img, url) {
  if (!apiKey) {
    img.src = url;
    return;
  }
  const response = await authorizedFetch(url);
  if (response.ok) img.src = URL.createObjectURL(await response.blob());
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function request(url, options) {
  const seq = ++latest;
  resultsBox.dataset.state = "loading";
  showError("");
  let response;
  let body = null;
  try {
    response = await authorizedFetch(url, options);
    body = await response.json().catch(() => null);
  } catch (err) {
    if (seq === latest) {
      resultsBox.dataset.state = "error";
      showError(`the server did not answer (${err.message})`);
    }
    return;
  }
  if (seq !== latest) return;
  if (!response.ok) {
    resultsBox.dataset.state = "error";
    showError(describeError(body, response.status));
    return;
  }
  render(body);
}

function describeQuery(query) {
  const parts = [];
  if (query.text) parts.push(`"${query.text}"`);
  if (query.image) parts.push(`image ${query.image.filename || "upload"}`);
  if (query.id) parts.push(`indexed image ${query.id}`);
  if (query.text && query.image) parts.push(`(image weight ${query.alpha})`);
  const shown = parts.join(" + ");
  return query.where ? `${shown} where ${query.where.join(", ")}` : shown;
}

function render(data) {
  const template = $("result-template");
  resultsBox.replaceChildren();
  for (const hit of data.results) {
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.id = hit.id;
    const img = node.querySelector("img");
    showImage(img, hit.url);
    img.alt = hit.label || hit.id;
    node.querySelector(".score").textContent = hit.score.toFixed(3);
    node.querySelector(".label").textContent = hit.label || "";
    node.title = `${hit.id}\nclick to search with this image`;
    resultsBox.append(node);
  }
  $("summary").textContent =
    `${data.results.length} results for ${describeQuery(data.query)} in ${data.took_ms.toFixed(1)} ms`;
  resultsBox.dataset.query = JSON.stringify(data.query);
  resultsBox.dataset.state = "done";
}

// Metadata filters: "label=cereal; price<5" -> ["label=cereal", "price<5"] (each sent as a where=...).
const whereBox = $("where");
function filters() {
  return whereBox.value.split(";").map((f) => f.trim()).filter((f) => f);
}

function searchGet(params, push) {
  params.set("k", kSelect.value);
  params.delete("where");
  for (const f of filters()) params.append("where", f);
  if (push) history.pushState(null, "", `?${params}`);
  return request(`search?${params}`);
}

function searchUpload(file) {
  if (file.size > limits.max_upload_bytes) {
    showError(`the image is ${(file.size / 1048576).toFixed(1)} MB; this server accepts at most ` +
      `${(limits.max_upload_bytes / 1048576).toFixed(1)} MB`);
    return;
  }
  const data = new FormData();
  data.append("image", file);
  const text = textBox.value.trim();
  if (text) {
    data.append("text", text);
    data.append("alpha", alphaInput.value);
  }
  data.append("k", kSelect.value);
  for (const f of filters()) data.append("where", f);
  return request("search", { method: "POST", body: data });
}

function chosenFile() {
  return imageInput.files && imageInput.files[0];
}

function updateImageControls() {
  const file = chosenFile();
  $("image-name").textContent = file ? file.name : "image...";
  $("clear-image").hidden = !file;
  $("alpha-box").hidden = !file;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const file = chosenFile();
  const text = textBox.value.trim();
  if (file) return searchUpload(file);
  if (text) return searchGet(new URLSearchParams({ text }), true);
  showError("type a query or choose an image");
});

imageInput.addEventListener("change", () => {
  updateImageControls();
  if (chosenFile()) searchUpload(chosenFile());
});

$("clear-image").addEventListener("click", () => {
  imageInput.value = "";
  updateImageControls();
});

alphaInput.addEventListener("input", () => {
  $("alpha-value").textContent = Number(alphaInput.value).toFixed(2);
});

function searchWithResult(figure) {
  if (!figure || !figure.dataset.id) return;
  textBox.value = "";
  imageInput.value = "";
  updateImageControls();
  searchGet(new URLSearchParams({ id: figure.dataset.id }), true);
}

resultsBox.addEventListener("click", (event) => searchWithResult(event.target.closest(".result")));
resultsBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter") searchWithResult(event.target.closest(".result"));
});

// Drop an image anywhere on the page to search with it.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const files = event.dataTransfer && event.dataTransfer.files;
  if (!files || !files.length) return;
  imageInput.files = files;
  updateImageControls();
  searchUpload(files[0]);
});

function searchFromAddress() {
  const params = new URLSearchParams(location.search);
  if (params.has("k") && [...kSelect.options].some((o) => o.value === params.get("k"))) {
    kSelect.value = params.get("k");
  }
  whereBox.value = params.getAll("where").join("; ");
  if (params.get("text")) {
    textBox.value = params.get("text");
    searchGet(new URLSearchParams({ text: params.get("text") }), false);
  } else if (params.get("id")) {
    searchGet(new URLSearchParams({ id: params.get("id") }), false);
  }
}

window.addEventListener("popstate", searchFromAddress);

async function loadHealth() {
  try {
    const response = await authorizedFetch("health");
    const health = await response.json();
    if (!response.ok) throw new Error(describeError(health, response.status));
    limits = health.limits;
    $("status").textContent =
      `${health.count.toLocaleString()} images · ${health.model} · D=${health.dim} · ${health.backend}`;
  } catch (err) {
    $("status").textContent = `the server did not answer (${err.message})`;
  }
}

loadHealth();
searchFromAddress();
