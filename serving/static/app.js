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

// ---- the radio: the source's vibe as endless music (GET /stream), through Media Source Extensions. The page
// fetch()es the chunked MP3 itself (an <audio src> cannot read X-Stream-Id) into one SourceBuffer, polls
// GET /stream/{id} for the now-playing card, and when the connection drops or stalls resumes the same stream
// (?resume=ID) into the same buffer. Played audio is removed behind the playhead: an hour holds half a minute.
// #radio[data-state]: stopped | connecting | playing | reconnecting | error
const RADIO_TYPE = "audio/mpeg";
const RADIO_POLL_S = 2;          // GET /stream/{id} this often, for the card
const RADIO_STALL_S = 30;        // no byte for this long on an open connection: it is dead, reconnect
const RADIO_KEEP_S = 10;         // audio kept behind the playhead …
const RADIO_TRIM_S = 20;         // … removed in steps of at least this much
const RADIO_RESUME_S = 50;       // Play after Stop resumes the stream within this (the service keeps it 60 s)
const RADIO_RETRIES = 12;        // failed reconnects in a row (about 45 s) before the radio gives up
const RADIO_WAIT_SLOT_S = 75;    // a 429 at the start (too many streams): retried this long (stopped ones expire)
const RESET = "reset";           // in the append queue: a new connection's bytes follow (the MP3 parser restarts)

const radio = {
  state: "stopped",
  session: 0,                    // every start and stop makes a new one: an older session's callbacks do nothing
  source: null,                  // the `source` it plays, its query (what Play resumes) and listener id
  query: null,
  listener: null,
  id: null,                      // X-Stream-Id
  stoppedAt: 0,
  controller: null,              // the open fetch's
  media: null,
  buffer: null,
  url: null,
  queue: [],                     // Uint8Array | RESET, waiting for the SourceBuffer
  appended: 0,                   // bytes given to the SourceBuffer since the last RESET
  lastByteAt: 0,
  bytes: 0,
  reconnects: 0,
  timer: null,
  ticks: 0,
  polling: false,
  status: null,                  // the last GET /stream/{id}
  playing: null,                 // the segment the card shows: what a vote is about
  votes: new Map(),              // segment id → this page's vote on it
  lastVote: null,                // {index, vote}
  voting: false,
};
const radioOn = () => ["connecting", "playing", "reconnecting"].includes(radio.state);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function radioState(state, message) {
  radio.state = state;
  $("radio").dataset.state = state;
  if (message !== undefined) $("radio-status").textContent = message;
  const on = radioOn();
  $("radio-play").textContent = on ? "■ Stop radio" : "▶ Play radio";
  $("radio-play").setAttribute("aria-pressed", String(on));
}

// the stream's query for the current source: a catalog id, a /vibe token for an uploaded picture, or the text
async function radioQuery() {
  const q = new URLSearchParams();
  if (source.kind === "text") q.set("prompt", source.prompt);
  else if (source.catalog) q.set("catalog", source.catalog);
  else {
    if (!source.token) {
      const form = new FormData();
      form.append("image", source.blob, "image");
      source.token = (await (await call("/vibe", { method: "POST", body: form })).json()).token;
    }
    q.set("vibe", source.token);
  }
  const id = await listener().catch(() => null);  // no listener store: the radio plays, without votes
  if (id) q.set("listener", id);
  q.set("seed", String(seed));
  for (const [name, value] of Object.entries(overrides())) q.set(name, String(value));  // the nudges hold
  return { query: q.toString(), listener: id };
}

function radioMedia(session) {
  const audio = $("radio-audio");
  const media = new MediaSource();
  Object.assign(radio, { media, buffer: null, queue: [], appended: 0 });
  if (radio.url) URL.revokeObjectURL(radio.url);
  radio.url = URL.createObjectURL(media);
  audio.src = radio.url;
  media.addEventListener("sourceopen", () => {
    if (session !== radio.session) return;
    radio.buffer = media.addSourceBuffer(RADIO_TYPE);  // MPEG audio: timestamps follow the bytes ("sequence")
    radio.buffer.addEventListener("updateend", radioPump);
    radioPump();
  }, { once: true });
  // in the click's own task (a browser lets a page play after a gesture); it starts when the first audio lands
  audio.play().catch((err) => {
    if (err.name === "NotAllowedError" && session === radio.session) radioStop("The browser blocked playback: press play.");
  });
}

