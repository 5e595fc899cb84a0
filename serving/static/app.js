// Bayes' Beats page: plain JS, no build step. One "source" (an image + its caption, or a typed vibe) is rendered
// as a few takes drawn from the vibe's plan; the page shows the reasoning (cues → valence/arousal → words →
// plan → what each take drew), lets a person nudge the plan (tempo, mode, energy overrides), vote on takes
// (their taste tilts the next plans) and forget their votes. body[data-state]: idle | generating | ready | error.
// The radio plays the same source as endless music (GET /stream), with a now-playing card and votes on it.
const $ = (id) => document.getElementById(id);
const TAKES = 3;                 // several takes: the API then answers JSON with the plan and what each drew
const LISTENER_KEY = "bayes-beats-listener";
let source = null;               // {kind: "image", blob, caption, url, catalog?, token?} | {kind: "text", prompt}
let seed = 0;
let takeUrls = [];
let lastKeyscale = null;         // the first take's key: a mode nudge keeps its tonic
// the request limits, from the service (GET /limits: the API's schema, the one source); until they come,
// the HTML's own attributes hold
let limits = { fields: {}, max_image_bytes: Infinity };
const bound = (field, key, fallback) => (limits.fields[field] || {})[key] ?? fallback;
const durationS = () => bound("duration_s", "default", 10);  // the API's default length

// ---- the listener: an id the service issues (POST /listener: 128 random bits it signs), kept in
// localStorage. It is a secret: whoever holds it can vote as this browser, so it is shown only in part.
let listenerPromise = null;
function newListener() {
  localStorage.removeItem(LISTENER_KEY);
  listenerPromise = call("/listener", { method: "POST" })
    .then((response) => response.json())
    .then((answer) => { localStorage.setItem(LISTENER_KEY, answer.listener); return answer.listener; });
  listenerPromise.catch(() => { listenerPromise = null; });  // the next call asks again
  return listenerPromise;
}
function listener() {
  if (listenerPromise) return listenerPromise;
  const id = localStorage.getItem(LISTENER_KEY);
  const pattern = bound("listener", "pattern", null);
  // an id from before (a name the page once made up) is not one the service issued: ask for one
  return id && (!pattern || new RegExp(pattern).test(id)) ? (listenerPromise = Promise.resolve(id)) : newListener();
}
const shown = (id) => `${id.slice(0, 6)}…`;

