// Bayes' Beats page: plain JS, no build step. One "source" (an image + its caption, or a typed vibe) is
// rendered; "another interpretation" re-renders it with a new seed (a new variational sample).
const $ = (id) => document.getElementById(id);
const DURATION_S = 10;
let source = null;      // {kind: "image", blob, caption, url} | {kind: "text", prompt}
let seed = 0;
let wavUrl = null;

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
      message = err.error + (err.detail ? `: ${JSON.stringify(err.detail)}` : "");
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function busy(on) {
  $("progress").hidden = !on;
  document.body.dataset.state = on ? "generating" : document.body.dataset.state;
  for (const b of document.querySelectorAll("button")) b.disabled = on;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function base64ToBlob(b64, type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

async function drawWaveform(blob) {
  const canvas = $("waveform");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  try {
    const audio = await new AudioContext().decodeAudioData(await blob.arrayBuffer());
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

async function play(wav, meta) {
  if (wavUrl) URL.revokeObjectURL(wavUrl);
  wavUrl = URL.createObjectURL(wav);
  const player = $("player");
  player.src = wavUrl;
  $("download").href = wavUrl;
  $("result").hidden = false;
  $("numbers").textContent = meta;
  await drawWaveform(wav);
  player.addEventListener("loadedmetadata", () => {
    player.dataset.duration = String(player.duration);
    document.body.dataset.state = "ready";
  }, { once: true });
  player.load();
  player.play().catch(() => { /* autoplay may be refused until the user interacts */ });
}

async function render() {
  showError("");
  busy(true);
  try {
    if (source.kind === "text") {
      $("caption").textContent = source.prompt;
      $("scene").textContent = "";
      $("picked").src = "";
      const response = await call("/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: source.prompt, duration_s: DURATION_S, seed }),
      });
      await play(await response.blob(), `seed ${seed}`);
    } else {
      const form = new FormData();
      form.append("image", source.blob, "image");
      form.append("caption", source.caption || "");
      form.append("duration_s", String(DURATION_S));
      form.append("seed", String(seed));
      const body = await (await call("/generate_from_image", { method: "POST", body: form })).json();
      const v = body.vibe, first = body.variations[0];
      $("picked").src = source.url;
      $("scene").textContent = source.caption || "";
      $("caption").textContent = v.caption;
      await play(base64ToBlob(first.wav_base64, "audio/wav"),
        `valence ${v.valence.toFixed(2)} · arousal ${v.arousal.toFixed(2)} · ${first.bpm} BPM · ${first.keyscale} · energy ${Math.round(first.energy * 100)} % · seed ${seed}`);
    }
  } catch (err) {
    showError(`Could not make music: ${err.message}`);
    document.body.dataset.state = "error";
  } finally {
    busy(false);
  }
}

async function pickCatalog(entry) {
  const blob = await (await call(entry.image_url)).blob();
  source = { kind: "image", blob, caption: entry.caption, url: entry.image_url };
  seed = 0;
  await render();
}

async function loadCatalog() {
  const { images } = await (await call("/catalog")).json();
  const grid = $("grid");
  for (const entry of images) {
    const figure = document.createElement("figure");
    figure.innerHTML = `<img loading="lazy" alt=""><figcaption></figcaption>`;
    figure.querySelector("img").src = entry.image_url;
    figure.querySelector("img").alt = entry.caption;
    figure.querySelector("figcaption").textContent = entry.caption;
    figure.addEventListener("click", () => pickCatalog(entry));
    grid.appendChild(figure);
  }
}

$("surprise").addEventListener("click", async () => {
  try { await pickCatalog(await (await call("/catalog/random")).json()); } catch (err) { showError(err.message); }
});
$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
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

document.body.dataset.state = "idle";
loadCatalog().catch((err) => showError(`Catalog unavailable: ${err.message}`));
