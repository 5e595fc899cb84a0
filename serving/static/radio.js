"use strict";
// The page's radio (loaded after app.js, whose helpers it uses: $, call, listener, showError …).

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
