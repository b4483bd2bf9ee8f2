// The page's address holds what is on it: the query, its filters and refinement, an uploaded picture by
// its hash, or the browse position when there is no query. Reload, back/forward, bookmarks and shared
// links all come back to the same results. Each new search adds a history entry; opening a link replaces.
//
//   /?q=a+red+apple&k=12&kind=any&path=trips/*&tag=beach&min_score=0.2&within=0.1&like=3&unlike=5&upload=<sha256>
//   /?order=random&seed=1234567&offset=24        (no query: the collection, a page at a time)
"use strict";

const BROWSE_ORDERS = ["random", "newest", "path"];
const SHA256 = /^[0-9a-f]{64}$/i;

// Where browsing is: the order, the shuffle's seed and the first picture shown.
const browsing = { order: "random", seed: newSeed(), offset: 0, total: 0, shown: 0 };

function newSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/** Whole numbers of a URL parameter: ids a link may carry. */
function ids(values) {
  return values.map((v) => Number(v)).filter((n) => Number.isSafeInteger(n) && n > 0);
}

/** The address of what the page shows now (only what differs from the defaults). */
function pageUrl() {
  const params = new URLSearchParams();
  const prompt = $("#prompt").value.trim();
  if (prompt) params.set("q", prompt);
  if ($("#k").value.trim() && $("#k").value.trim() !== $("#k").defaultValue) params.set("k", $("#k").value.trim());
  for (const [name, id] of [["kind", "#kind"], ["path", "#path"], ["tag", "#tag"], ["min_score", "#min-score"],
                            ["within", "#within"]]) {
    const value = $(id).value.trim();
    if (value) params.set(name, value);
  }
  for (const id of state.like) params.append("like", String(id));
  for (const id of state.unlike) params.append("unlike", String(id));
  if (state.upload) params.set("upload", state.upload.term.slice("upload:".length));
  if (!hasQuery()) {
    if (browsing.order !== "random") params.set("order", browsing.order);
    else params.set("seed", String(browsing.seed));
    if (browsing.offset > 0) params.set("offset", String(browsing.offset));
  }
  const query = params.toString();
  return location.pathname + (query ? `?${query}` : "");
}