// the append queue → the SourceBuffer, one append at a time (the next on updateend); played audio trimmed first
function radioPump() {
  const buffer = radio.buffer, audio = $("radio-audio");
  if (!buffer || buffer.updating || !radio.media || radio.media.readyState !== "open") return;
  if (radio.queue[0] === RESET) {  // a new connection: bytes of a half-sent MP3 frame must not run into it
    radio.queue.shift();
    if (radio.appended) buffer.abort();  // resets the parser; the timeline goes on where the audio ended
    radio.appended = 0;
  }
  const ranges = buffer.buffered;
  if (ranges.length && audio.currentTime - ranges.start(0) > RADIO_KEEP_S + RADIO_TRIM_S) {
    buffer.remove(ranges.start(0), audio.currentTime - RADIO_KEEP_S);  // its updateend pumps again
    return;
  }
  let n = radio.queue.indexOf(RESET);
  if (n < 0) n = radio.queue.length;
  if (!n) return;
  const parts = radio.queue.splice(0, n);
  const data = new Uint8Array(parts.reduce((size, part) => size + part.length, 0));
  parts.reduce((at, part) => { data.set(part, at); return at + part.length; }, 0);
  try {
    buffer.appendBuffer(data);
    radio.appended += data.length;
  } catch (err) {  // QuotaExceededError: the browser's buffer is full; try again once the player moved on
    radio.queue.unshift(data);
    console.warn("radio:", err);
  }
}

// one connection: the response's bytes into the queue until it ends (resolves) or fails (throws, .status set
// for an HTTP error)
async function radioConnect(session, url) {
  const controller = new AbortController();
  radio.controller = controller;
  radio.lastByteAt = performance.now();  // the watchdog's clock: a connection that answers nothing is cut too
  const response = await fetch(url, { signal: controller.signal, headers: apiHeaders(), cache: "no-store" });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(message), { status: response.status, retryAfter: Number(response.headers.get("Retry-After")) || 5 });
  }
  radio.id = response.headers.get("X-Stream-Id") || radio.id;
  $("radio-stream-id").textContent = radio.id || "";
  if (radio.bytes) radio.queue.push(RESET);
  radio.lastByteAt = performance.now();
  const reader = response.body.getReader();
  let first = true;
  for (;;) {
    const { done, value } = await reader.read();
    if (done || session !== radio.session) return;
    radio.bytes += value.length;
    radio.lastByteAt = performance.now();
    radio.queue.push(value);
    radioPump();
    if (first) { first = false; radioState("playing", "On air"); }
  }
}

// connections until the radio is stopped: a dropped or stalled one is resumed (?resume=ID, the same stream);
// an expired one (404) starts afresh with the same query
async function radioRun(session, url) {
  let failures = 0, waited = 0;
  while (session === radio.session) {
    const before = radio.bytes;
    let problem;
    try {
      await radioConnect(session, url);
      problem = new Error("the connection closed");  // the service ended the stream (shutdown, its maximum length)
    } catch (err) {
      problem = err;
    }
    if (session !== radio.session) return;
    if (radio.bytes > before) failures = 0;  // it played: count anew
    const resuming = url.includes("resume=");
    if (problem.status === 404 && resuming) {  // gone (expired, or ended): the same vibe, a new stream
      radio.id = null;
      url = `/stream?${radio.query}`;
      continue;
    }
    if (problem.status === 429 && !resuming && waited < RADIO_WAIT_SLOT_S) {  // too many streams: one frees up
      radioState("connecting", `Waiting for a free stream… (${problem.message})`);
      await sleep(problem.retryAfter * 1000);
      waited += problem.retryAfter;
      continue;
    }
    if ((problem.status && problem.status !== 429 && problem.status < 500) || !radio.id || ++failures > RADIO_RETRIES) {
      radioFail(`The radio stopped: ${problem.message}`);
      return;
    }
    radioState("reconnecting", `Reconnecting… (${problem.message})`);
    await sleep(Math.min(250 * 2 ** failures, 5000));
    if (session !== radio.session) return;
    url = `/stream?resume=${encodeURIComponent(radio.id)}`;
    radio.reconnects += 1;
  }
}

