// The vecsearch page: a prompt, pictures and refinement turned into one POST /api/v1/search body.
// Plain ES2020, no build step and no request off this server, so it works offline. links.js keeps the
// page in its address and browses the collection; session.js signs in where the server wants a token.
"use strict";

// --- state: everything the next query is built from --------------------------------------------------

const state = {
  upload: null,   // {term, url, name, width, height, items}: the picture searched by, if any
  uploads: new Map(), // term -> upload: pictures sent from this page, for back/forward
  like: [],       // item ids to move towards ("more like this")
  unlike: [],     // item ids to move away from ("less like this")
  known: new Map(), // id -> {label, thumbnail}: what the chips of liked items show
  panelImage: null, // the `id:N` / `upload:` reference the describe/classify panel is about
  searchSeq: 0,   // only the answer to the latest search is shown
  busy: 0,        // user actions in flight (tests wait on body[data-state=idle])
  done: 0,
};

const $ = (selector) => document.querySelector(selector);

// Thumbnails are asked for at the size a card shows, twice that for dense screens.
const THUMB_SIZE = 256;

// --- talking to the API ---------------------------------------------------------------------------------

class ApiError extends Error {}

/** JSON from the API, or an ApiError with the server's one-line `error` message. A 401 asks for the
 * server's token (session.js), then sends the request again. */
async function api(method, url, body) {
  for (;;) {
    try {
      return await request(method, url, body);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) throw err;
      await signIn(err.message);
    }
  }
}

async function request(method, url, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body; // the browser sets the multipart boundary itself
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(`cannot reach the server (${err.message}); is vecsearch serve still running?`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    // not JSON: a proxy's page or a crash; never show it raw, it may be a whole HTML document
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : `${response.status} ${response.statusText}`;
    throw Object.assign(new ApiError(message), { status: response.status });
  }
  return data;
}

/** Runs one user action, keeping body[data-state] "busy" until it ends and its errors on screen. */
async function action(fn) {
  state.busy += 1;
  document.body.dataset.state = "busy";
  try {
    await fn();
  } catch (err) {
    showError(err instanceof ApiError ? err.message : `unexpected error: ${err.message}`);
    if (!(err instanceof ApiError)) console.error(err);
  } finally {
    state.busy -= 1;
    state.done += 1;
    document.body.dataset.done = String(state.done);
    if (state.busy === 0) document.body.dataset.state = "idle";
  }
}

function showError(message) {
  for (const box of [$("#error"), $("#picture-panel").open ? $("#panel-error") : null]) {
    if (!box) continue;
    box.textContent = message;
    box.hidden = false;
  }
}

function clearError() {
  for (const box of [$("#error"), $("#panel-error")]) {
    box.textContent = "";
    box.hidden = true;
  }
}

// --- building the query -----------------------------------------------------------------------------

/** Prompt terms: the box is one term, unless the user separates several with " | ". */
function promptTerms() {
  return $("#prompt").value.split(" | ").map((t) => t.trim()).filter((t) => t.length > 0);
}

