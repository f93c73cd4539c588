// fashionlens web page: classify a garment photo, draw its box and landmarks, show similar catalog items,
// search the catalog by words, and add the photo to the catalog after the person confirms or corrects the
// proposed labels; review the labels the model is least sure of (Yes / No and correct), keyboard first.
// Plain ES module, no build step, no external resources.
// API: /v1/classify, /v1/search, /v1/items (?q= words, ?sku=), /v1/labels, /v1/review, /v1/items/{id}/answer.

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const KEY_STORE = "fashionlens.apiKey";
const SEARCH_K = 8;
const WORDS_LIMIT = 24;  // items a words search without a photo shows
const REVIEW_PAGE = 20;  // review entries one GET /v1/review brings (more as the person gets near the end)
const MAX_UPLOAD_BYTES = 9 * 1024 * 1024;  // the server refuses files over 10 MiB by default
const MAX_SIDE = 3000;  // larger files are shrunk to this many pixels on the long side before upload
const MIN_ATTRIBUTE_SCORE = 0.5;  // attributes the model gives less are not shown (nor proposed)
const NEGATIVE = /^(no|non|without)[\s_-]/i;  // "no_length", "no sleeve": the absence of something, not shown
// seq: the number of the latest photo; answers that arrive for an older photo are dropped.
// stored: the item stored for the current photo (its buttons stay off until the next photo).
const state = { file: null, result: null, busy: 0, lastItemId: null, seq: 0, labels: null, hedging: null,
  stored: null, storing: false, skuConfirmed: null, pending: null, words: "", noCatalog: false,
  review: { entries: [], total: 0, current: 0, phase: "idle", failed: null, seq: 0, answered: 0, more: false,
    sending: 0, loading: null } };

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

/** What a person should do about an error (the API's own message is written for developers); ``place``: where
 * the page's API key field is (the add flow's, or the review page's). */
const KEY_PLACES = { add: "under “Item details and API key” (in “Add to my catalog”)",
  review: "under “API key” at the top of this review list" };
const PERSON_MESSAGES = {
  missing_api_key: (place) => `This needs the catalog's API key. Type it ${place} and try again. Ask whoever ` +
    "runs this fashionlens server for the key.",
  invalid_api_key: (place) => `The catalog did not accept this API key. Check it ${place} and try again; whoever ` +
    "runs this fashionlens server can tell you the right one.",
  no_api_key_configured: () => "This catalog does not accept new items or answers yet: no API key is set up on " +
    "the server. Ask whoever runs it to set one (the FASHIONLENS_API_KEY setting) and restart it.",
};
const KEY_ERRORS = new Set(Object.keys(PERSON_MESSAGES));

/** POST (or GET) to the API; resolves to the JSON answer, rejects with an Error carrying the API's message
 * (``keyPlace``: which API key field a message about the key points to). */
async function api(path, { method = "POST", body = null, headers = {}, keyPlace = "add" } = {}) {
  let res, text, data;
  // 503 model_changed: the catalog switched to a new model (a reindex) while the request ran; nothing was
  // stored, and asking again gets the new model's answer: once, without bothering the person.
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      res = await fetch(path, { method, body, headers: { Accept: "application/json", ...headers } });
    } catch (err) {
      throw new Error(`Could not reach the fashionlens server (${err.message}). Check your connection and try again.`);
    }
    text = await res.text();
    data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!(res.status === 503 && data?.error?.code === "model_changed")) break;
  }
  if (!res.ok) {
    const code = data?.error?.code;
    const error = new Error(PERSON_MESSAGES[code]?.(KEY_PLACES[keyPlace]) || errorMessage(res, data, text));
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
  if (currentView() !== "photo") location.hash = "#identify";  // a photo dropped or pasted on the review page
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
  $("scores").replaceChildren(...scoreBars(scores));
}

