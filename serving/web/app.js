// The caption web page's logic (loaded by index.html; tested by tests/test_web_e2e.py).
//
// It talks to TF Serving's REST API, or the local server's copy of it (serving/README.md):
//   POST <api>/v1/models/captioner:predict  {"signature_name": ..., "instances": [{"b64": ...}, ...]}
//   GET  <api>/v1/models/captioner           model status, for the version that serves
//   GET  <api>/v1/models/captioner/metadata  its signatures: is there an `attention` one (the heat
//                                            map), does serving_default run beam search
// <api> is this page's own origin (the local server and the compose nginx both serve the page
// beside the API), or `?api=http://host:8501`. A cross-origin API must allow CORS (TF Serving's
// --rest_api_enable_cors_support, the local server's --enable-cors-support, or a proxy such as
// serving/nginx.conf).
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
  const attentionNote = $("#attention-note");
  const HEAT_MAP_DARKEST = 0.75; // opacity over the cells the word looked at least

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
  // The model's signatures, once its metadata is read: which one the page calls by default.
  let signatures = null;

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

  /** The served model's signatures from its metadata (TF Serving's and the local server's):
   *  {names: Set, defaultIsBeam}; empty when the metadata cannot be read. */
  async function loadSignatures() {
    try {
      const { data } = await call(`/v1/models/${MODEL}/metadata`);
      const defs = data?.metadata?.signature_def?.signature_def || {};
      const outputs = Object.keys(defs.serving_default?.outputs || {});
      return { names: new Set(Object.keys(defs)), defaultIsBeam: outputs.includes("alternatives") };
    } catch {
      return { names: new Set(), defaultIsBeam: false };
    }
  }

  async function showAttentionNote() {
    signatures = await signaturesReady;
    if (!signatures.names.size) return;
    attentionNote.textContent = signatures.names.has("attention")
      ? "Point at a word of a caption to see where in the photo the model looked for it."
      : "This model has no attention decoder (merge model), so the page cannot show where it looked.";
    attentionNote.hidden = false;
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
      canvas: item.querySelector(".heat-map"),
      copy: item.querySelector(".copy"),
      confidence: item.querySelector(".confidence"),
      attention: null, // {grid: [h, w], weights: [[...h*w] per word position]} of the shown caption
    };
    entry.copy.addEventListener("click", () => copyCaption(entry));
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
    entry.copy.hidden = true;
    entry.confidence.hidden = true;
    entry.attention = null;
    hideHeatMap(entry);
    entry.img.alt = `${entry.file.name}: being captioned`;
  }

  function showCaption(entry, prediction, version, signature) {
    entry.item.dataset.state = "done";
    entry.caption.removeAttribute("aria-busy");
    entry.caption.dataset.caption = prediction.caption;
    entry.caption.classList.toggle("is-empty", !prediction.caption);
    if (prediction.caption && Array.isArray(prediction.words) && Array.isArray(prediction.attention)) {
      showWords(entry, prediction);
    } else {
      entry.caption.textContent = prediction.caption || "(empty caption: the model ended it at once)";
    }
    entry.copy.hidden = !prediction.caption;
    entry.img.alt = prediction.caption || `${entry.file.name} (the model gave an empty caption)`;
    entry.meta.querySelector(".version").textContent = version === null ? "unknown" : String(version);
    const beam = signature === "beam_search" || (signatures?.defaultIsBeam ?? false);
    entry.meta.querySelector(".method").textContent = beam ? "beam search" : "greedy";
    entry.meta.hidden = false;
    showConfidence(entry, prediction);
    showAlternatives(entry, prediction);
  }

  /** The caption as words a user can point at; each shows its heat map and probability. */
  function showWords(entry, prediction) {
    entry.attention = { grid: prediction.grid_size, weights: prediction.attention };
    entry.caption.replaceChildren();
    prediction.words.forEach((word, index) => {
      if (!word) return;
      if (entry.caption.childNodes.length) entry.caption.append(" ");
      const span = document.createElement("span");
      span.className = "word";
      span.tabIndex = 0;
      span.textContent = word;
      span.dataset.index = String(index);
      const probability = Number(prediction.word_probabilities?.[index]);
      if (Number.isFinite(probability)) {
        span.dataset.probability = String(probability);
        span.title = `${word}: probability ${percent(probability)}`;
      }
      for (const type of ["mouseenter", "focus"]) span.addEventListener(type, () => showHeatMap(entry, span));
      for (const type of ["mouseleave", "blur"]) span.addEventListener(type, () => hideHeatMap(entry));
      entry.caption.append(span);
    });
  }

  function percent(probability) {
    return probability < 0.005 ? "<1%" : `${Math.round(probability * 100)}%`;
  }

  /** The scores as a person reads them: per word for the default caption (geometric mean of its
   *  words' probabilities), or the chosen caption's share of the beam's candidates. */
  function showConfidence(entry, prediction) {
    const probabilities = (prediction.word_probabilities || [])
      .filter((_, i) => prediction.words?.[i])
      .map(Number)
      .filter((p) => p > 0);
    const shares = candidateShares(prediction.scores);
    let text = "";
    if (probabilities.length) {
      const mean = Math.exp(probabilities.reduce((sum, p) => sum + Math.log(p), 0) / probabilities.length);
      text = `Confidence: ${percent(mean)} per word on average; point at a word for its own.`;
    } else if (shares.length > 1) {
      text = `Confidence: ${percent(shares[0])} of the ${shares.length} candidates' weight.`;
    }
    entry.confidence.textContent = text;
    entry.confidence.hidden = !text;
  }

  /** Beam scores [K] (best first) -> each candidate's share, softmax over the K scores. */
  function candidateShares(scores) {
    if (!Array.isArray(scores) || !scores.length) return [];
    const values = scores.map(Number);
    if (!values.every(Number.isFinite)) return [];
    const best = Math.max(...values);
    const weights = values.map((v) => Math.exp(v - best));
    const total = weights.reduce((a, b) => a + b, 0);
    return weights.map((w) => w / total);
  }

  /** The other candidates of a beam search (not the chosen caption again), with their shares. */
  function showAlternatives(entry, prediction) {
    const rows = entry.alternatives.querySelector("tbody");
    rows.replaceChildren();
    const alternatives = Array.isArray(prediction.alternatives) ? prediction.alternatives : [];
    const shares = candidateShares(prediction.scores);
    alternatives.forEach((text, index) => {
      if (index === 0 && text === prediction.caption) return; // the chosen caption, shown above
      const row = rows.insertRow();
      const captionCell = row.insertCell();
      captionCell.className = "alt-caption";
      captionCell.dataset.caption = text;
      captionCell.textContent = text || "(empty)";
      const scoreCell = row.insertCell();
      scoreCell.className = "alt-score";
      const score = Array.isArray(prediction.scores) ? Number(prediction.scores[index]) : NaN;
      scoreCell.dataset.score = String(score);
      scoreCell.title = Number.isFinite(score) ? `score ${score.toFixed(3)}` : "";
      scoreCell.textContent = shares.length === alternatives.length ? percent(shares[index]) : "–";
    });
    entry.alternatives.hidden = rows.rows.length === 0;
  }

  /** Darkens the photo except where the model looked when it chose this word: the word's
   *  attention weights over the backbone's grid (row-major h x w), stretched over the whole
   *  photo as the model's input was, smoothed by the browser's scaling. */
  function showHeatMap(entry, span) {
    const attention = entry.attention;
    const weights = attention?.weights?.[Number(span.dataset.index)];
    const [rows, columns] = (attention?.grid || []).map(Number);
    if (!Array.isArray(weights) || !(rows > 0 && columns > 0) || weights.length !== rows * columns) return;
    if (!entry.img.complete || !entry.img.naturalWidth) return;
    const min = Math.min(...weights);
    const range = Math.max(...weights) - min || 1;
    const cells = document.createElement("canvas");
    cells.width = columns;
    cells.height = rows;
    const cellContext = cells.getContext("2d");
    const pixels = cellContext.createImageData(columns, rows);
    weights.forEach((weight, i) => {
      pixels.data[i * 4 + 3] = Math.round(255 * HEAT_MAP_DARKEST * (1 - (weight - min) / range));
    });
    cellContext.putImageData(pixels, 0, 0);
    const canvas = entry.canvas;
    canvas.width = entry.img.clientWidth;
    canvas.height = entry.img.clientHeight;
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.drawImage(cells, 0, 0, canvas.width, canvas.height);
    canvas.hidden = false;
    entry.caption.querySelectorAll(".word.is-active").forEach((word) => word.classList.remove("is-active"));
    span.classList.add("is-active");
    entry.item.dataset.word = span.dataset.index;
  }

  function hideHeatMap(entry) {
    entry.canvas.hidden = true;
    entry.caption.querySelectorAll(".word.is-active").forEach((word) => word.classList.remove("is-active"));
    delete entry.item.dataset.word;
  }

  /** Copies the caption; outside a secure context (http on another host) the Clipboard API is
   *  missing, so the old way (select and copy) is used there. */
  async function copyCaption(entry) {
    const text = entry.caption.dataset.caption || "";
    let copied = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        copied = true;
      }
    } catch {
      copied = false;
    }
    if (!copied) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.append(area);
      area.select();
      copied = document.execCommand("copy");
      area.remove();
    }
    entry.copy.textContent = copied ? "Copied" : "Copy failed";
    setTimeout(() => { entry.copy.textContent = "Copy"; }, 2000);
  }

  function showError(entry, message) {
    entry.item.dataset.state = "error";
    entry.caption.removeAttribute("aria-busy");
    entry.caption.hidden = true;
    entry.meta.hidden = true;
    entry.alternatives.hidden = true;
    entry.copy.hidden = true;
    entry.confidence.hidden = true;
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
    signatures = await signaturesReady;
    const plain = signatures.names.has("attention") ? "attention" : "serving_default";
    const signature = beamBox.checked ? "beam_search" : plain;
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

  // Paste an image (a screenshot, a copied photo) anywhere on the page.
  document.addEventListener("paste", (event) => {
    const images = Array.from(event.clipboardData?.files || []).filter((file) => file.type.startsWith("image/"));
    if (!images.length) return;
    event.preventDefault();
    addFiles(images);
  });

  // The example photos beside the page (serving/web/examples/), captioned like an upload.
  for (const button of document.querySelectorAll(".example")) {
    button.addEventListener("click", async () => {
      const src = button.dataset.src;
      const name = src.split("/").pop();
      try {
        const response = await fetch(src, { cache: "no-store" });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const blob = await response.blob();
        addFiles([new File([blob], name, { type: blob.type || "image/jpeg" })]);
      } catch (error) {
        $("#examples-title").textContent = `The example ${name} could not be loaded (${error.message || error}).`;
      }
    });
  }

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
  const signaturesReady = api.error ? Promise.resolve({ names: new Set(), defaultIsBeam: false }) : loadSignatures();
  if (api.error) {
    serverStatus.textContent = `Caption server: ${api.error}`;
    serverStatus.classList.add("is-error");
  } else {
    refreshServerStatus();
    showModelCard();
    showAttentionNote();
  }
})();