/** A number input's value, or null when it is empty (the API's "no filter"). */
function numberOrNull(input) {
  const value = input.value.trim();
  if (value === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

/** Exactly the body POST /api/v1/search gets; also what the query JSON panel shows. */
function buildQuery() {
  const terms = promptTerms();
  if (state.upload) terms.push(state.upload.term);
  const k = Math.round(numberOrNull($("#k")) ?? 10);
  return {
    terms,
    k,
    kind: $("#kind").value || null,
    path: $("#path").value.trim() || null,
    min_score: numberOrNull($("#min-score")),
    within: numberOrNull($("#within")),
    like: [...state.like],
    unlike: [...state.unlike],
    tag: $("#tag").value || null,
  };
}

function showQuery(query = buildQuery()) {
  $("#query-json").textContent = JSON.stringify(query, null, 2);
}

// --- searching ------------------------------------------------------------------------------------

/** Search (or, with no query, browse the collection); `history` says how the address follows: "push"
 * (a new search), "replace" (the page opened) or null (back/forward brought the address). */
async function search(history = "push") {
  const query = buildQuery();
  showQuery(query);
  remember(history);
  const seq = ++state.searchSeq;
  if (query.terms.length === 0 && query.like.length === 0 && query.unlike.length === 0) {
    try {
      await browse(seq);
    } catch (err) {
      if (seq === state.searchSeq) $("#status").textContent = "The pictures could not be loaded.";
      throw err;
    }
    return;
  }
  $("#status").textContent = "Searching…";
  try {
    const answer = await api("POST", "/api/v1/search", query);
    if (seq !== state.searchSeq) return; // a later search has been sent: its answer wins
    clearError();
    renderResults(answer);
  } catch (err) {
    if (seq !== state.searchSeq) return;
    $("#results").replaceChildren(); // results of another query would look like this one's
    showView("search");
    $("#status").textContent = "The search failed.";
    throw err;
  }
}

function renderResults(answer) {
  const hits = answer.hits;
  const cards = hits.map(resultCard);
  $("#results").replaceChildren(...cards);
  showView("search");
  const count = hits.length === 1 ? "1 result" : `${hits.length} results`;
  $("#status").textContent = `${count} in ${Math.round(answer.took_ms)} ms`;
}

/** The item a hit stands for when refining or describing: a caption's picture, else the item. */
function pictureId(hit) {
  return hit.kind === "caption" && hit.image != null ? hit.image : hit.id;
}

function withSize(url, size) {
  return `${url}${url.includes("?") ? "&" : "?"}size=${size}`;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role" || key === "for") node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function thumbnail(hit) {
  const alt = hit.caption || hit.relpath;
  if (!hit.thumbnail) {
    return el("div", { className: "thumb-placeholder", "aria-hidden": "true" }, [hit.caption || "no picture"]);
  }
  const img = el("img", {
    className: "thumb",
    src: withSize(hit.thumbnail, THUMB_SIZE),
    srcset: `${withSize(hit.thumbnail, THUMB_SIZE)} 1x, ${withSize(hit.thumbnail, THUMB_SIZE * 2)} 2x`,
    alt,
    loading: "lazy",
    decoding: "async",
  });
  // A picture gone from disk since the crawl: say so instead of a broken-image icon.
  img.addEventListener("error", () => img.replaceWith(
    el("div", { className: "thumb-placeholder" }, ["picture unavailable"])), { once: true });
  return el("a", {
    className: "thumb-link",
    href: withSize(hit.thumbnail, 1024),
    target: "_blank",
    rel: "noopener",
    "aria-label": `Open the picture ${hit.relpath} (rank ${hit.rank})`,
  }, [img]);
}

/** A result's card; a browsed picture (no score) has no "less like this": there is nothing to refine yet. */
function resultCard(hit) {
  const target = pictureId(hit);
  const browsed = hit.score === null;
  state.known.set(target, { label: hit.relpath, thumbnail: hit.thumbnail });
  const buttons = [];
  const more = el("button", { type: "button", className: "more-like", title: "More like this",
                              "aria-label": `More like ${hit.relpath}` }, ["More like this"]);
  more.addEventListener("click", () => refine("like", target));
  buttons.push(more);
  if (!browsed) {
    const less = el("button", { type: "button", className: "less-like", title: "Less like this",
                                "aria-label": `Less like ${hit.relpath}` }, ["Less like this"]);
    less.addEventListener("click", () => refine("unlike", target));
    buttons.push(less);
  }
  if (hit.thumbnail) {
    const describe = el("button", { type: "button", className: "describe",
                                    "aria-label": `Describe or classify ${hit.relpath}` }, ["Describe"]);
    describe.addEventListener("click", () => openPanel(`id:${target}`, hit.relpath, hit.thumbnail));
    buttons.push(describe);
  }
  const score = browsed ? [] : [
    el("span", { className: "score", title: `cosine similarity ${hit.score}` }, [hit.score.toFixed(3)])];
  return el("li", {
    className: `result kind-${hit.kind}`,
    dataset: { id: String(hit.id), rank: String(hit.rank), kind: hit.kind, image: String(hit.image ?? "") },
  }, [
    thumbnail(hit),
    el("div", { className: "meta" }, [
      el("div", { className: "meta-line" }, [
        el("span", { className: "rank", title: "rank" }, [`#${hit.rank}`]),
        el("span", { className: "kind" }, [hit.kind]),
        ...score,
      ]),
      el("p", { className: "caption", hidden: !hit.caption }, [hit.caption || ""]),
      tagList(hit.tags || []),
      el("p", { className: "relpath", title: hit.path }, [hit.relpath]),
    ]),
    el("div", { className: "actions" }, buttons),
  ]);
}

/** A picture's zero-shot tags, most likely first (an empty list where the index has none). */
function tagList(tags) {
  return el("ul", { className: "tags", hidden: tags.length === 0, "aria-label": "Tags" }, tags.map((tag) => {
    const percent = (tag.probability * 100).toFixed(1);
    return el("li", { className: "tag", title: `${percent}% (cosine ${tag.score.toFixed(3)})` }, [tag.label]);
  }));
}

// --- refinement ---------------------------------------------------------------------------------------

/** "More/less like this": an id goes on one list (and off the other) and the search runs again. */
function refine(list, id) {
  const other = list === "like" ? "unlike" : "like";
  state[other] = state[other].filter((x) => x !== id);
  if (!state[list].includes(id)) state[list].push(id);
  renderChips();
  action(search).then(keepFocus);
}

/** The button just used went away with its card: put focus before the new results, not on <body>. */
function keepFocus() {
  if (document.activeElement === document.body || document.activeElement === null) $("#status").focus();
}

function clearRefinement() {
  if (state.like.length === 0 && state.unlike.length === 0) return false;
  state.like = [];
  state.unlike = [];
  renderChips();
  action(search);
  return true;
}

function chip(kind, text, thumb, onRemove, extra = []) {
  const children = [];
  if (thumb) children.push(el("img", { src: thumb, alt: "", className: "chip-thumb" }));
  children.push(el("span", { className: "chip-kind" }, [kind]), el("span", { className: "chip-text", title: text }, [text]));
  children.push(...extra);
  const remove = el("button", { type: "button", className: "chip-remove", "aria-label": `Remove ${kind} ${text}` }, ["×"]);
  remove.addEventListener("click", onRemove);
  children.push(remove);
  return el("li", { className: `chip chip-${kind.replace(/\W+/g, "-")}` }, children);
}

function renderChips() {
  const chips = [];
  if (state.upload) {
    const up = state.upload;
    const describe = el("button", { type: "button", className: "describe-upload small",
                                    "aria-label": `Describe or classify ${up.name}` }, ["Describe"]);
    describe.addEventListener("click", () => openPanel(up.term, up.name, up.url));
    const size = up.width ? ` (${up.width}×${up.height})` : "";
    const node = chip("picture", `${up.name}${size}`, up.url, () => removeUpload(), [describe]);
    node.id = "upload-chip";
    node.dataset.term = up.term;
    chips.push(node);
  }
  for (const list of ["like", "unlike"]) {
    for (const id of state[list]) {
      const known = state.known.get(id) || { label: `id ${id}`, thumbnail: null };
      const thumb = known.thumbnail ? withSize(known.thumbnail, 64) : null;
      const node = chip(list === "like" ? "more like" : "less like", known.label, thumb, () => {
        state[list] = state[list].filter((x) => x !== id);
        renderChips();
        action(search);
      });
      node.dataset.id = String(id);
      chips.push(node);
    }
  }
  $("#chips").replaceChildren(...chips);
  $("#chips-empty").hidden = chips.length > 0;
  $("#clear-refinement").hidden = state.like.length + state.unlike.length === 0;
  showQuery();
}

// --- pictures sent by the user -----------------------------------------------------------------------

/** Upload a picture, then search by it (with the prompt and refinement, if any). */
async function usePicture(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    throw new ApiError(`${file.name} is not an image (${file.type})`);
  }
  const form = new FormData();
  form.append("file", file, file.name || "picture");
  $("#status").textContent = `Uploading ${file.name || "the picture"}…`;
  const answer = await api("POST", "/api/v1/uploads", form);
  const previous = state.uploads.get(answer.upload);
  state.upload = {
    term: answer.upload,
    url: previous ? previous.url : URL.createObjectURL(file), // kept: back/forward may show it again
    name: file.name || "picture",
    width: answer.width,
    height: answer.height,
    items: answer.items,
  };
  state.uploads.set(answer.upload, state.upload);
  renderChips();
  await search();
}

function removeUpload() {
  state.upload = null;
  renderChips();
  action(search);
}

function firstImage(fileList) {
  return Array.from(fileList || []).find((f) => !f.type || f.type.startsWith("image/")) || null;
}

function setUpDropping() {
  const zone = $("#drop-zone");
  // Dropping anywhere works: without this, a picture dropped beside the zone would replace the page.
  document.addEventListener("dragover", (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    zone.classList.remove("dragging");
    if (!event.dataTransfer || event.dataTransfer.files.length === 0) return;
    event.preventDefault();
    const file = firstImage(event.dataTransfer.files);
    action(() => file ? usePicture(file) : Promise.reject(new ApiError("drop an image file (JPEG, PNG, WebP, …)")));
  });
  $("#file-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = ""; // choosing the same file again still fires `change`
    if (file) action(() => usePicture(file));
  });
}