/** One bar per score (at most 5): the name, a bar as long as the probability, the percentage. */
function scoreBars(scores) {
  return scores.slice(0, 5).map((s) => el("li", { "data-name": s.name },
    el("span", { text: humanise(s.name) }),
    el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${(s.score * 100).toFixed(1)}%` })),
    el("span", { class: "pct", text: percent(s.score) })));
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
  return categoryGroups(top, (name) => humanise(name) + (h?.path?.length && name === h.name
    ? " (not sure which kind)" : ""));
}

/** <optgroup>s for a category <select>: ``top`` ("Top guesses"), every category the model knows by the top of
 * its taxonomy path ("All upper"), then "Other…" (value ``__other__``); ``text(name)``: an option's words. */
function categoryGroups(top, text = humanise) {
  const option = (name) => el("option", { value: name, text: text(name) });
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

function addAttribute() { addAttributeTo($("fix-attribute-new"), $("fix-attributes")); }

/** The attribute typed in ``input`` switched on among the toggles of ``chips`` (added when new). */
function addAttributeTo(input, chips) {
  const name = attributeName(input.value);
  if (!name) return;
  const existing = [...chips.children].find((b) => b.dataset.name === name);
  if (existing) existing.setAttribute("aria-pressed", "true");
  else chips.append(attributeToggle(name, true));
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

/** The API key fields (the add flow's and the review page's) hold one key, kept in localStorage. */
function setupKeyFields() {
  const fields = [$("api-key"), $("review-api-key")];
  let stored = "";
  try { stored = localStorage.getItem(KEY_STORE) || ""; } catch { /* storage disabled: keep it in the page */ }
  for (const field of fields) {
    field.value = stored;
    field.addEventListener("input", () => {
      for (const other of fields) if (other !== field) other.value = field.value;
      try { localStorage.setItem(KEY_STORE, field.value); } catch { /* ignore */ }
    });
    field.addEventListener("change", () => {
      if (!state.labels) loadLabels();  // private reads: labels need the key
      if (KEY_ERRORS.has(state.review.failed)) {  // the queue could not be read without it: again, with it
        loadReview({ reset: true, focus: field.id === "review-api-key" });
      }
    });
  }
}

function setupCatalogForm() {
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

// ---------------------------------------------------------------- views: the photo, the review queue
/** The view an address asks for: #review, #identify (or none) for the photo; null for other anchors
 * (the skip link's #main) that leave the view as it is. */
function viewOfHash(hash = location.hash) {
  if (hash === "#review") return "review";
  return hash === "#identify" || hash === "" || hash === "#" ? "photo" : null;
}

function currentView() { return $("review-view").hidden ? "photo" : "review"; }

/** Show one view (the sections marked data-view), mark its link in the nav; the review queue is loaded
 * afresh each time it is opened, and its current entry takes the focus. */
function showView(view, { focus = true } = {}) {
  const opening = view === "review" && (currentView() !== "review" || state.review.phase === "idle");
  for (const section of document.querySelectorAll("[data-view]")) section.hidden = section.dataset.view !== view;
  for (const [id, name] of [["view-photo", "photo"], ["view-review", "review"]]) {
    if (name === view) $(id).setAttribute("aria-current", "page");
    else $(id).removeAttribute("aria-current");
  }
  document.title = view === "review" ? "fashionlens: review the labels" : "fashionlens: what is this garment?";
  if (!opening) return;
  if (!$("review-api-key").value) $("review-key-details").open = true;  // answers need it: show where it goes
  loadReview({ reset: true, focus });
}

// ---------------------------------------------------------------- the review queue
/** The queue's state as an attribute (idle, loading, ready, empty, error): for styles and tests. */
function setReviewPhase(phase) {
  state.review.phase = phase;
  $("review-view").dataset.state = phase;
  if (phase === "loading") $("review-list").setAttribute("aria-busy", "true");
  else $("review-list").removeAttribute("aria-busy");
}

function showReviewError(message) {
  $("review-error").textContent = message;
  $("review-error").hidden = false;
}

function clearReviewError() { $("review-error").hidden = true; $("review-error").textContent = ""; }

function openReviewKey() {
  $("review-key-details").open = true;
  $("review-api-key").focus();
}

/** GET /v1/review: the first page (``reset``) or the next one, appended; errors are shown above the list,
 * which stays as it was. ``focus``: the current entry takes the focus once loaded.  While a page is on its way,
 * asking for the next one waits for it instead. */
function loadReview({ reset = false, focus = false } = {}) {
  const r = state.review;
  if (r.loading && !reset) return r.loading;
  const loading = fetchReview(reset, focus).finally(() => { if (r.loading === loading) r.loading = null; });
  r.loading = loading;
  return loading;
}

async function fetchReview(reset, focus) {
  const r = state.review;
  const seq = ++r.seq;
  // answered items leave the server's queue as they leave the list; answers still on their way may leave it
  // first: asking from before them can only repeat entries (dropped below), never skip one
  const offset = reset ? 0 : Math.max(0, r.entries.length - r.sending);
  setReviewPhase("loading");
  if (reset) clearReviewError();
  if (!r.entries.length) $("review-count").textContent = "Loading the items to review…";
  let answer;
  try {
    answer = await api(`/v1/review?offset=${offset}&limit=${REVIEW_PAGE}`,
      { method: "GET", headers: keyHeaders(), keyPlace: "review" });
  } catch (err) {
    if (seq !== r.seq) return;
    r.failed = err.code || "error";
    if (reset || !r.entries.length) r.more = false;  // a later page that failed can be asked for again (J, Show more)
    if (err.code === "no_catalog") {
      setReviewPhase("empty");
      syncReview("No catalog is configured on this server, so there is nothing to review.");
    } else {
      showReviewError(`The items to review could not be loaded. ${err.message}`);
      setReviewPhase(r.entries.length ? "ready" : "error");
      syncReview();
      if (KEY_ERRORS.has(err.code)) openReviewKey();
    }
    return;
  }
  if (seq !== r.seq) return;
  r.failed = null;
  if (reset) {
    r.entries = [];
    r.current = 0;
    $("review-list").replaceChildren();
  }
  const known = new Set(r.entries.map((e) => e.item.item_id));
  const fresh = (answer?.items || []).filter((e) => e?.item && !known.has(e.item.item_id));
  r.total = Math.max(Number(answer?.total) || 0, r.entries.length + fresh.length);
  r.entries.push(...fresh);
  r.more = fresh.length > 0 && r.entries.length < r.total;  // nothing new: stop asking (the queue moved meanwhile)
  $("review-list").append(...fresh.map(reviewEntry));
  setReviewPhase(r.entries.length ? "ready" : "empty");
  syncReview();
  if (focus) focusReviewEntry(r.current);
  else setCurrentEntry(r.current);
}

/** "12 left to review (5 shown)", the nav's count, the feed's positions, "Show more", the empty queue's words. */
function syncReview(emptyText = null) {
  const r = state.review;
  const articles = reviewArticles();
  articles.forEach((a, i) => {
    a.setAttribute("aria-posinset", String(i + 1));
    a.setAttribute("aria-setsize", String(r.total));
  });
  const shown = articles.length < r.total ? ` (${articles.length} shown)` : "";
  $("review-count").textContent = r.total ? leftText() + shown : "";
  const count = $("review-nav-count");
  count.hidden = !r.total || r.failed !== null;
  count.replaceChildren(el("span", { class: "sr-only", text: ", " }), String(r.total),
    el("span", { class: "sr-only", text: " left" }));
  $("review-more").hidden = !r.more;
  const empty = $("review-empty");
  empty.hidden = r.phase !== "empty";
  empty.textContent = emptyText || (r.answered
    ? "All done: nothing is left to review. Thank you, your answers are stored."
    : "Nothing to review: a person has checked every item's label, or the catalog is empty. Items the model " +
      "labels come here, the ones it is least sure of first.");
}

function leftText() {
  const n = state.review.total;
  return n ? `${n} left to review` : "Nothing left to review";
}

/** The label's history in words: who said the stored category is right. */
const PROVENANCE_WORDS = { predicted: "the model's answer, not checked yet", given: "given with the item, not checked",
  confirmed: "confirmed by a person", corrected: "corrected by a person" };

/** One entry of the queue (an <article> of the feed): the picture, the stored label, why it is here (a suspect
 * label, or how unsure the model is), the model's top guesses, and Yes / No buttons (keys Y / N). */
function reviewEntry(entry) {
  const item = entry.item;
  const id = item.item_id;
  const name = humanise(item.category) || "No category";
  const path = collapsePath(item.category_path?.length ? item.category_path : [item.category]).map(humanise);
  const extra = item.title || (item.sku ? `SKU ${item.sku}` : "");
  const open = el("button", { type: "button", class: "review-open", "aria-haspopup": "dialog",
    title: "Open this item" }, el("img", { src: item.image_url || `/v1/items/${id}/image`, loading: "lazy",
    alt: `Item #${id}, stored as ${name}` }));
  open.addEventListener("click", () => openItem(item, open));
  const guesses = entry.guesses || [];
  const provenance = item.label?.provenance;
  return el("article", { class: "review-entry", tabindex: "-1", "data-item-id": id,
    "data-reason": entry.reason || "unsure", "aria-labelledby": `review-title-${id}`,
    "aria-describedby": `review-why-${id}` },
    open,
    el("div", { class: "review-body" },
      el("h3", { id: `review-title-${id}`, class: "review-title" }, name,
        el("span", { class: "muted", text: ` · #${id}${extra ? ` · ${extra}` : ""}` })),
      path.length > 1 ? el("p", { class: "muted small review-path", text: path.join(" › ") }) : "",
      el("p", { id: `review-why-${id}`, class: "review-why" }, ...reviewReason(entry)),
      el("p", { class: "small review-attributes", text: item.attributes?.length
        ? `Attributes: ${item.attributes.map(humanise).join(", ")}` : "No attributes stored." }),
      provenance && provenance !== "predicted"
        ? el("p", { class: "muted small", text: `Label: ${PROVENANCE_WORDS[provenance] || humanise(provenance)}.` })
        : "",
      guesses.length ? el("p", { class: "review-guesses-head muted small", id: `review-guesses-${id}`,
        text: "The model's top guesses" }) : "",
      guesses.length ? el("ol", { class: "bars review-guesses", "aria-labelledby": `review-guesses-${id}` },
        ...scoreBars(guesses.slice(0, 3))) : "",
      el("div", { class: "row review-actions" },
        el("button", { type: "button", "data-action": "yes", "aria-keyshortcuts": "Y" }, "Yes, it is right",
          el("kbd", { "aria-hidden": "true", text: "Y" })),
        el("button", { type: "button", class: "secondary", "data-action": "no", "aria-keyshortcuts": "N",
          "aria-expanded": "false" }, "No, correct it", el("kbd", { "aria-hidden": "true", text: "N" })))));
}

/** Why an entry is in the queue, in words: the label audit's suspect ("the label audit gives Dress only 3%; it
 * thinks Skirt": its probability, from the catalog's embeddings, not the model's own guesses shown below), or
 * the model hesitating between its two best guesses. */
function reviewReason(entry) {
  const stored = humanise(entry.item.category) || "the stored category";
  const suspect = entry.suspect;
  if (entry.reason === "suspect" || suspect) {
    const words = suspect?.model_category
      ? ` The label audit gives ${stored} only ${percent(suspect.score)}; it thinks ` +
        `${humanise(suspect.model_category)}.`
      : " The label audit doubts the stored category.";
    return [el("span", { class: "badge suspect", text: "Suspect label" }), words];
  }
  const [first, second] = entry.guesses || [];
  const badge = el("span", { class: "badge unsure",
    text: entry.reason && entry.reason !== "unsure" ? humanise(entry.reason) : "Model unsure" });
  if (first && second) {
    return [badge, ` The model hesitates: ${humanise(first.name)} ${percent(first.score)}, or ` +
      `${humanise(second.name)} ${percent(second.score)}.`];
  }
  if (first) return [badge, ` The model is ${percent(first.score)} sure it is ${humanise(first.name)}.`];
  return [badge, " The model's scores for this item were not stored."];
}

function reviewArticles() { return [...$("review-list").querySelectorAll(":scope > .review-entry")]; }

function entryOf(article) {
  const id = Number(article?.dataset.itemId);
  return state.review.entries.find((e) => e.item.item_id === id) || null;
}

/** Make entry ``index`` the current one (highlighted, the one Tab reaches: a roving tabindex); returns it. */
function setCurrentEntry(index) {
  const articles = reviewArticles();
  state.review.current = Math.max(0, Math.min(index, articles.length - 1));
  articles.forEach((a, i) => {
    const on = i === state.review.current;
    a.tabIndex = on ? 0 : -1;
    if (on) a.setAttribute("aria-current", "true");
    else a.removeAttribute("aria-current");
  });
  return articles[state.review.current] || null;
}

/** Focus entry ``index`` (scrolled into view); with none left, the words saying so. */
function focusReviewEntry(index) {
  const article = setCurrentEntry(index);
  if (article) {
    article.focus({ preventScroll: true });
    article.scrollIntoView({ block: "nearest" });
  } else if (!$("review-empty").hidden) {
    $("review-empty").focus();
  } else {
    $("review-heading").focus();
  }
}

/** The next (``step`` 1) or previous (-1) entry; near the end of what is loaded, the next page is fetched. */
async function moveReview(step) {
  const r = state.review;
  const next = r.current + step;
  if (next >= r.entries.length && r.more) await loadReview();
  focusReviewEntry(Math.max(0, Math.min(next, r.entries.length - 1)));
  if (r.more && r.entries.length - r.current <= 3) loadReview();
}

function answerYes(article) {
  const entry = entryOf(article);
  if (!entry || article.dataset.busy) return;
  closeReviewCorrection(article, false);
  sendAnswer(article, { verdict: "yes" }, (item) =>
    `Item #${item.item_id} confirmed: ${humanise(item.category || entry.item.category) || "its attributes"}.`);
}

/** POST /v1/items/{id}/answer; the answered entry leaves the list (a polite message says so) and the next one
 * takes the focus.  Errors are shown above the list; the entry stays. */
async function sendAnswer(article, body, done) {
  const id = Number(article.dataset.itemId);
  clearReviewError();
  article.dataset.busy = "true";
  article.setAttribute("aria-busy", "true");
  for (const button of article.querySelectorAll("button")) button.setAttribute("aria-disabled", "true");
  let item;
  state.review.sending += 1;
  try {
    item = await api(`/v1/items/${id}/answer`, { body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", ...keyHeaders() }, keyPlace: "review" });
  } catch (err) {
    delete article.dataset.busy;
    article.removeAttribute("aria-busy");
    for (const button of article.querySelectorAll("button")) button.removeAttribute("aria-disabled");
    if (err.status === 404) {
      state.review.total = Math.max(0, state.review.total - 1);
      await removeReviewEntry(article, `Item #${id} is no longer in the catalog; it left the list.`);
      return false;
    }
    showReviewError(`Item #${id}: nothing was stored. ${err.message}`);
    if (KEY_ERRORS.has(err.code)) openReviewKey();
    return false;
  } finally {
    state.review.sending -= 1;
  }
  state.review.answered += 1;
  state.review.total = Math.max(0, state.review.total - 1);
  await removeReviewEntry(article, done(item));
  return true;
}

async function removeReviewEntry(article, message) {
  const r = state.review;
  const index = reviewArticles().indexOf(article);
  const active = document.activeElement;
  const hadFocus = article.contains(active) || active === document.body || active === null;
  r.entries = r.entries.filter((e) => e.item.item_id !== Number(article.dataset.itemId));
  article.remove();
  $("review-status").textContent = `${message} ${leftText()}.`;
  if (!r.entries.length && r.more) await loadReview();
  if (!r.entries.length) setReviewPhase(r.phase === "loading" ? "loading" : "empty");
  syncReview();
  if (hadFocus) focusReviewEntry(index);
  else setCurrentEntry(Math.min(r.current, r.entries.length - 1));
  if (r.more && r.entries.length - index <= 3) loadReview();  // keep a few ahead of the person
}

/** "No, correct it": a form in the entry with every category the model knows (its guesses first) and the
 * stored attributes to toggle; Enter stores it, Escape closes it. */
function openReviewCorrection(article) {
  const entry = entryOf(article);
  if (!entry || article.dataset.busy) return;
  const open = $("review-list").querySelector(".review-fix");
  if (open?.closest(".review-entry") === article) { open.querySelector("select").focus(); return; }
  if (open) closeReviewCorrection(open.closest(".review-entry"), false);
  const item = entry.item;
  const scores = new Map((entry.guesses || []).map((g) => [g.name, g.score]));
  const top = [...new Set([entry.suspect?.model_category, ...scores.keys(), item.category].filter(Boolean))];
  const text = (name) => {
    const notes = [name === item.category ? "stored now" : "", scores.has(name) ? percent(scores.get(name)) : ""];
    return humanise(name) + (notes.some(Boolean) ? ` (${notes.filter(Boolean).join(", ")})` : "");
  };
  const select = el("select", { id: "review-fix-category", "aria-describedby": "review-fix-help" },
    ...categoryGroups(top, text));
  select.value = top.find((name) => name !== item.category) || "__other__";  // the likeliest other category
  const other = el("input", { id: "review-fix-other", type: "text", autocomplete: "off" });
  const otherRow = el("div", { class: "review-fix-other" },
    el("label", { for: "review-fix-other", text: "Other category" }), other);
  otherRow.hidden = select.value !== "__other__";
  select.addEventListener("change", () => { otherRow.hidden = select.value !== "__other__"; });
  select.addEventListener("keydown", (e) => {  // Enter in a <select> does not submit its form by itself
    if (e.key === "Enter") { e.preventDefault(); form.requestSubmit(); }
  });
  const predicted = (item.extra?.prediction?.attributes || []).filter(shownAttribute).map((a) => a.name);
  const chips = el("div", { id: "review-fix-attributes", class: "chips" },
    ...(item.attributes || []).map((a) => attributeToggle(a, true)),
    ...predicted.filter((a) => !(item.attributes || []).includes(a)).map((a) => attributeToggle(a, false)));
  const newAttribute = el("input", { id: "review-fix-attribute", type: "text", autocomplete: "off",
    list: "attribute-names" });
  newAttribute.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); addAttributeTo(newAttribute, chips); }
  });
  const add = el("button", { type: "button", class: "secondary", text: "Add attribute" });
  add.addEventListener("click", () => addAttributeTo(newAttribute, chips));
  const cancel = el("button", { type: "button", class: "secondary", text: "Cancel" });
  cancel.addEventListener("click", () => closeReviewCorrection(article, true));
  const form = el("form", { class: "correct review-fix", "aria-label": `Correct item #${item.item_id}` },
    el("label", { for: "review-fix-category", text: "The right category" }),
    select,
    el("p", { id: "review-fix-help", class: "muted small", text: "The model's guesses come first, then every " +
      "category it knows, by kind. Type a name to jump to it; Enter stores, Esc cancels." }),
    otherRow,
    el("fieldset", {},
      el("legend", { text: "Attributes (optional; press to toggle)" }),
      chips,
      el("label", { for: "review-fix-attribute", text: "Another attribute" }),
      el("div", { class: "row" }, newAttribute, add)),
    el("div", { class: "row" }, el("button", { type: "submit", text: "Store the correction" }), cancel));
  form.addEventListener("submit", (e) => { e.preventDefault(); submitReviewCorrection(article, form); });
  article.querySelector(".review-body").append(form);
  article.querySelector("[data-action=no]").setAttribute("aria-expanded", "true");
  select.focus();
}

