// The caption web page's logic (loaded by index.html; tested by tests/test_web_e2e.py).
//
// It talks to TF Serving's REST API, or the local server's copy of it (serving/README.md):
//   POST <api>/v1/models/captioner:predict  {"signature_name": ..., "instances": [{"b64": ...}, ...]}
//   GET  <api>/v1/models/captioner           model status, for the version that serves
// <api> is this page's own origin (the local server and the compose nginx both serve the page
// beside the API), or `?api=http://host:8501`. A cross-origin API must allow CORS; TF Serving
// does not, so put a proxy in front of it (as serving/nginx.conf does).
"use strict";

(() => {
  const MODEL = "captioner";
  // One request per upload, split only so a request stays well under the servers' 10 MB body
  // limit (base64 adds a third) and the local server's batch limit of 256.
  const MAX_BATCH_IMAGES = 32;
  const MAX_BATCH_BYTES = 6 * 1024 * 1024;
  const REQUEST_TIMEOUT_MS = 120_000;

  const $ = (selector) => document.querySelector(selector);
  const fileInput = $("#file-input");
  const dropZone = $("#drop-zone");
  const beamBox = $("#beam-search");
  const clearButton = $("#clear-results");
  const results = $("#results");
  const noResults = $("#no-results");
  const serverStatus = $("#server-status");
  const template = $("#result-template");

  /** A failed call: `status` is the HTTP status, or null when no answer came. */
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  const api = resolveApi();
  $("#api-url").textContent = api.url || "(none)";
  const entries = []; // one per uploaded file, in upload order

  // ------------------------------------------------------------------------------------------
  // The API

  function resolveApi() {
    const param = new URLSearchParams(window.location.search).get("api");
    const raw = param || (window.location.origin !== "null" ? window.location.origin : "");
    if (!raw) {
      return { error: "this page was opened as a file: open it through the caption server " +
        "(make serve-local, then http://127.0.0.1:8501/) or add ?api=http://host:8501 to its address" };
    }
    let url;
    try {
      url = new URL(raw);
    } catch {
      return { error: `?api= is not a URL: ${raw}` };
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      return { error: `?api= must be an http:// or https:// URL, not ${raw}` };
    }
    const base = url.origin + url.pathname.replace(/\/+$/, "");
    return { url: base, crossOrigin: url.origin !== window.location.origin };
  }

  function unreachable() {
    const hint = api.crossOrigin
      ? " (or it does not allow calls from this page's origin: serve the page from the API's origin, or allow CORS)"
      : "";
    return `server unreachable at ${api.url}${hint}`;
  }

  /** GET or POST (with a JSON body) <api><path>; the parsed JSON answer and the headers. */
  async function call(path, body) {
    if (api.error) throw new ApiError(api.error, null);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const options = { signal: controller.signal, cache: "no-store" };
    if (body !== undefined) {
      options.method = "POST";
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    try {
      let response, text;
      try {
        response = await fetch(api.url + path, options);
        text = await response.text();
      } catch {
        if (controller.signal.aborted) {
          throw new ApiError(`no answer from ${api.url} within ${REQUEST_TIMEOUT_MS / 1000} s`, null);
        }
        throw new ApiError(unreachable(), null);
      }
      let data = null;
      try {
        data = JSON.parse(text);
      } catch {
        // not JSON: described below
      }
      if (!response.ok) {
        const message = data && typeof data.error === "string"
          ? data.error
          : `${response.statusText || "error"}${text ? ": " + text.trim().slice(0, 200) : ""}`;
        throw new ApiError(message, response.status);
      }
      if (data === null) {
        throw new ApiError(`the answer of ${api.url}${path} is not JSON: ${text.trim().slice(0, 200)}`, response.status);
      }
      return { data, headers: response.headers };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The newest AVAILABLE version in the model status (what TF Serving's default policy serves). */
  async function servedVersion() {
    const { data } = await call(`/v1/models/${MODEL}`);
    const states = Array.isArray(data.model_version_status) ? data.model_version_status : [];
    const available = states.filter((s) => s.state === "AVAILABLE").map((s) => Number(s.version));
    return { version: available.length ? Math.max(...available) : null, states };
  }

  /** Captions for base64 images: [{caption, alternatives?, scores?}], and the model version. */
  async function predict(images, signature) {
    const { data, headers } = await call(`/v1/models/${MODEL}:predict`, {
      signature_name: signature,
      instances: images.map((b64) => ({ b64 })),
    });
    const predictions = data.predictions;
    if (!Array.isArray(predictions) || predictions.length !== images.length) {
      throw new ApiError(`the server answered ${JSON.stringify(data).slice(0, 200)} for ${images.length} image(s)`, 200);
    }
    // The local server names the version that answered; TF Serving does not: ask its status.
    let version = Number(headers.get("X-Model-Version")) || null;
    if (version === null) {
      try {
        version = (await servedVersion()).version;
      } catch {
        version = null;
      }
    }
    return { predictions: predictions.map(normalise), version };
  }

  /** A one-output signature gives the bare caption string; a several-output one an object. */
  function normalise(prediction) {
    if (typeof prediction === "string") return { caption: prediction };
    if (prediction && typeof prediction === "object" && typeof prediction.caption === "string") return prediction;
    throw new ApiError(`unexpected prediction: ${JSON.stringify(prediction).slice(0, 200)}`, 200);
  }

  /** Why the server refused an image, in words a user acts on. */
  function describe(error) {
    if (!(error instanceof ApiError)) return `error: ${error && error.message ? error.message : error}`;
    if (error.status === null) return error.message;
    if (error.status === 413) return `too large for the server: ${error.message}`;
    if (error.status === 400 && /image/i.test(error.message)) return `not an image: ${error.message}`;
    return `${error.message} (HTTP ${error.status})`;
  }

  /** The served model's card (the local server's /model-card.json): what it is, and a banner
   *  for a model trained on synthetic shapes. TF Serving has no such path: then nothing shows. */
  async function showModelCard() {
    let card;
    try {
      card = (await call("/model-card.json")).data;
    } catch (error) {
      return;
    }
    const line = $("#model-card");
    line.textContent = `Version ${card.version}: ${card.summary}.`;
    line.hidden = false;
    const warning = $("#model-warning");
    warning.textContent = card.warning || "";
    warning.hidden = !card.warning;
  }

  async function refreshServerStatus() {
    try {
      const { version, states } = await servedVersion();
      if (version !== null) {
        serverStatus.textContent = `Model ${MODEL}, version ${version}, is ready.`;
      } else {
        const seen = states.map((s) => `version ${s.version} ${s.state}`).join(", ");
        serverStatus.textContent = `Model ${MODEL} has no version ready yet${seen ? ` (${seen})` : ""}.`;
      }
      serverStatus.classList.remove("is-error");
    } catch (error) {
      serverStatus.textContent = `Caption server: ${describe(error)}`;
      serverStatus.classList.add("is-error");
    }
  }

  // ------------------------------------------------------------------------------------------
  // Results on the page

  function addEntry(file) {
    const item = template.content.firstElementChild.cloneNode(true);
    const entry = {
      file,
      item,
      generation: 0,
      objectUrl: URL.createObjectURL(file),
      img: item.querySelector("img"),
      caption: item.querySelector(".caption"),
      error: item.querySelector(".error"),
      meta: item.querySelector(".meta"),
      alternatives: item.querySelector(".alternatives"),
    };
    item.querySelector(".file-name").textContent = file.name || "(unnamed file)";
    entry.img.addEventListener("error", () => {
      entry.img.hidden = true;
      item.querySelector(".no-preview").hidden = false;
    });
    entry.img.src = entry.objectUrl;
    results.append(item);
    entries.push(entry);
    return entry;
  }

  function showPending(entry, signature) {
    entry.item.dataset.state = "pending";
    entry.caption.hidden = false;
    entry.caption.textContent = signature === "beam_search" ? "Captioning (beam search)…" : "Captioning…";
    entry.caption.setAttribute("aria-busy", "true");
    entry.caption.classList.remove("is-empty");
    delete entry.caption.dataset.caption;
    entry.error.hidden = true;
    entry.meta.hidden = true;
    entry.alternatives.hidden = true;
    entry.img.alt = `${entry.file.name}: being captioned`;
  }

  function showCaption(entry, prediction, version, signature) {
    entry.item.dataset.state = "done";
    entry.caption.removeAttribute("aria-busy");
    entry.caption.dataset.caption = prediction.caption;
    entry.caption.textContent = prediction.caption || "(empty caption: the model ended it at once)";
    entry.caption.classList.toggle("is-empty", !prediction.caption);
    entry.img.alt = prediction.caption || `${entry.file.name} (the model gave an empty caption)`;
    entry.meta.querySelector(".version").textContent = version === null ? "unknown" : String(version);
    entry.meta.querySelector(".method").textContent = signature === "beam_search" ? "beam search" : "greedy";
    entry.meta.hidden = false;
    const rows = entry.alternatives.querySelector("tbody");
    rows.replaceChildren();
    const alternatives = Array.isArray(prediction.alternatives) ? prediction.alternatives : [];
    alternatives.forEach((text, index) => {
      const row = rows.insertRow();
      const captionCell = row.insertCell();
      captionCell.className = "alt-caption";
      captionCell.dataset.caption = text;
      captionCell.textContent = text || "(empty)";
      const scoreCell = row.insertCell();
      scoreCell.className = "alt-score";
      const score = Array.isArray(prediction.scores) ? Number(prediction.scores[index]) : NaN;
      scoreCell.dataset.score = String(score);
      scoreCell.textContent = Number.isFinite(score) ? score.toFixed(3).replace(/^-(0\.0+)$/, "$1") : "–";
    });
    entry.alternatives.hidden = alternatives.length === 0;
  }

  function showError(entry, message) {
    entry.item.dataset.state = "error";
    entry.caption.removeAttribute("aria-busy");
    entry.caption.hidden = true;
    entry.meta.hidden = true;
    entry.alternatives.hidden = true;
    entry.error.textContent = message;
    entry.error.hidden = false;
    entry.img.alt = `${entry.file.name}: no caption (${message})`;
  }

  function updateEmptyState() {
    noResults.hidden = entries.length > 0;
    clearButton.disabled = entries.length === 0;
  }

  // ------------------------------------------------------------------------------------------
  // Captioning: one request per upload, one per image when the server refuses the batch

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => {
        const url = String(reader.result);
        const comma = url.indexOf(",");
        resolve(comma < 0 ? "" : url.slice(comma + 1));
      };
      reader.onerror = () => reject(reader.error || new Error("cannot read the file"));
      reader.readAsDataURL(file);
    });
  }

  function batches(items) {
    const out = [];
    let current = [];
    let bytes = 0;
    for (const item of items) {
      const size = item.entry.file.size;
      if (current.length && (current.length >= MAX_BATCH_IMAGES || bytes + size > MAX_BATCH_BYTES)) {
        out.push(current);
        current = [];
        bytes = 0;
      }
      current.push(item);
      bytes += size;
    }
    if (current.length) out.push(current);
    return out;
  }

  async function captionBatch(batch, signature) {
    try {
      const { predictions, version } = await predict(batch.map((item) => item.b64), signature);
      batch.forEach((item, i) => {
        if (item.entry.generation === item.generation) showCaption(item.entry, predictions[i], version, signature);
      });
    } catch (error) {
      // One bad image fails its whole request (as in TF Serving): retry the images one by one,
      // so it does not hide the other captions.
      if (batch.length > 1 && error instanceof ApiError && (error.status === 400 || error.status === 413)) {
        for (const item of batch) await captionBatch([item], signature);
        return;
      }
      const message = describe(error);
      for (const item of batch) {
        if (item.entry.generation === item.generation) showError(item.entry, message);
      }
    }
  }

  async function caption(toCaption) {
    const signature = beamBox.checked ? "beam_search" : "serving_default";
    const items = [];
    for (const entry of toCaption) {
      entry.generation += 1;
      showPending(entry, signature);
    }
    for (const entry of toCaption) {
      const generation = entry.generation;
      try {
        items.push({ entry, generation, b64: entry.b64 ?? (entry.b64 = await readBase64(entry.file)) });
      } catch (error) {
        showError(entry, `cannot read the file: ${error.message || error}`);
      }
    }
    for (const batch of batches(items)) await captionBatch(batch, signature);
    if (!api.error) refreshServerStatus();
  }

  function addFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    const added = files.map(addEntry);
    updateEmptyState();
    caption(added);
  }

  // ------------------------------------------------------------------------------------------
  // Events

  fileInput.addEventListener("change", () => {
    addFiles(fileInput.files);
    fileInput.value = ""; // choosing the same file again is a new upload
  });

  // Drop anywhere on the page; a drop outside the page's handlers would open the file instead.
  let dragDepth = 0;
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    dropZone.classList.add("is-dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropZone.classList.remove("is-dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    dropZone.classList.remove("is-dragging");
    addFiles(event.dataTransfer?.files);
  });

  beamBox.addEventListener("change", () => {
    if (entries.length) caption(entries.slice()); // caption what is on the page again, the other way
  });

  clearButton.addEventListener("click", () => {
    for (const entry of entries) {
      entry.generation += 1; // answers still on their way are dropped
      URL.revokeObjectURL(entry.objectUrl);
    }
    entries.length = 0;
    results.replaceChildren();
    updateEmptyState();
    fileInput.focus();
  });

  updateEmptyState();
  if (api.error) {
    serverStatus.textContent = `Caption server: ${api.error}`;
    serverStatus.classList.add("is-error");
  } else {
    refreshServerStatus();
    showModelCard();
  }
})();