async function radioStart() {
  if (!source) return;
  const session = ++radio.session;
  const wanted = source;
  radioState("connecting", "Tuning in…");
  for (const a of document.querySelectorAll(".take audio")) a.pause();
  if (!window.MediaSource || !MediaSource.isTypeSupported(RADIO_TYPE)) {
    return radioFail("This browser cannot play the radio (no MP3 in Media Source Extensions).");
  }
  radioMedia(session);
  let query;
  try { query = await radioQuery(); } catch (err) { if (session === radio.session) radioFail(`The radio could not start: ${err.message}`); return; }
  if (session !== radio.session) return;
  const resume = radio.id && radio.source === wanted && radio.query === query.query && Date.now() - radio.stoppedAt < RADIO_RESUME_S * 1000;
  Object.assign(radio, { source: wanted, query: query.query, listener: query.listener, status: null, playing: null, bytes: 0 });
  if (!resume) { Object.assign(radio, { id: null, lastVote: null, reconnects: 0 }); $("radio-card").hidden = true; }
  clearInterval(radio.timer);
  radio.timer = setInterval(() => radioTick(session), 1000);
  radioRun(session, resume ? `/stream?resume=${encodeURIComponent(radio.id)}` : `/stream?${query.query}`);
}

function radioStop(message = "") {
  radio.session += 1;
  if (radio.controller) radio.controller.abort();
  clearInterval(radio.timer);
  const audio = $("radio-audio");
  audio.pause();
  audio.removeAttribute("src");
  audio.load();
  if (radio.url) URL.revokeObjectURL(radio.url);
  Object.assign(radio, { url: null, media: null, buffer: null, queue: [], controller: null, stoppedAt: Date.now() });
  radioState("stopped", message);
}

function radioFail(message) {
  radioStop();
  radioState("error", message);
  showError(message);
}

// every second: a dead connection is cut (radioRun resumes it), played audio trimmed, the card polled
function radioTick(session) {
  if (session !== radio.session) return;
  if (radio.controller && !radio.controller.signal.aborted && performance.now() - radio.lastByteAt > RADIO_STALL_S * 1000) {
    radio.controller.abort();
  }
  radioPump();
  if (radio.ticks++ % RADIO_POLL_S === 0) radioPoll(session);
  radioHealth();
}

async function radioPoll(session) {
  if (!radio.id || radio.polling) return;
  radio.polling = true;
  try {
    const response = await fetch(`/stream/${encodeURIComponent(radio.id)}`, { headers: apiHeaders(), cache: "no-store" });
    if (response.ok && session === radio.session) showNowPlaying(await response.json());
  } catch (_) { /* the next tick asks again */ } finally {
    radio.polling = false;
  }
}

const fixed1 = (x) => Number(x).toFixed(1).replace(/\.0$/, "");
const drewText = (s) => `${fixed1(s.bpm)} BPM · ${s.keyscale} · energy ${pct(s.energy)}`;
function planText(plan) {
  if (!plan) return "one fixed reading (this model has no plan)";
  const words = plan.words && plan.words.length ? `${plan.words.join(" · ")} — ` : "";
  const { bpm, energy } = plan;
  return `${words}tempo ${Math.round(bpm.low)}–${Math.round(bpm.high)} BPM (${Math.round(bpm.mid)}), ` +
    `energy ${pct(energy.low)}–${pct(energy.high)} (${pct(energy.mid)}), P(major) ${pct(plan.p_major)}`;
}