function closeReviewCorrection(article, focus) {
  const form = article?.querySelector(".review-fix");
  if (!form) return;
  form.remove();
  article.querySelector("[data-action=no]").setAttribute("aria-expanded", "false");
  if (focus) article.focus();
}

function sameNames(a, b) { return a.length === b.length && a.every((name) => b.includes(name)); }

/** verdict "no" with the chosen category (and the attributes, when they changed). */
function submitReviewCorrection(article, form) {
  const entry = entryOf(article);
  if (!entry || article.dataset.busy) return;
  const item = entry.item;
  const choice = form.querySelector("#review-fix-category").value;
  const category = choice === "__other__" ? form.querySelector("#review-fix-other").value.trim() : choice;
  const attributes = [...form.querySelectorAll("#review-fix-attributes .chip")]
    .filter((b) => b.getAttribute("aria-pressed") === "true").map((b) => b.dataset.name);
  const changed = !sameNames(attributes, item.attributes || []);
  if (!category) {
    showReviewError("Give the right category: choose one, or type it under “Other category”.");
    form.querySelector(choice === "__other__" ? "#review-fix-other" : "#review-fix-category").focus();
    return;
  }
  if (category === item.category && !changed) {
    showReviewError(`${humanise(category)} is the category stored now: choose the right one, or press Esc and ` +
      "then Y if the stored one is right.");
    form.querySelector("#review-fix-category").focus();
    return;
  }
  const body = { verdict: "no", category };
  if (changed) body.attributes = attributes;
  sendAnswer(article, body, (stored) =>
    `Item #${stored.item_id} corrected to ${humanise(stored.category || category)}.`);
}

