// fashionlens web page: classify a garment photo, draw its box and landmarks, show similar catalog items,
// and add the photo to the catalog after the person confirms or corrects the proposed labels.
// Plain ES module, no build step, no external resources.  API: /v1/classify, /v1/search, /v1/items.

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const KEY_STORE = "fashionlens.apiKey";
const SEARCH_K = 8;
const MAX_UPLOAD_BYTES = 9 * 1024 * 1024;  // the server refuses files over 10 MiB by default
const MAX_SIDE = 3000;  // larger files are shrunk to this many pixels on the long side before upload
// seq: the number of the latest photo; answers that arrive for an older photo are dropped
const state = { file: null, result: null, busy: 0, lastItemId: null, seq: 0 };

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

/** The message of an API answer that failed: {"error": {"code", "message"}}, FastAPI's {"detail"}, or text. */
function errorMessage(res, data, text) {
  if (data?.error?.message) return data.error.message;
  if (typeof data?.detail === "string") return data.detail;
  if (Array.isArray(data?.detail)) return data.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  const body = (text || "").replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
  return `The server answered ${res.status} ${res.statusText}${body ? `: ${body}` : ""}`;
}

/** POST (or GET) to the API; resolves to the JSON answer, rejects with an Error carrying the API's message. */
async function api(path, { method = "POST", body = null, headers = {} } = {}) {
  let res;
  try {
    res = await fetch(path, { method, body, headers: { Accept: "application/json", ...headers } });
  } catch (err) {
    throw new Error(`Could not reach the fashionlens server (${err.message}).`);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const error = new Error(errorMessage(res, data, text));
    error.status = res.status;
    error.code = data?.error?.code;
    throw error;
  }
  return data;
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
    if (err.status === 401 || err.status === 403) openKeyField();
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
  for (const id of ["add-button", "yes-button", "no-button", "fix-submit"]) $(id).disabled = state.busy > 0;
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
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) { e.preventDefault(); handleFile(file); }
  });
}