function showNowPlaying(status) {
  radio.status = status;
  const now = status.now_playing;
  $("radio-card").hidden = !now;
  if (!now) return;
  radio.playing = now;
  $("np-segment").textContent = `segment ${now.index + 1}${now.phrase_start ? " · a new phrase" : ""}`;
  $("np-drew").textContent = drewText(now);
  const vibe = status.vibe;
  $("np-vibe").textContent = vibe
    ? `heard as “${vibe.caption}” · valence ${signed(vibe.valence)} · arousal ${signed(vibe.arousal)}`
    : radio.source && radio.source.kind === "text" ? `your words: “${radio.source.prompt}”` : "";
  $("np-plan").textContent = `plan: ${planText(now.plan)}`;
  const next = (status.next || [])[0];
  $("np-next-index").textContent = next ? ` (segment ${next.index + 1}${next.phrase_start ? ", a new phrase" : ""})` : "";
  $("np-next").textContent = next ? drewText(next) : "being rendered…";
  $("np-next-plan").textContent = next ? `plan: ${planText(next.plan)}` : "";
  radioVoteButtons();
}

function radioVoteButtons() {
  const now = radio.playing, vote = now ? radio.votes.get(now.id) : undefined;
  const open = !!(now && now.id && radio.listener) && vote === undefined && !radio.voting;
  for (const b of [$("radio-up"), $("radio-down")]) {
    b.disabled = !open;
    b.title = radio.listener ? "" : "votes need a listener id (the service keeps none)";
  }
  $("radio-card").dataset.vote = vote === undefined ? "" : String(vote);
  const last = radio.lastVote;  // a vote stays in view after its segment has played
  $("np-voted").textContent = vote !== undefined
    ? (vote > 0 ? "you liked this: what follows leans its way" : "not for you: what follows leans away")
    : last ? `you ${last.vote > 0 ? "liked" : "passed on"} segment ${last.index + 1}` : "";
}

async function radioVote(value) {
  const segment = radio.playing;
  if (!segment || !segment.id || radio.voting) return;
  radio.voting = true;
  radioVoteButtons();
  try {
    const answer = await (await postJson("/feedback", { listener: radio.listener, id: segment.id, vote: value })).json();
    radio.votes.set(segment.id, value);
    radio.lastVote = { index: segment.index, vote: value };
    showTaste(answer);
  } catch (err) {
    showError(`Could not record the vote: ${err.message}`);
  } finally {
    radio.voting = false;
    radioVoteButtons();
  }
}

function radioHealth() {
  const audio = $("radio-audio"), ranges = audio.buffered;
  const ahead = ranges.length ? Math.max(0, ranges.end(ranges.length - 1) - audio.currentTime) : 0;
  const status = radio.status;
  const parts = [`· ${Math.round(ahead)} s buffered`];
  if (radio.reconnects) parts.push(`${radio.reconnects} reconnect${radio.reconnects === 1 ? "" : "s"}`);
  if (status && status.underruns) parts.push(`${status.underruns} underrun${status.underruns === 1 ? "" : "s"}`);
  $("radio-health").textContent = parts.join(" · ");
}

// the page's hook for tests and the curious: what the radio is doing, and a hiccup on demand
window.__radio = Object.freeze({
  dropConnection() { if (radio.controller) radio.controller.abort(); },
  info() {
    const ranges = $("radio-audio").buffered;
    return {
      state: radio.state, id: radio.id, bytes: radio.bytes, reconnects: radio.reconnects,
      buffered: Array.from({ length: ranges.length }, (_, i) => [ranges.start(i), ranges.end(i)]),
    };
  },
});

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
$("radio-play").addEventListener("click", () => (radioOn() ? radioStop() : radioStart()));
$("radio-up").innerHTML = THUMB;
$("radio-down").innerHTML = THUMB;
$("radio-up").addEventListener("click", () => radioVote(1));
$("radio-down").addEventListener("click", () => radioVote(-1));
const radioAudio = $("radio-audio");
radioAudio.addEventListener("waiting", () => { if (radio.state === "playing") $("radio-status").textContent = "Buffering…"; });
radioAudio.addEventListener("playing", () => { if (radio.state === "playing") $("radio-status").textContent = "On air"; });
// one thing plays at a time: a take started by hand stops the radio (Play resumes it)
document.addEventListener("play", (event) => { if (event.target.closest(".take") && radioOn()) radioStop(); }, true);
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