/** The review page's keys: J / K (and the arrows in the list) move, Y confirms, N opens the correction; in the
 * correction form Escape cancels (Enter submits it, as forms do). */
function reviewKeydown(e) {
  if (currentView() !== "review" || e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
  if ($("item-dialog").open) return;
  const target = e.target instanceof Element ? e.target : null;
  const form = target?.closest(".review-fix");
  if (form) {
    if (e.key === "Escape") { e.preventDefault(); closeReviewCorrection(form.closest(".review-entry"), true); }
    return;
  }
  if (target?.closest("input, select, textarea, [contenteditable]")) return;  // typing
  const inList = Boolean(target?.closest("#review-list"));
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  const moves = inList ? { j: 1, k: -1, ArrowDown: 1, ArrowUp: -1 } : { j: 1, k: -1 };
  if (key in moves) { e.preventDefault(); moveReview(moves[key]); return; }
  if (inList && (key === "Home" || key === "End")) {
    e.preventDefault();
    focusReviewEntry(key === "Home" ? 0 : state.review.entries.length - 1);
    return;
  }
  const article = target?.closest(".review-entry");  // Y / N act on the entry that has the focus only
  if (!article) return;
  if (key === "Escape" && article.querySelector(".review-fix")) {  // the focus left the form for its entry
    e.preventDefault();
    closeReviewCorrection(article, true);
  }
  if (key === "y") { e.preventDefault(); answerYes(article); }
  if (key === "n") { e.preventDefault(); openReviewCorrection(article); }
}

function setupReview() {
  const list = $("review-list");
  list.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const article = button.closest(".review-entry");
    if (button.dataset.action === "yes") answerYes(article);
    else if (article.querySelector(".review-fix")) closeReviewCorrection(article, true);
    else openReviewCorrection(article);
  });
  list.addEventListener("focusin", (e) => {
    const article = e.target.closest(".review-entry");
    if (article) setCurrentEntry(reviewArticles().indexOf(article));
  });
  document.addEventListener("keydown", reviewKeydown);
  $("review-more").addEventListener("click", () => loadReview());
  if ("IntersectionObserver" in window) {  // scrolled near the end: the next page
    new IntersectionObserver((seen) => {
      if (seen.some((s) => s.isIntersecting) && state.review.more && state.review.phase !== "loading") loadReview();
    }, { rootMargin: "300px" }).observe($("review-more"));
  }
  $("review-api-key").addEventListener("keydown", (e) => {  // typed the key: back to the entry
    if (e.key === "Enter") { e.preventDefault(); focusReviewEntry(state.review.current); }
  });
  window.addEventListener("hashchange", () => {
    const view = viewOfHash();
    if (view) showView(view);
  });
  showView(viewOfHash() || "photo");
}

setupKeyFields();
setupInputs();
setupCatalogForm();
setupDialog();
setupReview();
syncButtons();
loadLabels().finally(() => { document.documentElement.dataset.ready = "true"; });
