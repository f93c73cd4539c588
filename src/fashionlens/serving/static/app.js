// fashionlens web page: classify a garment photo, draw its box and landmarks, show similar catalog items,
// search the catalog by words, and add the photo to the catalog after the person confirms or corrects the
// proposed labels.  Plain ES module, no build step, no external resources.
// API: /v1/classify, /v1/search, /v1/items (?q= words, ?sku=), /v1/labels.

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const KEY_STORE = "fashionlens.apiKey";
const SEARCH_K = 8;
const WORDS_LIMIT = 24;  // items a words search without a photo shows
const MAX_UPLOAD_BYTES = 9 * 1024 * 1024;  // the server refuses files over 10 MiB by default
const MAX_SIDE = 3000;  // larger files are shrunk to this many pixels on the long side before upload
const MIN_ATTRIBUTE_SCORE = 0.5;  // attributes the model gives less are not shown (nor proposed)
const NEGATIVE = /^(no|non|without)[\s_-]/i;  // "no_length", "no sleeve": the absence of something, not shown
// seq: the number of the latest photo; answers that arrive for an older photo are dropped.
// stored: the item stored for the current photo (its buttons stay off until the next photo).
const state = { file: null, result: null, busy: 0, lastItemId: null, seq: 0, labels: null, hedging: null,
  stored: null, storing: false, skuConfirmed: null, pending: null, words: "", noCatalog: false };

// ---------------------------------------------------------------- helpers
function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/** "upper-body" -> "Upper body", "button_down" -> "Button down". */
function humanise(name) {
  const s = String(name ?? "").replace(/[_-]+/g, " ").trim();
  return s ? s[0].toUpperCase() + s.slice(1) : "";
}

function percent(score) {
  const p = Number(score) * 100;
  return p > 0 && p < 1 ? "<1%" : `${Math.round(p)}%`;
}

/** A taxonomy path for display: repeated parts once ("lower › trousers › trousers" -> "Lower › Trousers"). */
function collapsePath(path) {
  const out = [];
  for (const part of path || []) {
    if (!out.length || humanise(out[out.length - 1]).toLowerCase() !== humanise(part).toLowerCase()) out.push(part);
  }
  return out;
}

function article(word) { return /^[aeiou]/i.test(word) ? "an" : "a"; }

function svgIcon(icon, cls) {
  return el("svg:svg", { class: cls, "aria-hidden": "true", focusable: "false" },
    el("svg:use", { href: `icons.svg#icon-${icon}` }));
}

/** The message of an API answer that failed: {"error": {"code", "message"}}, FastAPI's {"detail"}, or text. */
function errorMessage(res, data, text) {
  if (data?.error?.message) return data.error.message;
  if (typeof data?.detail === "string") return data.detail;
  if (Array.isArray(data?.detail)) return data.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  const body = (text || "").replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
  return `The server answered ${res.status} ${res.statusText}${body ? `: ${body}` : ""}`;
}

/** What a person should do about an error (the API's own message is written for developers). */
const KEY_PLACE = "under “Item details and API key” (in “Add to my catalog”)";
const PERSON_MESSAGES = {
  missing_api_key: `This needs the catalog's API key. Type it ${KEY_PLACE} and try again. Ask whoever runs this ` +
    "fashionlens server for the key.",
  invalid_api_key: `The catalog did not accept this API key. Check it ${KEY_PLACE} and try again; whoever runs ` +
    "this fashionlens server can tell you the right one.",
  no_api_key_configured: "This catalog does not accept new items yet: no API key is set up on the server. Ask " +
    "whoever runs it to set one (the FASHIONLENS_API_KEY setting) and restart it.",
};

/** POST (or GET) to the API; resolves to the JSON answer, rejects with an Error carrying the API's message. */
async function api(path, { method = "POST", body = null, headers = {} } = {}) {
  let res;
  try {
    res = await fetch(path, { method, body, headers: { Accept: "application/json", ...headers } });
  } catch (err) {
    throw new Error(`Could not reach the fashionlens server (${err.message}). Check your connection and try again.`);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const code = data?.error?.code;
    const error = new Error(PERSON_MESSAGES[code] || errorMessage(res, data, text));
    error.status = res.status;
    error.code = code;
    error.apiMessage = errorMessage(res, data, text);
    throw error;
  }
  return data;
}

function keyHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

// ---------------------------------------------------------------- status, errors, busy
function setStatus(text) { $("status-text").textContent = text; }

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() { $("error").hidden = true; $("error").textContent = ""; }

/** Run ``task`` with the busy indicator on and the action buttons disabled; errors are shown, not thrown. */
async function busy(label, task) {
  state.busy += 1;
  $("status").classList.add("busy");
  $("result-panel").setAttribute("aria-busy", "true");
  setStatus(label);
  syncButtons();
  try {
    return await task();
  } catch (err) {
    showError(err.message);
    setStatus("Something went wrong.");
    if (err.status === 401) openKeyField();
    return undefined;
  } finally {
    state.busy -= 1;
    if (!state.busy) {
      $("status").classList.remove("busy");
      $("result-panel").removeAttribute("aria-busy");
    }
    syncButtons();
  }
}

function syncButtons() {
  const locked = state.busy > 0 || state.storing;
  for (const id of ["add-button", "yes-button", "no-button", "fix-submit"]) {
    $(id).disabled = locked || (id !== "add-button" && state.stored !== null);
  }
  $("sku-store-anyway").disabled = locked;
  $("words-submit").disabled = state.busy > 0;
}