// --- describe and classify ------------------------------------------------------------------------------

function openPanel(ref, label, thumb) {
  const panel = $("#picture-panel");
  state.panelImage = ref;
  $("#panel-title").textContent = label;
  const image = $("#panel-image");
  image.src = thumb && !thumb.startsWith("blob:") ? withSize(thumb, 512) : thumb || "";
  image.alt = label;
  image.hidden = !thumb;
  $("#describe-output").replaceChildren();
  $("#classify-output").replaceChildren();
  $("#panel-error").hidden = true;
  if (!panel.open) panel.showModal();
  $("#classify-labels").focus();
  action(describe);
}

async function describe() {
  const ref = state.panelImage;
  const answer = await api("POST", "/api/v1/describe", { image: ref, k: 5 });
  if (ref !== state.panelImage) return;
  const items = answer.hits.map((hit) => el("li", { className: "described-item" }, [
    el("span", { className: "described-text" }, [hit.caption || ""]),
    el("span", { className: "score" }, [hit.score.toFixed(3)]),
    el("span", { className: "relpath muted" }, [hit.relpath]),
  ]));
  if (items.length === 0) items.push(el("li", { className: "muted" }, ["This index has no captions."]));
  $("#describe-output").replaceChildren(...items);
}

/** The labels box as a list: split on commas, blanks dropped, repeats once. */
function labelsFromInput() {
  const seen = new Set();
  for (const part of $("#classify-labels").value.split(",")) {
    const label = part.trim();
    if (label) seen.add(label);
  }
  return [...seen];
}