/** Put the current state in the address: "push" (a new history entry), "replace", or nothing. */
function remember(mode) {
  if (!mode) return;
  const url = pageUrl();
  if (url === location.pathname + location.search) return; // the same search again: no new entry
  if (mode === "push") history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function hasQuery() {
  return promptTerms().length > 0 || state.upload !== null || state.like.length > 0 || state.unlike.length > 0;
}

/** The form and the refinement as the address says, then its results: on load and on back/forward. */
async function restore(mode) {
  const params = new URLSearchParams(location.search);
  $("#prompt").value = params.get("q") || "";
  $("#k").value = params.get("k") || $("#k").defaultValue;
  for (const [name, id] of [["kind", "#kind"], ["path", "#path"], ["min_score", "#min-score"], ["within", "#within"]]) {
    $(id).value = params.get(name) || "";
  }
  const tag = params.get("tag") || "";
  if (tag && ![...$("#tag").options].some((option) => option.value === tag)) {
    $("#tag").append(el("option", { value: tag }, [tag])); // the server says whether the index has it
  }
  $("#tag").value = tag;
  state.like = ids(params.getAll("like"));
  state.unlike = ids(params.getAll("unlike")).filter((id) => !state.like.includes(id));
  const upload = params.get("upload");
  if (!upload) state.upload = null;
  else if (!state.upload || state.upload.term !== `upload:${upload}`) state.upload = knownUpload(upload);
  const order = params.get("order") || "random";
  browsing.order = BROWSE_ORDERS.includes(order) ? order : "random";
  const seed = Number(params.get("seed"));
  browsing.seed = params.get("seed") !== null && Number.isSafeInteger(seed) && seed >= 0 ? seed : browsing.seed;
  const offset = Number(params.get("offset") || 0);
  browsing.offset = Number.isSafeInteger(offset) && offset > 0 ? offset : 0;
  if ($("#picture-panel").open) $("#picture-panel").close();
  renderChips();
  await Promise.all([search(mode), nameRefinedItems()]);
}

/** An upload named by a link: the picture itself if this page sent it, else its thumbnail from the server
 * (which answers 404 "upload it again" if it no longer holds it). */
function knownUpload(sha) {
  const term = `upload:${sha}`;
  return state.uploads.get(term) ||
    { term, url: SHA256.test(sha) ? `/api/v1/uploads/${sha.toLowerCase()}/thumbnail?size=128` : null,
      name: SHA256.test(sha) ? `uploaded picture ${sha.slice(0, 8)}…` : sha, width: null, height: null };
}

/** The chips of items a link refines by show their pictures, as they did when they were clicked. */
async function nameRefinedItems() {
  const unknown = [...state.like, ...state.unlike].filter((id) => !state.known.has(id));
  if (unknown.length === 0) return;
  await Promise.all(unknown.map(async (id) => {
    try {
      const item = await api("GET", `/api/v1/items/${id}`);
      state.known.set(id, { label: item.relpath, thumbnail: item.thumbnail });
    } catch (_) {
      // an id this index does not have: the search says so
    }
  }));
  renderChips();
}

// --- browsing: the collection when there is no query -------------------------------------------------

/** A page of the collection's pictures, `k` of them from the browse position. */
async function browse(seq) {
  const size = Math.max(1, Math.round(numberOrNull($("#k")) ?? 12));
  const params = new URLSearchParams({
    limit: String(size), offset: String(browsing.offset), order: browsing.order, seed: String(browsing.seed),
  });
  $("#status").textContent = "Loading pictures…";
  const answer = await api("GET", `/api/v1/pictures?${params}`);
  if (seq !== state.searchSeq) return;
  clearError();
  browsing.total = answer.total;
  browsing.shown = answer.pictures.length;
  const cards = answer.pictures.map((picture, i) => resultCard({
    id: picture.id,
    rank: answer.offset + i + 1,
    score: null,
    kind: "image",
    caption: picture.captions.length ? picture.captions[0].text : null,
    relpath: picture.relpath,
    path: picture.path,
    image: picture.id,
    tags: picture.tags,
    thumbnail: picture.thumbnail,
  }));
  $("#results").replaceChildren(...cards);
  showView("browse");
  const how = { random: "shuffled", newest: "newest first", path: "by path" }[browsing.order];
  const first = answer.offset + 1;
  const last = answer.offset + answer.pictures.length;
  $("#status").textContent = answer.total === 0
    ? "No pictures in this index yet. Type a prompt to search its captions."
    : cards.length === 0
      ? `No pictures here: the collection has ${answer.total.toLocaleString()}.`
      : `Pictures ${first.toLocaleString()}–${last.toLocaleString()} of ${answer.total.toLocaleString()}, ${how}. ` +
        "Type a prompt, or drop a picture, to search.";
  $("#browse-prev").disabled = answer.offset === 0;
  $("#browse-next").disabled = answer.next_offset === null;
  $("#browse-order").value = browsing.order;
  $("#browse-shuffle").hidden = browsing.order !== "random";
}

/** Search results or the collection: the browse controls show only with the latter. */
function showView(view) {
  document.body.dataset.view = view;
  $("#browse-nav").hidden = view !== "browse";
}

function browseTo(change) {
  const size = Math.max(1, Math.round(numberOrNull($("#k")) ?? 12));
  if (change === "next") browsing.offset += size;
  else if (change === "previous") browsing.offset = Math.max(0, browsing.offset - size);
  else if (change === "shuffle") Object.assign(browsing, { seed: newSeed(), offset: 0 });
  else Object.assign(browsing, { order: change, offset: 0 });
  // A button used may be disabled now (the last page): focus goes before the pictures, not to <body>.
  action(() => search("push")).then(() => { if (change !== browsing.order) $("#status").focus(); });
}

function setUpBrowsing() {
  $("#browse-prev").addEventListener("click", () => browseTo("previous"));
  $("#browse-next").addEventListener("click", () => browseTo("next"));
  $("#browse-shuffle").addEventListener("click", () => browseTo("shuffle"));
  $("#browse-order").addEventListener("change", (event) => browseTo(event.target.value));
  window.addEventListener("popstate", () => action(() => restore(null)));
}