// ---------------------------------------------------------------- the model's labels
/** GET /v1/labels: every category and attribute the model knows, and whether hedged answers are available. */
async function loadLabels() {
  try {
    state.labels = await api("/v1/labels", { method: "GET", headers: keyHeaders() });
  } catch {
    state.labels = null;  // an older server, or private reads without a key: top guesses only, no hedging
  }
  setupHedging(state.labels?.hedging);
  setupTrainedOn(state.labels?.trained_on);
  $("attribute-names").replaceChildren(...(state.labels?.attributes || []).map((a) =>
    el("option", { value: humanise(a.name), label: a.group ? humanise(a.group) : null })));
}

/** The "how sure" control: shown with the targets the model is calibrated for, hidden when it is not. */
function setupHedging(hedging) {
  state.hedging = hedging?.calibrated && hedging.targets?.length ? hedging : null;
  const select = $("target-accuracy");
  for (const option of [...select.options]) {
    if (option.value) option.hidden = option.disabled = !state.hedging?.targets.includes(Number(option.value));
  }
  if (!state.hedging) select.value = "";
  else if (!state.hedgingSet && state.hedging.default != null) select.value = String(state.hedging.default);
  state.hedgingSet = Boolean(state.hedging);  // the server's first choice once; the person's choice after that
  $("sureness").hidden = !state.hedging;
}

/** "This model was trained on rendered garments (14 categories) and has no categories for shoes, hats, ...". */
const KIND_PLURALS = { footwear: "shoes", headwear: "hats", bag: "bags", accessory: "accessories" };

function setupTrainedOn(trained) {
  const note = $("trained-on");
  note.hidden = !trained;
  if (!trained) return;
  const lacks = Object.keys(KIND_PLURALS).filter((k) => !(trained.kinds || []).includes(k)).map((k) => KIND_PLURALS[k]);
  const missing = lacks.length ? ` It has no categories for ${lacks.join(", ").replace(/, ([^,]*)$/, " or $1")}` +
    (trained.guide ? ", and says so when a photo shows one." : ".") : "";
  note.textContent = `This model was trained on ${trained.data}: ${trained.categories} categories.${missing}`;
}

/** The open-world verdict of an answer when the photo is not of a kind the model knows (else null). */
function outsideScope(result) {
  const scope = result?.scope;
  return scope && scope.verdict !== "known" ? scope : null;
}

const SCOPE_ICONS = { footwear: "footwear", bag: "bag", accessory: "bag" };
const SCOPE_NAMES = { footwear: "Shoes", headwear: "A hat", bag: "A bag", accessory: "An accessory", garment: "A garment" };

function targetAccuracy() {
  return state.hedging && $("target-accuracy").value ? $("target-accuracy").value : null;
}

/** Run a request that may ask for a hedged answer; when the model turns out not to be calibrated for it
 * (422 not_calibrated / invalid_target_accuracy) the control is hidden and the request is sent again without. */
async function withHedging(request) {
  try {
    return await request();
  } catch (err) {
    if (!targetAccuracy() || !["not_calibrated", "invalid_target_accuracy"].includes(err.code)) throw err;
    setupHedging(null);
    return request();
  }
}

// ---------------------------------------------------------------- choosing a photo
function setupInputs() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (e) => { handleFile(e.target.files[0]); e.target.value = ""; });
  }
  for (const type of ["dragenter", "dragover"]) {
    window.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("dragging"); });
  }
  window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("dragging"); });
  window.addEventListener("drop", (e) => {  // a photo dropped anywhere on the page, not only on the zone
    e.preventDefault();
    drop.classList.remove("dragging");
    handleFile(e.dataTransfer?.files?.[0]);
  });
  document.addEventListener("paste", (e) => {
    if (e.target.closest?.("input, textarea")) return;  // pasting text into a field
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) { e.preventDefault(); handleFile(file); }
  });
  $("target-accuracy").addEventListener("change", () => searchSimilar({ reclassify: true }));
}

/** Forget the previous photo's answer: its labels, similar items, add-to-catalog form (SKU and title too). */
function clearAnswer() {
  state.result = null;
  state.stored = null;
  state.skuConfirmed = null;
  state.pending = null;
  $("result").hidden = true;
  closeAddPanel(false);
  $("add-message").textContent = "";
  $("item-title").value = "";
  $("item-sku").value = "";
  $("similar").replaceChildren();
  $("similar-status").textContent = "";
  syncButtons();
}

async function handleFile(file) {
  if (!file) return;
  clearError();
  const seq = ++state.seq;
  clearAnswer();
  if (file.type && !file.type.startsWith("image/")) {
    $("preview").hidden = true;
    $("drop").classList.remove("compact");
    showError(`"${file.name}" is not an image (${file.type}). Choose a photo: JPEG, PNG or WebP.`);
    $("similar-status").textContent = "No results: that file is not a photo.";
    setStatus("Add a photo to start.");
    return;
  }
  state.file = await shrinkIfHuge(file);
  showPreview(state.file);
  $("similar-status").textContent = "Looking for similar items…";
  const answer = await busy("Looking at your photo…", () => photoRequest());
  if (seq !== state.seq) return;
  if (!answer) {
    state.file = null;
    $("preview").hidden = true;
    $("drop").classList.remove("compact");
    $("similar-status").textContent = "No results: the photo could not be used.";
    return;
  }
  showAnswer(answer);
}