// ---- HTTP
function apiHeaders(extra = {}) {
  const key = localStorage.getItem("bayes-beats-api-key");
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function call(url, options = {}) {
  let response = await fetch(url, { ...options, headers: apiHeaders(options.headers || {}) });
  if (response.status === 401) {  // the service was started with an API key
    const key = window.prompt("This Bayes' Beats needs an API key:");
    if (key) {
      localStorage.setItem("bayes-beats-api-key", key);
      response = await fetch(url, { ...options, headers: apiHeaders(options.headers || {}) });
    }
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      const err = Array.isArray(body) ? body[0] : body;
      message = (err.error || message) + (err.detail ? `: ${JSON.stringify(err.detail)}` : "");
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}
const postJson = (url, body) =>
  call(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// ---- small helpers
function busy(on) {
  $("progress").hidden = !on;
  if (on) document.body.dataset.state = "generating";
  // the radio's controls are its own: it plays on (and can be stopped) while takes render
  for (const b of document.querySelectorAll("button:not(.radio-control)")) b.disabled = on || b.dataset.locked === "1";
}
function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}
function base64ToBlob(b64, type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}
const pct = (x) => `${Math.round(x * 100)} %`;
const signed = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x).toFixed(2)}`;
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

// ---- the reasoning panel
function drawMeter(name, value) {  // value in [-1, 1] on an axis from -1 to 1
  $(name).textContent = signed(value);
  $(`${name}-dot`).style.left = `${((value + 1) / 2) * 100}%`;
}

// band {low, mid, high} on a scale lo..hi: a bar with the mid marker, and where each take landed (numbered)
function drawBand(id, band, lo, hi, label, takes) {
  const at = (v) => `${(Math.min(Math.max((v - lo) / (hi - lo), 0), 1) * 100).toFixed(1)}%`;
  const node = $(id);
  const bar = node.querySelector("b"), mid = node.querySelector("i");
  bar.style.left = at(band.low);
  bar.style.width = `calc(${at(band.high)} - ${at(band.low)})`;
  mid.style.left = at(band.mid);
  node.setAttribute("aria-label", label);
  for (const old of node.querySelectorAll("s")) old.remove();
  const marks = new Map();  // takes that landed close together share one mark: "1·2·3"
  for (const [i, value] of takes.entries()) {
    const spot = Math.round(((value - lo) / (hi - lo)) * 25);
    const mark = marks.get(spot) || { left: at(value), numbers: [] };
    marks.set(spot, { ...mark, numbers: [...mark.numbers, i + 1] });
  }
  for (const { left, numbers } of marks.values()) node.append(el("s", { textContent: numbers.join("·"), style: `left: ${left}` }));
}

function showReasoning(vibe, plan, variations) {
  const cues = vibe ? vibe.cues || {} : {};
  $("step-cues").hidden = !vibe;
  $("cues").replaceChildren(...Object.entries(cues).map(([name, value]) =>
    el("li", { textContent: name === "hue_deg" ? `hue ${Math.round(value)}°` : `${name} ${value.toFixed(2)}` })));
  $("cue-words").textContent = vibe && vibe.cue_words ? `a ${vibe.cue_words.join(", ")} scene` : "";
  const valence = plan ? plan.valence : vibe && vibe.valence, arousal = plan ? plan.arousal : vibe && vibe.arousal;
  $("step-va").hidden = typeof valence !== "number";
  if (typeof valence === "number") { drawMeter("valence", valence); drawMeter("arousal", arousal); }
  const words = plan && plan.words && plan.words.length ? plan.words : (vibe && vibe.moods) || [];
  $("words").textContent = words.length ? words.join(" · ") : "—";
  $("plan").hidden = !plan;
  $("no-plan").hidden = !!plan;
  if (!plan) return;
  const bpm = plan.bpm, energy = plan.energy;
  const tempoText = `${Math.round(bpm.low)}–${Math.round(bpm.high)} BPM (most likely ${Math.round(bpm.mid)})`;
  $("tempo-text").textContent = tempoText;
  const tempo = $("tempo");
  drawBand("tempo-band", bpm, Number(tempo.min), Number(tempo.max), `tempo band ${tempoText}`, variations.map((v) => v.bpm));
  const energyText = `${pct(energy.low)}–${pct(energy.high)} (${pct(energy.mid)})`;
  $("energy-text").textContent = energyText;
  drawBand("energy-band", energy, 0, 1, `energy band ${energyText}`, variations.map((v) => v.energy));
  $("p-major").textContent = pct(plan.p_major);
  $("entropy").textContent = typeof plan.entropy === "number" ? `· uncertainty ${plan.entropy.toFixed(2)} nats` : "";
  if ($("tempo-auto").checked) { $("tempo").value = Math.round(bpm.mid); }
  if ($("energy-auto").checked) { $("energy").value = Math.round(energy.mid * 100); }
}

// ---- taste: what the votes say so far
const LEANS = { tempo: ["slower", "faster"], mode: ["more minor", "more major"], energy: ["calmer", "more intense"] };
function showTaste(answer) {
  const votes = answer && typeof answer.votes === "number" ? answer.votes : 0;
  if (!votes) { $("taste").textContent = ""; return; }
  const taste = answer.taste || {};
  const parts = Object.entries(taste).map(([name, t]) =>
    `${signed(t.mean)} ${name}${LEANS[name] ? ` (${LEANS[name][t.mean >= 0 ? 1 : 0]})` : ""}`);
  $("taste").textContent = `${votes} vote${votes === 1 ? "" : "s"} · your taste: ${parts.join(", ")}`;
}

async function vote(take, value, row) {
  for (const b of row.querySelectorAll(".vote")) { b.disabled = true; b.dataset.locked = "1"; }
  try {
    const answer = await (await postJson("/feedback", { listener: await listener(), id: take.id, vote: value })).json();
    row.querySelector(".voted").textContent = value > 0 ? "you liked this" : "not for you";
    row.dataset.vote = String(value);
    showTaste(answer);
  } catch (err) {
    for (const b of row.querySelectorAll(".vote")) { b.disabled = false; b.dataset.locked = ""; }
    showError(`Could not record the vote: ${err.message}`);
  }
}

// ---- takes
// 👍 drawn, not typed: a phone or a server without an emoji font would show a box (Material "thumb_up", Apache-2.0)
const THUMB = '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" fill="currentColor"><path d="M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z"/></svg>';
let decoder = null;             // one AudioContext for every waveform (browsers cap how many a page may open)
async function drawWaveform(canvas, blob) {
  const ctx = canvas.getContext("2d");
  try {
    decoder ||= new AudioContext();
    const audio = await decoder.decodeAudioData(await blob.arrayBuffer());
    const data = audio.getChannelData(0);
    const step = Math.max(1, Math.floor(data.length / canvas.width));
    ctx.fillStyle = "#f0a35e";
    for (let x = 0; x < canvas.width; x++) {
      let peak = 0;
      for (let i = x * step; i < (x + 1) * step && i < data.length; i++) peak = Math.max(peak, Math.abs(data[i]));
      const h = Math.max(1, peak * canvas.height);
      ctx.fillRect(x, (canvas.height - h) / 2, 1, h);
    }
  } catch (err) { console.warn("waveform:", err); }
}

function takeRow(take, index) {
  const blob = base64ToBlob(take.wav_base64, "audio/wav");
  const url = URL.createObjectURL(blob);
  takeUrls.push(url);
  const drew = `${Math.round(take.bpm)} BPM · ${take.keyscale} · energy ${pct(take.energy)}`;
  const audio = el("audio", { controls: true, preload: "auto", src: url });
  audio.setAttribute("aria-label", `take ${index + 1}`);
  const up = el("button", { type: "button", className: "vote up", innerHTML: THUMB });
  const down = el("button", { type: "button", className: "vote down", innerHTML: THUMB });
  up.setAttribute("aria-label", "vote up");
  down.setAttribute("aria-label", "vote down");
  const canvas = el("canvas", { width: 320, height: 40 });
  canvas.setAttribute("aria-hidden", "true");
  const row = el("li", { className: "take" },
    el("div", { className: "take-head" }, el("strong", { textContent: `Take ${index + 1}` }),
      el("span", { className: "drew", textContent: drew })),
    canvas, audio,
    el("div", { className: "take-actions" }, up, down, el("span", { className: "voted muted" }),
      el("a", { href: url, download: `bayes-beats-take-${index + 1}.wav`, textContent: "⬇ WAV" })));
  if (take.features) row.dataset.features = take.features.map((f) => f.toFixed(2)).join(",");
  if (take.id) {
    up.addEventListener("click", () => vote(take, 1, row));
    down.addEventListener("click", () => vote(take, -1, row));
  } else {  // an older server: no generation ids, no votes
    for (const b of [up, down]) { b.dataset.locked = "1"; b.title = "this server does not take votes"; }
  }
  drawWaveform(canvas, blob);
  const loaded = new Promise((resolve) => {
    audio.addEventListener("loadedmetadata", () => { audio.dataset.duration = String(audio.duration); resolve(); }, { once: true });
    audio.addEventListener("error", resolve, { once: true });
  });
  return { row, loaded };
}

async function showTakes(variations) {
  for (const url of takeUrls) URL.revokeObjectURL(url);
  takeUrls = [];
  const made = variations.map(takeRow);
  $("takes").replaceChildren(...made.map((m) => m.row));
  lastKeyscale = variations.length ? variations[0].keyscale : null;
  showNudges();
  await Promise.all(made.map((m) => m.loaded));
}

// ---- nudges → overrides (none while "auto")
function overrides() {
  const out = {};
  if (!$("tempo-auto").checked) out.bpm = Number($("tempo").value);
  if (!$("energy-auto").checked) out.energy = Number($("energy").value) / 100;
  const mode = $("mode").value;
  if (mode) {  // keep the tonic the first take drew; before any take, C major / A minor
    const tonic = lastKeyscale ? lastKeyscale.split(" ")[0] : (mode === "major" ? "C" : "A");
    out.keyscale = `${tonic} ${mode}`;
  }
  return out;
}

function showNudges() {
  const wanted = overrides();
  $("tempo-out").textContent = wanted.bpm ? `${wanted.bpm} BPM` : "auto";
  $("energy-out").textContent = "energy" in wanted ? pct(wanted.energy) : "auto";
  $("mode-out").textContent = wanted.keyscale ? `→ ${wanted.keyscale}` : "";
}

// ---- rendering a source
async function render() {
  showError("");
  if (radio.source && radio.source !== source && radioOn()) {  // the radio of the old vibe stops
    radioStop("A new vibe: press play for its radio.");
    $("radio-card").hidden = true;
  }
  busy(true);
  try {
    const id = await listener().catch(() => null);  // no id (no vote store): anonymous takes
    const extra = { ...(id ? { listener: id } : {}), num_variations: TAKES, ...overrides() };
    let body;
    if (source.kind === "text") {
      body = await (await postJson("/generate", { prompt: source.prompt, duration_s: durationS(), seed, ...extra })).json();
      $("picked").removeAttribute("src");
      $("scene").textContent = "";
      $("caption").textContent = source.prompt;
    } else {
      const form = new FormData();
      form.append("image", source.blob, "image");
      form.append("caption", source.caption || "");
      form.append("duration_s", String(durationS()));
      form.append("seed", String(seed));
      for (const [name, value] of Object.entries(extra)) form.append(name, String(value));
      body = await (await call("/generate_from_image", { method: "POST", body: form })).json();
      $("picked").src = source.url;
      $("scene").textContent = source.caption || "";
      $("caption").textContent = body.vibe ? body.vibe.caption : "";
    }
    $("result").hidden = false;
    showReasoning(body.vibe || null, body.plan || null, body.variations || []);
    await showTakes(body.variations || []);
    document.body.dataset.state = "ready";
  } catch (err) {
    showError(`Could not make music: ${err.message}`);
    document.body.dataset.state = "error";
  } finally {
    busy(false);
  }
}

async function pickCatalog(entry) {
  const blob = await (await call(entry.image_url)).blob();
  source = { kind: "image", blob, caption: entry.caption, url: entry.image_url, catalog: entry.id };
  seed = 0;
  await render();
}

async function loadCatalog() {
  const { images } = await (await call("/catalog")).json();
  $("grid").replaceChildren(...images.map((entry) => {
    const img = el("img", { loading: "lazy", src: entry.image_url, alt: "" });
    const pick = el("button", { type: "button", className: "pick" }, img, el("span", { textContent: entry.caption }));
    pick.setAttribute("aria-label", `play ${entry.caption}`);
    pick.addEventListener("click", () => pickCatalog(entry).catch((err) => showError(err.message)));
    return el("figure", {}, pick);
  }));
}

async function loadTaste() {
  try {
    let id = await listener();
    let response = await fetch(`/listener/${id}`, { headers: apiHeaders() });
    if (response.status === 400) {  // signed with a key the service no longer has: a new id
      id = await newListener();
      response = await call(`/listener/${id}`);
    }
    $("listener-id").textContent = shown(id);
    if (response.ok) showTaste(await response.json());
  } catch (err) { showError(`No listener id: ${err.message}`); }
}

// ---- wiring
$("surprise").addEventListener("click", async () => {
  try { await pickCatalog(await (await call("/catalog/random")).json()); } catch (err) { showError(err.message); }
});
$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  if (file.size > limits.max_image_bytes) {
    return showError(`That image is over ${Math.floor(limits.max_image_bytes / 2 ** 20)} MB; pick a smaller one.`);
  }
  source = { kind: "image", blob: file, caption: "", url: URL.createObjectURL(file) };
  seed = 0;
  await render();
});
$("text-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return showError("Type a vibe first.");
  source = { kind: "text", prompt };
  seed = 0;
  await render();
});
$("another").addEventListener("click", async () => { seed += 1; await render(); });
$("nudge").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (source) await render();
});
for (const name of ["tempo", "energy"]) {  // moving a slider leaves "auto"; ticking "auto" drops the override
  $(name).addEventListener("input", () => { $(`${name}-auto`).checked = false; showNudges(); });
  $(`${name}-auto`).addEventListener("change", showNudges);
}
$("mode").addEventListener("change", showNudges);
$("forget").addEventListener("click", async () => {
  try {
    const old = await listener();
    await call(`/listener/${old}`, { method: "DELETE" });
    $("listener-id").textContent = shown(await newListener());
    showTaste(null);
    if (radioOn()) { radioStop(); radio.id = null; radioStart(); }
    for (const b of document.querySelectorAll(".take .vote")) if (b.title === "") { b.dataset.locked = ""; b.disabled = false; }
    for (const v of document.querySelectorAll(".take .voted")) v.textContent = "";
    $("forgotten").textContent = "Forgotten: your votes are gone, and you have a new random id.";
  } catch (err) { showError(`Could not forget: ${err.message}`); }
});

async function loadLimits() {
  limits = await (await call("/limits")).json();
  $("prompt").maxLength = bound("prompt", "maxLength", $("prompt").maxLength);
  $("tempo").min = bound("bpm", "minimum", $("tempo").min);
  $("tempo").max = bound("bpm", "maximum", $("tempo").max);
}

showNudges();
loadLimits().catch(() => { /* the HTML's own limits stay */ }).finally(loadTaste);
loadCatalog().catch((err) => showError(`Catalog unavailable: ${err.message}`));