async function handleFile(file) {
  if (!file) return;
  clearError();
  if (file.type && !file.type.startsWith("image/")) {
    showError(`"${file.name}" is not an image (${file.type}). Choose a photo: JPEG, PNG or WebP.`);
    return;
  }
  const seq = ++state.seq;
  state.file = await shrinkIfHuge(file);
  state.result = null;
  $("result").hidden = true;
  $("add-panel").hidden = true;
  $("add-message").textContent = "";
  showPreview(state.file);
  // One upload: /v1/search answers the classification and the similar items together; without a catalog
  // (503 no_catalog) the page falls back to /v1/classify.
  const answer = await busy("Looking at your photo…", () => searchRequest().catch((err) => {
    if (err.code !== "no_catalog") throw err;
    state.noCatalog = true;
    return api("/v1/classify", { body: imageForm(state.file) }).then((classification) => ({ classification }));
  }));
  if (seq !== state.seq) return;
  if (!answer) { $("preview").hidden = true; $("drop").classList.remove("compact"); return; }
  state.result = answer.classification;
  renderResult(state.result);
  if (answer.results) showSimilar(answer);
  else $("similar-status").textContent = "No catalog is configured on this server, so there is nothing to search.";
  setStatus(`It looks like ${describe(state.result)}.` + (answer.results ? ` ${answer.results.length} similar items found.` : ""));
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
function describe(result) {
  const name = humanise(result.category?.name) || "an unknown garment";
  return result.hedged ? `${name} (at least ${humanise(result.hedged.name)})` : name;
}

function renderResult(result) {
  renderCategory(result);
  renderScores(result.category_scores || []);
  renderAttributes(result.attributes || []);
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

function renderCategory(result) {
  const cat = result.category || { name: "unknown", path: [], score: 0 };
  const icon = iconFor(cat.path, cat.name);
  $("category-icon").dataset.icon = icon;
  $("category-icon").querySelector("use").setAttribute("href", `icons.svg#icon-${icon}`);
  $("category-icon-title").textContent = ICON_TITLES[icon];
  $("category-name").textContent = humanise(cat.name);
  $("category-name").dataset.name = cat.name;
  $("category-score").textContent = cat.score != null ? `${percent(cat.score)} sure` : "";
  const path = cat.path?.length ? cat.path : [cat.name];
  $("breadcrumbs").replaceChildren(...path.map((node, i) =>
    el("li", { text: humanise(node), "aria-current": i === path.length - 1 ? "page" : null })));
  const hedge = $("hedge");
  hedge.hidden = !result.hedged;
  if (result.hedged) {
    const path = result.hedged.path || [];
    const where = path.length > 1 ? path.map(humanise).join(" › ") : "";
    hedge.textContent = `Not sure about the exact type: it is at least ${humanise(result.hedged.name)}` +
      (where ? ` (${where}).` : ".");
  }
}

function renderScores(scores) {
  $("scores").replaceChildren(...scores.slice(0, 5).map((s) => el("li", {},
    el("span", { text: humanise(s.name) }),
    el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${(s.score * 100).toFixed(1)}%` })),
    el("span", { class: "pct", text: percent(s.score) }))));
}

function renderAttributes(attributes) {
  if (!attributes.length) {
    $("attributes").replaceChildren(el("p", { class: "muted", text: "No attribute stands out." }));
    return;
  }
  const groups = new Map();
  for (const a of attributes) {
    const g = a.group || "other";
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(a);
  }
  $("attributes").replaceChildren(...[...groups].map(([group, list]) => el("div", { class: "group" },
    el("p", { class: "group-name", text: humanise(group) }),
    el("ul", { class: "chips", "aria-label": humanise(group) }, ...list.map((a) =>
      el("li", { class: "chip", "data-name": a.name },
        el("span", { text: humanise(a.name) }), el("span", { class: "muted", text: percent(a.score) })))))));
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

// ---------------------------------------------------------------- similar items
/** POST /v1/search for the current photo with the page's options (same category, copies first). */
function searchRequest() {
  const form = imageForm(state.file);
  form.append("k", String(SEARCH_K));
  if ($("same-category").checked) form.append("same_category", "true");
  if ($("rerank").checked) form.append("rerank", "true");
  if ($("group-sku").checked) form.append("group_sku", "true");
  if ($("crop").checked) form.append("crop", "true");  // the model's garment box (offered only when it has one)
  return api("/v1/search", { body: form });
}

/** Search again (an option changed, or an item was added): the photo is uploaded for the search only. */
async function searchSimilar() {
  if (!state.file || state.noCatalog) return;
  $("similar-status").textContent = "Searching the catalog…";
  const seq = state.seq;
  const answer = await busy("Searching the catalog…", searchRequest);
  if (seq !== state.seq) return;
  if (!answer) { $("similar-status").textContent = "The search failed."; return; }
  showSimilar(answer);
  setStatus(`It looks like ${describe(state.result)}. ${answer.results?.length || 0} similar items found.`);
}

function showSimilar(answer) {
  // "garment only" is offered when the model finds a garment box (a model without a box head has none, and
  // the API refuses crop for it with 422 no_box_head); hidden until the first answer says which
  $("crop-option").hidden = !answer.classification?.bbox;
  renderSimilar(answer.results || []);
}

/** Cosine similarity as words a person can read: a percentage and a plain judgement. */
function similarityText(score) {
  const s = Number(score);
  const word = s >= 0.9 ? "very similar" : s >= 0.7 ? "similar" : s >= 0.4 ? "somewhat similar" : "not alike";
  return `${Math.round(Math.max(0, s) * 100)}% · ${word}`;
}

function renderSimilar(results) {
  $("similar-status").textContent = results.length ? `${results.length} most similar items, best first.`
    : "No similar items: the catalog is empty or nothing matches the filter.";
  $("similar").replaceChildren(...results.map((item) => {
    const name = item.title || (item.sku ? `SKU ${item.sku}` : `Item ${item.item_id}`);
    return el("li", { class: `card${item.item_id === state.lastItemId ? " fresh" : ""}`, "data-item-id": item.item_id },
      el("img", { src: item.image_url || `/v1/items/${item.item_id}/image`, alt: `${name}: ${humanise(item.category)}` }),
      el("div", {},
        el("strong", { text: name }),
        el("span", { text: humanise(item.category) || "No category" }),
        item.verified ? el("span", { class: "badge", text: "Same picture",
          title: `${item.inliers} matching points agree on one geometric transform` }) : "",
        item.same_sku?.length ? el("span", { class: "muted", text: `+${item.same_sku.length} more photo${item.same_sku.length > 1 ? "s" : ""} of this product` }) : "",
        el("span", { class: "muted", title: `cosine similarity ${Number(item.score).toFixed(3)}`,
          text: `${similarityText(item.score)} · #${item.item_id}` })));
  }));
}

// ---------------------------------------------------------------- adding to the catalog
function proposal() {
  return { category: state.result.category.name, attributes: (state.result.attributes || []).map((a) => a.name) };
}

function openAddPanel() {
  if (!state.result) return;
  const { category, attributes } = proposal();
  $("proposal-category").textContent = humanise(category);
  $("proposal-attributes").textContent = attributes.length
    ? ` with ${attributes.map(humanise).join(", ")}` : " with no attributes";
  $("add-panel").hidden = false;
  $("add-button").setAttribute("aria-expanded", "true");
  if (!$("api-key").value) $("api-key").closest("details").open = true;  // writes need it: show where it goes
  $("correct-form").hidden = true;
  $("add-message").textContent = "";
  $("confirm-question").focus();
}

function openCorrection() {
  const { category, attributes } = proposal();
  const names = [...new Set([category, ...(state.result.category_scores || []).map((s) => s.name)])];
  $("fix-category").replaceChildren(...names.map((n) => el("option", { value: n, text: humanise(n) })),
    el("option", { value: "__other__", text: "Other…" }));
  $("fix-category").value = category;
  $("fix-other-row").hidden = true;
  $("fix-category-other").value = "";
  $("fix-attributes").replaceChildren(...attributes.map((a) => attributeToggle(a, true)));
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

function addAttribute() {
  const input = $("fix-attribute-new");
  const name = input.value.trim().toLowerCase().replace(/\s+/g, "_");
  if (!name) return;
  const existing = [...$("fix-attributes").children].find((b) => b.dataset.name === name);
  if (existing) existing.setAttribute("aria-pressed", "true");
  else $("fix-attributes").append(attributeToggle(name, true));
  input.value = "";
  input.focus();
}

function correctedLabels() {
  const choice = $("fix-category").value;
  const category = choice === "__other__" ? $("fix-category-other").value.trim() : choice;
  const attributes = [...$("fix-attributes").children]
    .filter((b) => b.getAttribute("aria-pressed") === "true").map((b) => b.dataset.name);
  return { category, attributes };
}

async function storeItem({ category, attributes }) {
  clearError();
  if (!category) { showError("Give the category: choose one or type it under Other."); return; }
  const form = imageForm(state.file);
  form.append("category", category);
  form.append("attributes", JSON.stringify(attributes));
  for (const [field, id] of [["title", "item-title"], ["sku", "item-sku"]]) {
    if ($(id).value.trim()) form.append(field, $(id).value.trim());
  }
  const key = $("api-key").value.trim();
  const headers = key ? { "X-API-Key": key } : {};
  const item = await busy("Adding it to your catalog…", () => api("/v1/items", { body: form, headers }));
  if (!item) return;
  state.lastItemId = item.item_id;
  $("correct-form").hidden = true;
  $("add-message").textContent = `Added to your catalog as item #${state.lastItemId} (${humanise(item.category || category)}).`;
  setStatus(`Added item #${state.lastItemId}.`);
  await searchSimilar();
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
  $("add-button").addEventListener("click", openAddPanel);
  $("yes-button").addEventListener("click", () => storeItem(proposal()));
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
  $("same-category").addEventListener("change", searchSimilar);
  for (const id of ["rerank", "group-sku", "crop"]) $(id).addEventListener("change", searchSimilar);
}

setupInputs();
setupCatalogForm();
document.documentElement.dataset.ready = "true";