/** One upload: /v1/search answers the classification and the similar items together; without a catalog
 * (503 no_catalog) the page falls back to /v1/classify. */
function photoRequest() {
  if (state.noCatalog) return classifyRequest();
  return withHedging(searchRequest).catch((err) => {
    if (err.code !== "no_catalog") throw err;
    state.noCatalog = true;
    return classifyRequest();
  });
}

function classifyRequest() {
  return withHedging(() => {
    const form = imageForm(state.file);
    if (targetAccuracy()) form.append("target_accuracy", targetAccuracy());
    return api("/v1/classify", { body: form, headers: keyHeaders() });
  }).then((classification) => ({ classification }));
}

function showAnswer(answer) {
  state.result = answer.classification;
  renderResult(state.result);
  if (answer.results) showSimilar(answer);
  else $("similar-status").textContent = "No catalog is configured on this server, so there is nothing to search.";
  setStatus(`${seenAs(state.result)}.` + (answer.results ? ` ${answer.results.length} similar items found.` : ""));
}

/** A photo over the upload limit re-encoded as JPEG of at most MAX_SIDE pixels (EXIF orientation applied). */
async function shrinkIfHuge(file) {
  if (file.size <= MAX_UPLOAD_BYTES || typeof createImageBitmap !== "function") return file;
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = el("canvas", { width: Math.round(bitmap.width * scale), height: Math.round(bitmap.height * scale) });
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.9));
    return blob ? new File([blob], `${(file.name || "photo").replace(/\.\w+$/, "")}.jpg`, { type: "image/jpeg" }) : file;
  } catch {
    return file;  // not decodable here: let the server say what is wrong with it
  }
}

function imageForm(file) {
  const form = new FormData();
  form.append("image", file, file.name || "photo.jpg");
  return form;
}

function showPreview(file) {
  const img = $("photo");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  $("overlay").replaceChildren();
  img.onload = () => $("stage").style.setProperty("--ar", `${img.naturalWidth / img.naturalHeight}`);
  img.onerror = () => { $("preview").hidden = true; };
  img.alt = `Your photo${file.name ? ` (${file.name})` : ""}`;
  img.src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("drop").classList.add("compact");
}

// ---------------------------------------------------------------- the answer
/** The hedged node when it lies above the predicted category (the model is sure of the kind, not the exact
 * category); null when there is no hedged answer or it is the category itself. */
function hedgedAbove(result) {
  const h = result?.hedged;
  const cat = result?.category;
  if (!h || !cat) return null;
  const same = h.name === cat.name || (h.path || []).join(".") === (cat.path || []).join(".");
  return same ? null : h;
}

/** "a knitwear item (not sure which kind)" / "an unknown garment" / "Tee": the answer in words. */
const NODE_WORDS = { upper: "upper-body", lower: "lower-body", full: "full-body" };  // top-level taxonomy nodes

function hedgeWords(h) {
  if (!h.path?.length) return "a garment — not sure what kind";
  const kind = NODE_WORDS[String(h.name).toLowerCase()] || humanise(h.name).toLowerCase();
  return `${article(kind)} ${kind} item — not sure which kind`;
}

/** The status line's first sentence: "It looks like a knitwear item — …" or the open-world message. */
function seenAs(result) {
  const scope = state.stored ? null : outsideScope(result);
  if (!scope) return `It looks like ${describe(result)}`;
  return scope.verdict === "unknown" ? `This does not look like a garment I know (it looks like: ${scope.looks_like})`
    : `It looks like ${scope.message}`;
}

function describe(result) {
  if (state.stored) return humanise(state.stored.category) || "an item";
  const scope = outsideScope(result);
  if (scope) return scope.message;
  const h = hedgedAbove(result);
  if (h) return hedgeWords(h);
  return humanise(result.category?.name) || "an unknown garment";
}

function renderResult(result) {
  renderCategory(result);
  renderScores(result.category_scores || []);
  renderAttributes(state.stored ? state.stored.attributes.map((name) => ({ name, score: null }))
    : result.attributes || [], Boolean(state.stored));
  renderOverlay(result);
  $("photo").alt = `Your photo, recognised as ${describe(result)}`;
  $("same-category-name").textContent = humanise(result.category?.name) || "this category";
  $("result").hidden = false;
}

/** Icon id for a category: its top-level taxonomy node (upper / lower / full / footwear / bag) or generic. */
function iconFor(path, name) {
  const words = [...(path || []), name || ""].join(" ").toLowerCase().split(/[\s./_]+/);
  const rules = [
    ["upper", /^(upper|upper-body|tops?|shirts?|knitwear|tee|t-shirt|blouse|sweater|hoodie|jacket|pullover)$/],
    ["lower", /^(lower|lower-body|bottoms?|trousers?|pants|jeans|shorts|skirts?|leggings)$/],
    ["full", /^(full|full-body|dress(es)?|onepieces?|jumpsuit|romper|coat)$/],
    ["footwear", /^(footwear|shoes?|sneakers?|sandals?|boots?)$/],
    ["bag", /^(accessories|bags?|handbags?)$/],
  ];
  for (const [icon, pattern] of rules) if (words.some((w) => pattern.test(w))) return icon;
  return "generic";
}

const ICON_TITLES = { upper: "Upper-body garment", lower: "Lower-body garment", full: "Full-body garment",
  footwear: "Footwear", bag: "Bag or accessory", generic: "Garment" };