async function classify() {
  const labels = labelsFromInput();
  if (labels.length === 0) throw new ApiError("give some labels, separated by commas (cat, dog, car)");
  const ref = state.panelImage;
  const answer = await api("POST", "/api/v1/classify", { image: ref, labels });
  if (ref !== state.panelImage) return;
  $("#panel-error").hidden = true;
  $("#classify-output").replaceChildren(...answer.labels.map((item) => {
    const percent = (item.probability * 100).toFixed(1);
    return el("li", { className: "classified-item", dataset: { label: item.label } }, [
      el("span", { className: "label" }, [item.label]),
      el("meter", { min: 0, max: 1, value: item.probability, "aria-label": `${item.label}: ${percent}%` }),
      el("span", { className: "probability" }, [`${percent}%`]),
    ]);
  }));
}

function closePanel() {
  const panel = $("#picture-panel");
  if (panel.open) panel.close();
}

// --- copying the query ---------------------------------------------------------------------------------

async function copyQuery() {
  const pre = $("#query-json");
  const text = pre.textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("#copy-status").textContent = "Copied.";
  } catch (_) {
    // No clipboard (an insecure origin, or permission refused): select the text for Ctrl+C.
    const range = document.createRange();
    range.selectNodeContents(pre);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    pre.focus();
    $("#copy-status").textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

// --- keyboard ---------------------------------------------------------------------------------------------

function isTyping(target) {
  return target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

function onKey(event) {
  const dialog = document.querySelector("dialog[open]"); // the picture panel, or the sign-in
  if (event.key === "/" && !isTyping(event.target) && !dialog &&
      !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault(); // focus the box without typing "/" into it
    $("#prompt").focus();
    $("#prompt").select();
  } else if (event.key === "Escape" && !dialog) {
    // The open dialog closes itself on Escape; otherwise Escape undoes the refinement.
    clearRefinement();
  }
}

// --- start ------------------------------------------------------------------------------------------------

async function loadInfo() {
  const info = await api("GET", "/api/v1/info");
  const counts = info.counts || {};
  const parts = [info.name, info.model, `${(counts.items ?? 0).toLocaleString()} items`];
  if (counts.images !== undefined) parts.push(`${counts.images.toLocaleString()} images`);
  if (counts.captions !== undefined) parts.push(`${counts.captions.toLocaleString()} captions`);
  $("#info").textContent = parts.join(" · ");
  document.title = `${info.name} · vecsearch`;
  if (info.max_k) $("#k").max = String(info.max_k);
  await loadTags();
}

/** The tag filter offers the index's tags with their counts; it stays hidden when there are none. */
async function loadTags() {
  const tags = await api("GET", "/api/v1/tags");
  const select = $("#tag");
  const options = tags.labels.map(({ label, pictures }) =>
    el("option", { value: label }, [`${label} (${pictures.toLocaleString()})`]));
  select.replaceChildren(el("option", { value: "" }, ["Any"]), ...options);
  select.hidden = options.length === 0;
  document.querySelector('label[for="tag"]').hidden = options.length === 0;
}

function start() {
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    action(search);
  });
  $("#classify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    action(classify);
  });
  $("#copy-query").addEventListener("click", () => copyQuery());
  $("#clear-refinement").addEventListener("click", () => clearRefinement());
  $("#close-panel").addEventListener("click", closePanel);
  $("#picture-panel").addEventListener("close", () => { state.panelImage = null; });
  // The query JSON follows every edit, so it always shows what Search would send.
  for (const id of ["#prompt", "#k", "#kind", "#path", "#min-score", "#within", "#tag"]) {
    $(id).addEventListener("input", () => showQuery());
  }
  document.addEventListener("keydown", onKey);
  setUpDropping();
  setUpBrowsing();
  renderChips();
  // What the address names (a search, or a place in the collection) once the filters know the tags.
  action(async () => {
    await loadInfo();
    await restore("replace");
  });
  $("#prompt").focus();
}

start();