function setIcon(icon) {
  $("category-icon").dataset.icon = icon;
  $("category-icon").querySelector("use").setAttribute("href", `icons.svg#icon-${icon}`);
  $("category-icon-title").textContent = ICON_TITLES[icon];
}

function renderCategory(result) {
  const cat = result.category || { name: "unknown", path: [], score: 0 };
  const stored = state.stored;
  const scope = stored ? null : outsideScope(result);
  const h = stored || scope ? null : hedgedAbove(result);
  let name = cat.name, path = cat.path, score = cat.score != null ? `${percent(cat.score)} sure` : "";
  if (stored) {
    name = stored.category || "unknown";
    path = stored.category_path || [name];
    score = "as stored in your catalog";
  } else if (scope) {
    name = scope.verdict === "unknown" ? "Not a garment I know" : SCOPE_NAMES[scope.kind] || "Something else";
    path = [];
    score = scope.verdict === "unknown" ? "" : "not among this model's categories";
  } else if (h) {
    name = h.path?.length ? h.name : "garment";
    path = h.path || [];
    score = h.probability != null ? `${percent(h.probability)} sure` : "";
  }
  const icon = scope ? SCOPE_ICONS[scope.kind] || "generic" : iconFor(path, name);
  setIcon(icon);
  $("category-name").textContent = humanise(name);
  $("category-name").dataset.name = name;
  $("category-name").dataset.hedged = h ? "true" : "false";
  $("category-score").textContent = score;
  const crumbs = scope ? [] : collapsePath(path?.length ? path : [name]);
  $("breadcrumbs").replaceChildren(...crumbs.map((node, i) =>
    el("li", { text: humanise(node), "aria-current": i === crumbs.length - 1 ? "page" : null })));
  const outside = $("outside");
  outside.hidden = !scope;
  outside.dataset.verdict = scope ? scope.verdict : "";
  if (scope) {
    $("outside-icon").querySelector("use").setAttribute("href", `icons.svg#icon-${icon}`);
    const message = scope.message.charAt(0).toUpperCase() + scope.message.slice(1);
    $("outside-text").textContent = `${message}. This model's best guess anyway: ${humanise(cat.name)} ` +
      `(${percent(cat.score)}) — likely wrong.`;
  }
  const hedge = $("hedge");
  hedge.hidden = !h;
  if (h) {
    $("hedge-icon").querySelector("use").setAttribute("href", `icons.svg#icon-${icon}`);
    const words = hedgeWords(h);
    $("hedge-text").textContent = `${words[0].toUpperCase()}${words.slice(1)}. Best guess: ` +
      `${humanise(cat.name)} (${percent(cat.score)}).`;
    hedge.dataset.node = (h.path || []).join(".");
  }
  const note = $("stored-note");
  note.hidden = !stored;
  if (stored) {
    const model = result.category?.name;
    const changed = model && stored.category !== model;
    note.textContent = `Stored as item #${stored.item_id}.` +
      (changed ? ` You corrected the model's answer (${humanise(model)}).` : "");
  }
}

function renderScores(scores) {
  $("scores").replaceChildren(...scores.slice(0, 5).map((s) => el("li", {},
    el("span", { text: humanise(s.name) }),
    el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${(s.score * 100).toFixed(1)}%` })),
    el("span", { class: "pct", text: percent(s.score) }))));
}

/** Attributes worth showing: present ones ("no length" is not) the model is fairly sure of. */
function shownAttribute(a) {
  return !NEGATIVE.test(String(a.name).replace(/_/g, " ")) && (a.score == null || a.score >= MIN_ATTRIBUTE_SCORE);
}

function visibleAttributes(result) { return (result?.attributes || []).filter(shownAttribute); }

function renderAttributes(attributes, stored = false) {
  const shown = stored ? attributes : attributes.filter(shownAttribute);  // what a person stored is shown as it is
  const hidden = attributes.length - shown.length;
  const note = $("attributes-hidden");
  note.hidden = !hidden;
  note.textContent = hidden === 1 ? "1 attribute the model is unsure of (or that says what is missing) is not shown."
    : `${hidden} attributes the model is unsure of (or that say what is missing) are not shown.`;
  if (!shown.length) {
    $("attributes").replaceChildren(el("p", { class: "muted", text: stored ? "No attributes stored."
      : "No attribute stands out." }));
    return;
  }
  const groups = new Map();
  for (const a of shown) {
    const g = a.group || (stored ? "stored" : "other");
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(a);
  }
  $("attributes").replaceChildren(...[...groups].map(([group, list]) => el("div", { class: "group" },
    el("p", { class: "group-name", text: humanise(group) }),
    el("ul", { class: "chips", "aria-label": humanise(group) }, ...list.map((a) =>
      el("li", { class: "chip", "data-name": a.name },
        el("span", { text: humanise(a.name) }),
        a.score != null ? el("span", { class: "muted", text: percent(a.score) }) : ""))))));
}

/** Box and landmarks over the photo; the SVG's viewBox is the original image's pixel grid. */
function renderOverlay(result) {
  const svg = $("overlay");
  const { width, height } = result.image || {};
  svg.replaceChildren();
  if (!width || !height) return;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  if (result.bbox) {
    const [x1, y1, x2, y2] = result.bbox;
    const geom = { x: x1, y: y1, width: Math.max(x2 - x1, 0), height: Math.max(y2 - y1, 0) };
    svg.append(el("svg:rect", { class: "box-halo", ...geom }), el("svg:rect", { class: "box", ...geom }));
  }
  const r = Math.max(width, height) * 0.014;  // about 7 px on a 500 px display, whatever the photo's size
  for (const lm of result.landmarks || []) {
    const shape = lm.visibility === "truncated"
      ? el("svg:path", { d: `M${lm.x} ${lm.y - r * 1.3} l${r * 1.3} ${r * 1.3} l${-r * 1.3} ${r * 1.3} l${-r * 1.3} ${-r * 1.3}z` })
      : el("svg:circle", { cx: lm.x, cy: lm.y, r });
    shape.setAttribute("class", `lm lm-${lm.visibility || "visible"}`);
    shape.dataset.name = lm.name;
    shape.append(el("svg:title", { text: `${humanise(lm.name)}: ${lm.visibility} (${percent(lm.visible_prob)} visible)` }));
    svg.append(shape);
  }
}

// ---------------------------------------------------------------- similar items and words
/** POST /v1/search for the current photo with the page's options (same category, copies first, words). */
function searchRequest() {
  const form = imageForm(state.file);
  form.append("k", String(SEARCH_K));
  if ($("same-category").checked) form.append("same_category", "true");
  if ($("rerank").checked) form.append("rerank", "true");
  if ($("group-sku").checked) form.append("group_sku", "true");
  if ($("crop").checked) form.append("crop", "true");  // the model's garment box (offered only when it has one)
  if (state.words) form.append("q", state.words);
  if (targetAccuracy()) form.append("target_accuracy", targetAccuracy());
  return api("/v1/search", { body: form, headers: keyHeaders() });
}

/** Search again (an option or the words changed, an item was added): the photo is uploaded for the search
 * only; with ``reclassify`` (the "how sure" control changed) its answer is shown again too. */
async function searchSimilar({ reclassify = false } = {}) {
  if (!state.file) return;
  if (state.noCatalog && !reclassify) return;
  $("similar-status").textContent = "Searching the catalog…";
  const seq = state.seq;
  const answer = await busy(reclassify ? "Looking at your photo…" : "Searching the catalog…", () =>
    reclassify ? photoRequest() : withHedging(searchRequest));
  if (seq !== state.seq) return;
  if (!answer) { $("similar-status").textContent = "The search failed."; return; }
  if (reclassify) { showAnswer(answer); return; }
  showSimilar(answer);
  setStatus(`${seenAs(state.result)}. ${answer.results?.length || 0} similar items found.`);
}

function showSimilar(answer) {
  // "garment only" is offered when the model finds a garment box (a model without a box head has none, and
  // the API refuses crop for it with 422 no_box_head); hidden until the first answer says which
  $("crop-option").hidden = !answer.classification?.bbox;
  renderWords(answer.query?.words || null);
  const results = answer.results || [];
  renderCards(results);
  const words = answer.query?.words;
  if (words && !words.matched.length) {
    $("similar-status").textContent = "Nothing found: none of the words names a category or attribute the catalog knows.";
  } else if (words) {
    $("similar-status").textContent = results.length
      ? `${results.length} most similar items that are ${matchedText(words)}, best first.`
      : `No similar item is ${matchedText(words)}.`;
  } else if (!results.length && $("same-category").checked && state.result?.category) {
    explainEmptyCategory(state.result.category.name);
  } else {
    $("similar-status").textContent = results.length ? `${results.length} most similar items, best first.`
      : "No similar items: the catalog is empty or nothing matches the filter.";
  }
}

/** "only this category" found nothing: say so, and how to see the others. */
function explainEmptyCategory(name) {
  $("similar-status").textContent = `No item of the category “${humanise(name)}” is in the catalog yet. Uncheck ` +
    `“only ${humanise(name)}” to see every similar item.`;
}

/** "“striped” + “dress”": the labels the words named. */
function matchedText(words) {
  return [...new Set(words.matched.map((m) => `“${humanise(m.label).toLowerCase()}”`))].join(" + ");
}

/** Search by words: narrows the photo's similar items, or without a photo searches the whole catalog. */
async function searchWords() {
  state.words = $("words").value.trim();
  if (state.file && !state.noCatalog) { await searchSimilar(); return; }
  if (!state.words) {
    renderWords(null);
    renderCards([]);
    $("similar-status").textContent = "Type some words, or add a photo.";
    return;
  }
  clearError();
  $("similar-status").textContent = "Searching the catalog…";
  const words = state.words;
  const answer = await busy("Searching the catalog…", () =>
    api(`/v1/items?q=${encodeURIComponent(words)}&limit=${WORDS_LIMIT}`, { method: "GET", headers: keyHeaders() }));
  if (!answer) { $("similar-status").textContent = "The search failed."; return; }
  if (state.file) return;  // a photo came meanwhile: its answer owns the grid
  renderWords(answer.query);
  renderCards(answer.items, true);
  const q = answer.query;
  $("similar-status").textContent = !q.matched.length
    ? "Nothing found: none of the words names a category or attribute the catalog knows."
    : answer.items.length
      ? `${answer.total} item${answer.total === 1 ? "" : "s"} found for ${matchedText(q)}` +
        (answer.total > answer.items.length ? ` (the best ${answer.items.length} shown)` : "") +
        ": items that match every word first."
      : `No item in the catalog is ${matchedText(q)}.`;
  setStatus(`${answer.total} items found for “${words}”.`);
}

/** What the catalog understood of the words: matched labels, words it does not know and close labels. */
function renderWords(query) {
  const box = $("words-feedback");
  if (!query) { box.replaceChildren(); return; }
  const parts = [];
  if (query.matched.length) {
    const kinds = { category: "category", node: "kind", attribute: "attribute" };
    parts.push(el("p", { class: "understood" }, "Understood: ", ...query.matched.flatMap((m, i) => [
      i ? ", " : "",
      el("strong", { "data-label": m.label, text: humanise(m.label) }),
      ` (${m.group ? humanise(m.group).toLowerCase() : kinds[m.kind] || m.kind})`]), "."));
  }
  for (const word of query.unknown) {
    const close = query.suggestions?.[word] || [];
    const line = el("p", { class: "not-understood", "data-word": word },
      `No category or attribute is called “${word}”.`);
    if (close.length) {
      line.append(" Did you mean ", ...close.flatMap((name, i) => [i ? (i === close.length - 1 ? " or " : ", ") : "",
        suggestionButton(word, name)]), "?");
    } else if (!query.matched.length) {
      const known = [...(state.labels?.categories || []).slice(0, 3), ...(state.labels?.attributes || []).slice(0, 3)];
      if (known.length) line.append(` Try words like ${known.map((k) => humanise(k.name).toLowerCase()).join(", ")}.`);
    }
    parts.push(line);
  }
  box.replaceChildren(...parts);
}

function suggestionButton(word, name) {
  const button = el("button", { type: "button", class: "link", text: humanise(name) });
  button.addEventListener("click", () => {
    const input = $("words");
    const pattern = new RegExp(`(^|[^\\p{L}\\p{N}])${word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?=$|[^\\p{L}\\p{N}])`, "iu");
    input.value = pattern.test(input.value) ? input.value.replace(pattern, `$1${humanise(name).toLowerCase()}`)
      : `${input.value} ${humanise(name).toLowerCase()}`.trim();
    input.focus();
    searchWords();
  });
  return button;
}

/** Cosine similarity as words a person can read: a percentage and a plain judgement. */
function similarityText(score) {
  const s = Number(score);
  const word = s >= 0.9 ? "very similar" : s >= 0.7 ? "similar" : s >= 0.4 ? "somewhat similar" : "not alike";
  return `${Math.round(Math.max(0, s) * 100)}% · ${word}`;
}

function matchText(match) {
  if (!match) return "";
  return match.exact ? "matches every word" : `matches ${match.matched_terms} of ${match.terms} words`;
}

function cardName(item) { return item.title || (item.sku ? `SKU ${item.sku}` : `Item ${item.item_id}`); }

/** Result cards; each opens the item (its picture and metadata) in a dialog. */
function renderCards(items, byWords = false) {
  $("similar").replaceChildren(...items.map((item) => {
    const name = cardName(item);
    const open = el("button", { type: "button", class: "card-open", "aria-haspopup": "dialog", text: name,
      title: "Open this item" });
    open.addEventListener("click", () => openItem(item, open));
    const line = byWords ? matchText(item.match) : (item.score != null ? similarityText(item.score) : "");
    return el("li", { class: `card${item.item_id === state.lastItemId ? " fresh" : ""}`, "data-item-id": item.item_id },
      el("img", { src: item.image_url || `/v1/items/${item.item_id}/image`, alt: `${name}: ${humanise(item.category)}` }),
      el("div", {},
        open,
        el("span", { text: humanise(item.category) || "No category" }),
        item.verified ? el("span", { class: "badge", text: "Same picture",
          title: `${item.inliers} matching points agree on one geometric transform` }) : "",
        item.same_sku?.length ? el("span", { class: "muted", text: `+${item.same_sku.length} more photo${item.same_sku.length > 1 ? "s" : ""} of this product` }) : "",
        el("span", { class: "muted", title: item.score != null ? `cosine similarity ${Number(item.score).toFixed(3)}` : null,
          text: `${line ? `${line} · ` : ""}#${item.item_id}` })));
  }));
}

// ---------------------------------------------------------------- one item, in a dialog
function openItem(item, opener) {
  const dialog = $("item-dialog");
  showItem(item);
  dialog.returnFocus = opener;
  if (typeof dialog.showModal === "function") dialog.showModal();
  else dialog.setAttribute("open", "");
  $("item-dialog-close").focus();
  api(`/v1/items/${item.item_id}`, { method: "GET", headers: keyHeaders() })  // created_at, source, ...
    .then((full) => { if (dialog.open && dialog.dataset.itemId === String(item.item_id)) showItem({ ...item, ...full }); })
    .catch(() => { /* the search result's fields stay */ });
}

function showItem(item) {
  const dialog = $("item-dialog");
  const name = cardName(item);
  dialog.dataset.itemId = String(item.item_id);
  $("item-dialog-title").textContent = name;
  const img = $("item-dialog-image");
  img.src = item.image_url || `/v1/items/${item.item_id}/image`;
  img.alt = `${name}: ${humanise(item.category) || "no category"}`;
  const rows = [
    ["Item", `#${item.item_id}`],
    ["SKU", item.sku],
    ["Category", collapsePath(item.category_path?.length ? item.category_path : [item.category]).map(humanise).join(" › ")],
    ["Attributes", (item.attributes || []).map(humanise).join(", ") || "none"],
    ["Similarity", item.score != null ? similarityText(item.score) : null],
    ["Words", matchText(item.match) || null],
    ["Label", item.label?.provenance ? humanise(item.label.provenance) : null],
    ["Source", item.source ? String(item.source).split(/[\\/]/).pop() : null],  // the file name, not the server's path
    ["Added", item.created_at ? new Date(item.created_at).toLocaleString() : null],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  $("item-dialog-meta").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

function setupDialog() {
  const dialog = $("item-dialog");
  $("item-dialog-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });  // the backdrop
  dialog.addEventListener("close", () => { dialog.returnFocus?.focus(); });
}

// ---------------------------------------------------------------- adding to the catalog
/** What the page proposes to store: the hedged node when the model is only sure of the kind, the visible
 * attributes. */
function proposal() {
  const h = hedgedAbove(state.result);
  const category = h?.path?.length ? h.name : state.result.category?.name;
  return { category, hedged: Boolean(h?.path?.length), unsure: Boolean(h && !h.path?.length) ||
    Boolean(outsideScope(state.result)), attributes: visibleAttributes(state.result).map((a) => a.name) };
}

function openAddPanel() {
  if (!state.result) return;
  if (!$("add-panel").hidden) { closeAddPanel(); return; }
  const { category, attributes, hedged, unsure } = proposal();
  $("proposal-category").textContent = humanise(category) + (hedged ? " (not sure which kind)" : "");
  $("proposal-attributes").textContent = (attributes.length
    ? ` with ${attributes.map(humanise).join(", ")}` : " with no attributes") +
    (unsure ? " — but the model is not sure what it is: check the category" : "");
  $("add-panel").hidden = false;
  $("add-button").setAttribute("aria-expanded", "true");
  if (!$("api-key").value) $("api-key").closest("details").open = true;  // writes need it: show where it goes
  $("correct-form").hidden = true;
  $("no-button").setAttribute("aria-expanded", "false");
  hideSkuWarning();
  $("add-message").textContent = "";
  $("confirm-question").focus();
}

function closeAddPanel(focus = true) {
  $("add-panel").hidden = true;
  $("correct-form").hidden = true;
  hideSkuWarning();
  $("add-button").setAttribute("aria-expanded", "false");
  $("no-button").setAttribute("aria-expanded", "false");
  if (focus) $("add-button").focus();
}

/** The categories to choose from: the model's top guesses (and hedged node) first, then every category it
 * knows grouped by the top of its taxonomy path, then "Other…". */
function categoryOptions(current) {
  const h = hedgedAbove(state.result);
  const top = [...new Set([current, ...(state.result.category_scores || []).map((s) => s.name)].filter(Boolean))];
  const option = (name) => el("option", { value: name, text: humanise(name) + (h?.path?.length && name === h.name
    ? " (not sure which kind)" : "") });
  const groups = new Map();
  for (const c of state.labels?.categories || []) {
    const group = c.path?.length > 1 ? c.path[0] : "other";
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(c);
  }
  return [
    el("optgroup", { label: "Top guesses" }, ...top.map(option)),
    ...[...groups].map(([group, list]) => el("optgroup", { label: `All ${humanise(group).toLowerCase()}` },
      ...list.map((c) => option(c.name)))),
    el("option", { value: "__other__", text: "Other…" }),
  ];
}

function openCorrection() {
  const { category, attributes } = proposal();
  $("fix-category").replaceChildren(...categoryOptions(category));
  $("fix-category").value = category;
  $("fix-other-row").hidden = true;
  $("fix-category-other").value = "";
  const others = (state.result.attributes || []).map((a) => a.name).filter((a) => !attributes.includes(a));
  $("fix-attributes").replaceChildren(...attributes.map((a) => attributeToggle(a, true)),
    ...others.map((a) => attributeToggle(a, false)));
  $("correct-form").hidden = false;
  $("no-button").setAttribute("aria-expanded", "true");
  $("fix-category").focus();
}

function attributeToggle(name, on) {
  const button = el("button", { type: "button", class: "chip", "aria-pressed": String(on), "data-name": name,
    text: humanise(name) });
  button.addEventListener("click", () => button.setAttribute("aria-pressed",
    String(button.getAttribute("aria-pressed") !== "true")));
  return button;
}

/** The typed attribute as the model names it ("Long sleeve" -> long_sleeve), else as typed (words joined by _). */
function attributeName(text) {
  const typed = text.trim().toLowerCase();
  const known = (state.labels?.attributes || []).find((a) =>
    a.name.toLowerCase() === typed || humanise(a.name).toLowerCase() === typed);
  return known ? known.name : typed.replace(/\s+/g, "_");
}

function addAttribute() {
  const input = $("fix-attribute-new");
  const name = attributeName(input.value);
  if (!name) return;
  const existing = [...$("fix-attributes").children].find((b) => b.dataset.name === name);
  if (existing) existing.setAttribute("aria-pressed", "true");
  else $("fix-attributes").append(attributeToggle(name, true));
  input.value = "";
  input.focus();
}

/** The labels the correction form holds; ``label`` says whether the person changed the proposal (corrected)
 * or kept it (confirmed). */
function correctedLabels() {
  const choice = $("fix-category").value;
  const category = choice === "__other__" ? $("fix-category-other").value.trim() : choice;
  const attributes = [...$("fix-attributes").children]
    .filter((b) => b.getAttribute("aria-pressed") === "true").map((b) => b.dataset.name);
  const proposed = proposal();
  const same = category === proposed.category && attributes.length === proposed.attributes.length &&
    attributes.every((a) => proposed.attributes.includes(a));
  return { category, attributes, label: same ? "confirmed" : "corrected" };
}

/** Other items with this SKU (GET /v1/items?sku=...). */
async function itemsWithSku(sku) {
  const answer = await api(`/v1/items?sku=${encodeURIComponent(sku)}&limit=5`, { method: "GET", headers: keyHeaders() });
  return { items: (answer.items || []).filter((i) => i.sku === sku), total: answer.total };
}

function showSkuWarning(sku, found, labels) {
  const [first] = found.items;
  const more = Math.max(found.total, found.items.length) - 1;
  state.pending = labels;
  $("sku-warning-text").textContent = `SKU “${sku}” is already in your catalog: item #${first.item_id}` +
    (first.title ? ` (${first.title})` : "") + (more > 0 ? ` and ${more} more` : "") +
    ". Store this photo as another photo of the same product, or change the SKU.";
  $("sku-warning").hidden = false;
  setStatus(`SKU “${sku}” is already in your catalog: nothing stored yet.`);
  $("sku-store-anyway").focus();
}

function hideSkuWarning() { $("sku-warning").hidden = true; }

async function storeItem(labels) {
  if (state.storing || state.stored || !state.result) return;
  clearError();
  hideSkuWarning();
  if (!labels.category) { showError("Give the category: choose one or type it under Other."); return; }
  const sku = $("item-sku").value.trim();
  const seq = state.seq;
  let known = null;  // other items with this SKU: a warning, and nothing stored
  state.storing = true;
  syncButtons();
  try {
    if (sku && state.skuConfirmed !== sku) {  // warn before storing a SKU the catalog already has
      const found = await busy("Checking the SKU…", () => itemsWithSku(sku));
      if (!found || seq !== state.seq) return;
      if (found.items.length) { known = found; return; }
    }
    const form = imageForm(state.file);
    form.append("category", labels.category);
    form.append("attributes", JSON.stringify(labels.attributes));
    form.append("label", labels.label || "confirmed");  // a person checked these labels (the item's provenance)
    for (const [field, id] of [["title", "item-title"], ["sku", "item-sku"]]) {
      if ($(id).value.trim()) form.append(field, $(id).value.trim());
    }
    const item = await busy("Adding it to your catalog…", () => api("/v1/items", { body: form, headers: keyHeaders() }));
    if (!item || seq !== state.seq) return;
    state.stored = item;
    state.lastItemId = item.item_id;
    $("correct-form").hidden = true;
    $("no-button").setAttribute("aria-expanded", "false");
    $("item-title").value = "";  // the next photo starts with empty fields
    $("item-sku").value = "";
    $("add-message").textContent = `Added to your catalog as item #${item.item_id} (${humanise(item.category || labels.category)}).`;
    renderResult(state.result);  // the stored label, not the model's guess
    setStatus(`Added item #${item.item_id}.`);
  } finally {
    state.storing = false;
    syncButtons();
    if (known) showSkuWarning(sku, known, labels);  // its button is enabled again now: it can take the focus
  }
  if (state.stored) await searchSimilar();
}

function openKeyField() {
  if ($("add-panel").hidden) return;
  $("api-key").closest("details").open = true;
  $("api-key").focus();
}

function setupCatalogForm() {
  const key = $("api-key");
  try { key.value = localStorage.getItem(KEY_STORE) || ""; } catch { /* storage disabled: keep it in the page */ }
  key.addEventListener("input", () => { try { localStorage.setItem(KEY_STORE, key.value); } catch { /* ignore */ } });
  key.addEventListener("change", () => { if (!state.labels) loadLabels(); });  // private reads: labels need the key
  $("add-button").addEventListener("click", openAddPanel);
  $("add-panel").addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !e.defaultPrevented) { e.preventDefault(); closeAddPanel(); }
  });
  $("yes-button").addEventListener("click", () => storeItem({ ...proposal(), label: "confirmed" }));
  $("no-button").addEventListener("click", openCorrection);
  $("fix-category").addEventListener("change", () => {
    const other = $("fix-category").value === "__other__";
    $("fix-other-row").hidden = !other;
    if (other) $("fix-category-other").focus();
  });
  $("fix-attribute-add").addEventListener("click", addAttribute);
  $("fix-attribute-new").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addAttribute(); } });
  $("fix-cancel").addEventListener("click", () => { $("correct-form").hidden = true; $("no-button").focus(); });
  $("correct-form").addEventListener("submit", (e) => { e.preventDefault(); storeItem(correctedLabels()); });
  $("sku-store-anyway").addEventListener("click", () => {
    state.skuConfirmed = $("item-sku").value.trim();
    if (state.pending) storeItem(state.pending);
  });
  $("sku-change").addEventListener("click", () => {
    hideSkuWarning();
    $("item-sku").closest("details").open = true;
    $("item-sku").focus();
    $("item-sku").select();
  });
  $("same-category").addEventListener("change", () => searchSimilar());
  for (const id of ["rerank", "group-sku", "crop"]) $(id).addEventListener("change", () => searchSimilar());
  $("words-form").addEventListener("submit", (e) => { e.preventDefault(); searchWords(); });
  $("words-clear").addEventListener("click", () => { $("words").value = ""; $("words").focus(); searchWords(); });
}

setupInputs();
setupCatalogForm();
setupDialog();
syncButtons();
loadLabels().finally(() => { document.documentElement.dataset.ready = "true"; });
