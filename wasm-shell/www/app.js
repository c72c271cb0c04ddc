// The page: UI only. The engine, downloads and the model cache live in worker.js.
//
// URL parameters: ?model=URL&prompt=TEXT&n=N&temp=T&seed=S&backend=auto|gpu|cpu&autorun=1
//   (also: mode=chat|complete — autorun completes raw text unless mode=chat —, ctx=N,
//    precision=f32|q8, store=opfs|cache to force a cache backend).
// After a generation, #output holds its text with data-done="1", data-ids (JSON array),
// data-decode-tok-s, data-prefill-ms, data-first-token-ms, data-finish, data-backend
// (webgpu | cpu) and, for the first
// generation after a load, data-load-to-first-token-ms and data-from-cache.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const ui = {
  backend: $("backend"),
  gpu: $("gpu"),
  urlForm: $("url-form"),
  url: $("model-url"),
  loadUrl: $("load-url"),
  drop: $("drop"),
  file: $("model-file"),
  progressBox: $("progress-box"),
  progress: $("progress"),
  progressText: $("progress-text"),
  info: $("model-info"),
  cacheSummary: $("cache-summary"),
  cacheList: $("cache-list"),
  clearCache: $("clear-cache"),
  log: $("log"),
  examples: $("examples"),
  chatForm: $("chat-form"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  stats: $("stats"),
  mode: $("mode"),
  n: $("n"),
  temp: $("temp"),
  topK: $("top-k"),
  topP: $("top-p"),
  minP: $("min-p"),
  repeat: $("repeat"),
  seed: $("seed"),
  nCtx: $("n-ctx"),
  precision: $("precision"),
  backendSel: $("backend-sel"),
  newChat: $("new-chat"),
};

const state = {
  ready: false,
  loaded: false,
  loading: false,
  generating: false,
  hasChatTemplate: false,
  history: [],
  loadStart: null,
  fromCache: null,
  firstAfterLoad: false,
  gen: null,
  /** The loaded engine's backend: "webgpu" | "cpu". */
  backend: null,
  cpuName: "CPU · wasm SIMD128",
};

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const send = (m) => worker.postMessage(m);

// ---------- formatting ----------

const mb = (b) => (b / 1e6).toFixed(b >= 1e8 ? 0 : 1);
const fmtBytes = (b) => (b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : `${mb(b)} MB`);

function setNotice(text, kind = "error") {
  let el = $("notice");
  if (!el) {
    el = document.createElement("p");
    el.id = "notice";
    el.setAttribute("role", kind === "error" ? "alert" : "status");
    ui.info.before(el);
  }
  el.className = `notice ${kind}`;
  el.textContent = text;
  el.hidden = !text;
}

// ---------- controls ----------

function refreshControls() {
  const canType = state.loaded && !state.generating && !state.loading;
  ui.prompt.disabled = !state.loaded;
  ui.send.disabled = !canType;
  ui.stop.disabled = !state.generating;
  ui.loadUrl.disabled = state.loading || state.generating || !state.ready;
  ui.file.disabled = state.loading || state.generating || !state.ready;
  ui.drop.classList.toggle("disabled", ui.file.disabled);
  for (const b of ui.examples.querySelectorAll("button")) b.disabled = !canType;
  ui.clearCache.disabled = state.loading;
}

function numberOf(input, fallback) {
  const v = Number(input.value);
  return Number.isFinite(v) ? v : fallback;
}

function genOptions() {
  return {
    n: Math.max(1, Math.round(numberOf(ui.n, 128))),
    temperature: Math.max(0, numberOf(ui.temp, 0.8)),
    topK: Math.max(0, Math.round(numberOf(ui.topK, 40))),
    topP: numberOf(ui.topP, 0.95),
    minP: numberOf(ui.minP, 0.05),
    repeatPenalty: numberOf(ui.repeat, 1.0),
    seed: Math.max(0, Math.round(numberOf(ui.seed, 0x5eed))),
  };
}

// ---------- model loading ----------

function startLoad(msg) {
  if (state.loading || state.generating) return;
  setNotice("");
  state.loading = true;
  state.loaded = false;
  state.loadStart = performance.now();
  ui.progressBox.hidden = false;
  ui.progress.value = 0;
  ui.progress.removeAttribute("value");
  ui.progressText.textContent = "Starting…";
  ui.info.textContent = "";
  refreshControls();
  send({
    type: "load",
    nCtx: Math.round(numberOf(ui.nCtx, 2048)),
    precision: ui.precision.value,
    backend: ui.backendSel.value,
    ...msg,
  });
}

ui.urlForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const url = ui.url.value.trim();
  if (url) startLoad({ url });
});

function loadFile(file) {
  if (!file) return;
  if (!/\.gguf$/i.test(file.name)) {
    setNotice(`${file.name} does not look like a .gguf file`);
    return;
  }
  startLoad({ file });
}

ui.file.addEventListener("change", () => loadFile(ui.file.files[0]));
for (const ev of ["dragenter", "dragover"]) {
  ui.drop.addEventListener(ev, (e) => {
    e.preventDefault();
    ui.drop.classList.add("over");
  });
}
for (const ev of ["dragleave", "drop"]) {
  ui.drop.addEventListener(ev, () => ui.drop.classList.remove("over"));
}
ui.drop.addEventListener("drop", (e) => {
  e.preventDefault();
  if (!ui.file.disabled) loadFile(e.dataTransfer.files[0]);
});

function showProgress({ phase, loaded, total, mbps }) {
  const what = { download: "Downloading", cache: "Reading from browser storage", file: "Reading file", build: "Preparing the model" }[phase] || phase;
  if (phase === "build") {
    ui.progress.removeAttribute("value");
    ui.progressText.textContent = `${what}…`;
    return;
  }
  if (total) {
    ui.progress.value = loaded / total;
    const pct = Math.floor((100 * loaded) / total);
    ui.progressText.textContent = `${what}: ${mb(loaded)} / ${mb(total)} MB (${pct}%) · ${mbps.toFixed(1)} MB/s`;
  } else {
    ui.progress.removeAttribute("value");
    ui.progressText.textContent = `${what}: ${mb(loaded)} MB · ${mbps.toFixed(1)} MB/s`;
  }
}

function showCache({ kind, entries, usage, quota }) {
  const total = entries.reduce((a, e) => a + e.size, 0);
  const where = { opfs: "browser files (OPFS)", cache: "Cache Storage", none: "unavailable" }[kind] || kind;
  ui.cacheSummary.textContent = `(${entries.length} · ${fmtBytes(total)} · ${where})`;
  ui.cacheList.replaceChildren(
    ...entries.map((e) => {
      const li = document.createElement("li");
      const name = decodeURIComponent(e.url.split("/").pop() || e.url);
      li.textContent = `${name} — ${fmtBytes(e.size)}, stored ${new Date(e.storedAt).toLocaleString()}`;
      li.title = e.url;
      return li;
    }),
  );
  if (!entries.length) {
    const li = document.createElement("li");
    li.textContent = "Nothing stored.";
    ui.cacheList.append(li);
  }
  if (usage != null && quota) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = `Site storage: ${fmtBytes(usage)} used of ${fmtBytes(quota)} allowed.`;
    ui.cacheList.append(li);
  }
  ui.clearCache.hidden = !entries.length;
}

ui.clearCache.addEventListener("click", () => {
  if (state.loading) return;
  send({ type: "cache-clear" });
});

// ---------- chat ----------

function bubble(role, text) {
  ui.log.querySelector(".empty")?.remove();
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Model";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  div.append(who, body);
  ui.log.append(div);
  div.scrollIntoView({ block: "end" });
  return body;
}

function generate(text) {
  if (!state.loaded || state.generating || !text.trim()) return;
  setNotice("");
  const mode = ui.mode.value === "chat" && state.hasChatTemplate ? "chat" : "complete";
  bubble("user", text);
  const out = bubble("assistant", "");
  document.getElementById("output")?.removeAttribute("id");
  out.id = "output";
  out.setAttribute("aria-busy", "true");
  state.gen = { out, text: "", tokens: 0, start: performance.now(), first: null, mode, prompt: text };
  state.generating = true;
  refreshControls();
  ui.stats.textContent = "Reading the prompt…";
  const options = genOptions();
  if (mode === "chat") {
    state.history.push({ role: "user", content: text });
    send({ type: "generate", mode, messages: state.history, options });
  } else {
    send({ type: "generate", mode, prompt: text, options });
  }
}

ui.chatForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.prompt.value;
  if (!text.trim()) return;
  ui.prompt.value = "";
  generate(text);
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.chatForm.requestSubmit();
  }
});
ui.stop.addEventListener("click", () => {
  if (state.generating) send({ type: "stop" });
});
ui.examples.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-prompt]");
  if (b) generate(b.dataset.prompt);
});
ui.newChat.addEventListener("click", () => {
  if (state.generating) return;
  state.history = [];
  ui.log.replaceChildren();
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = "New conversation.";
  ui.log.append(p);
});

function onToken({ text }) {
  const g = state.gen;
  if (!g) return;
  g.tokens += 1;
  if (g.first === null) {
    g.first = performance.now();
    ui.stats.textContent = "Generating…";
  }
  g.text += text;
  g.out.textContent = g.text;
  g.out.dataset.tokens = String(g.tokens);
  if (g.tokens % 4 === 1) g.out.parentElement.scrollIntoView({ block: "end" });
}

function onDone({ stats }) {
  const g = state.gen;
  state.generating = false;
  state.gen = null;
  refreshControls();
  if (!g) return;
  const out = g.out;
  out.removeAttribute("aria-busy");
  if (stats) {
    out.textContent = stats.text;
    out.dataset.ids = JSON.stringify(stats.ids);
    out.dataset.decodeTokS = stats.decodeTokS.toFixed(3);
    out.dataset.prefillMs = stats.prefillMs.toFixed(1);
    out.dataset.promptTokens = String(stats.promptTokens);
    out.dataset.finish = stats.finish;
    out.dataset.backend = state.backend || "cpu";
    if (g.first !== null) out.dataset.firstTokenMs = (g.first - g.start).toFixed(1);
    if (state.firstAfterLoad && g.first !== null && state.loadStart !== null) {
      out.dataset.loadToFirstTokenMs = (g.first - state.loadStart).toFixed(1);
      out.dataset.fromCache = state.fromCache ? "1" : "0";
    }
    if (g.mode === "chat") state.history.push({ role: "assistant", content: stats.text });
    const parts = [
      `prompt ${stats.promptTokens} tok in ${stats.prefillMs.toFixed(0)} ms (${stats.prefillTokS.toFixed(1)} tok/s)`,
      `${stats.nGenerated} tok at ${stats.decodeTokS.toFixed(1)} tok/s`,
      stats.finish === "cancelled" ? "stopped" : `stop: ${stats.finish}`,
    ];
    if (out.dataset.loadToFirstTokenMs) {
      parts.push(`load → first token ${(Number(out.dataset.loadToFirstTokenMs) / 1000).toFixed(2)} s`);
    }
    ui.stats.textContent = parts.join(" · ");
  }
  state.firstAfterLoad = false;
  out.dataset.done = "1";
  ui.prompt.focus({ preventScroll: true });
}

/** The badge and the one line saying where the model runs (and, under auto, why not WebGPU). */
function showBackend({ wanted, backend, adapter, reason }) {
  state.backend = backend;
  const gpu = backend === "webgpu";
  ui.backend.textContent = gpu ? `WebGPU · ${adapter || "GPU"}` : state.cpuName;
  ui.backend.dataset.backend = backend;
  ui.gpu.classList.toggle("warn", !gpu && wanted !== "cpu");
  ui.gpu.classList.toggle("muted", gpu || wanted === "cpu");
  ui.gpu.textContent = gpu
    ? "running on WebGPU (one command buffer per token)"
    : wanted === "cpu"
      ? "WebGPU: not used (backend cpu)"
      : `WebGPU not used, running on the CPU: ${reason || "unavailable"}`;
}

// ---------- worker messages ----------

worker.onmessage = ({ data: m }) => {
  switch (m.type) {
    case "ready": {
      state.ready = true;
      const simd = m.backend === "cpu-simd128";
      state.cpuName = simd ? "CPU · wasm SIMD128" : "CPU · scalar wasm";
      ui.backend.textContent = state.cpuName;
      ui.backend.classList.add("ok");
      ui.backend.title = `engine ${m.version}; model limit ${fmtBytes(m.maxModelBytes)}; ${
        m.crossOriginIsolated ? "cross-origin isolated" : "not cross-origin isolated"
      }`;
      ui.gpu.textContent = !m.gpuBuild
        ? "WebGPU: not in this build"
        : m.webgpu
          ? "WebGPU: available (the adapter is checked at load)"
          : "WebGPU: unavailable in this browser";
      showCache(m.cache);
      refreshControls();
      autorun();
      break;
    }
    case "progress":
      showProgress(m);
      break;
    case "loaded": {
      state.loading = false;
      state.loaded = true;
      state.fromCache = m.fromCache;
      state.firstAfterLoad = true;
      state.hasChatTemplate = m.info.hasChatTemplate;
      state.history = [];
      ui.progress.value = 1;
      const how = m.fromCache ? "from browser storage" : m.source.startsWith("http") ? "downloaded" : "from file";
      ui.progressText.textContent = `${fmtBytes(m.size)} ${how} in ${(m.readMs / 1000).toFixed(2)} s; ready in ${(m.loadMs / 1000).toFixed(2)} s.`;
      const i = m.info;
      ui.info.textContent = `${i.name || i.arch} · ${i.arch}, ${i.nLayer} layers, ${i.nVocab} tokens, context ${i.nCtx}${
        i.hasChatTemplate ? "" : " · no chat template: raw completion"
      }`;
      ui.info.dataset.fromCache = m.fromCache ? "1" : "0";
      if (m.wasmMemoryBytes) {
        ui.info.dataset.wasmMemoryBytes = String(m.wasmMemoryBytes);
        ui.info.title = `wasm memory after loading: ${fmtBytes(m.wasmMemoryBytes)}`;
      }
      if (!i.hasChatTemplate) ui.mode.value = "complete";
      showBackend(m.backend);
      if (!m.fromCache && m.cache.entries.length) navigator.storage?.persist?.().catch(() => {});
      showCache(m.cache);
      refreshControls();
      if (pendingAutorun) {
        const p = pendingAutorun;
        pendingAutorun = null;
        generate(p);
      } else {
        ui.prompt.focus({ preventScroll: true });
      }
      break;
    }
    case "token":
      onToken(m);
      break;
    case "done":
      onDone(m);
      break;
    case "cache":
      showCache(m);
      break;
    case "warning":
      setNotice(m.message, "warn");
      break;
    case "error": {
      setNotice(`${m.op === "load" ? "Could not load the model" : m.op === "generate" ? "Generation failed" : m.op}: ${m.message}`);
      if (m.op === "load") {
        state.loading = false;
        ui.progressText.textContent = "Failed.";
        ui.progress.value = 0;
      }
      if (m.op === "generate" && state.gen) {
        state.gen.out.dataset.error = m.message;
        state.gen.out.dataset.done = "1";
        state.gen.out.removeAttribute("aria-busy");
        if (state.gen.mode === "chat") state.history.pop();
        state.gen = null;
        state.generating = false;
      }
      refreshControls();
      break;
    }
  }
};
worker.onerror = (e) => {
  setNotice(`The engine failed to start: ${e.message || "worker error"}`);
};

// ---------- URL parameters ----------

let pendingAutorun = null;

function applyParams() {
  const set = (input, key) => {
    const v = params.get(key);
    if (v !== null && v !== "") input.value = v;
  };
  set(ui.url, "model");
  set(ui.n, "n");
  set(ui.temp, "temp");
  set(ui.seed, "seed");
  set(ui.nCtx, "ctx");
  const backend = params.get("backend");
  if (backend === "auto" || backend === "gpu" || backend === "cpu") ui.backendSel.value = backend;
  const precision = params.get("precision");
  if (precision === "f32" || precision === "q8") ui.precision.value = precision;
  const mode = params.get("mode");
  if (mode === "chat" || mode === "complete") ui.mode.value = mode;
  else if (params.get("autorun") === "1") ui.mode.value = "complete";
  if (params.get("prompt") !== null) ui.prompt.value = params.get("prompt");
}

function autorun() {
  if (params.get("autorun") !== "1") return;
  const model = params.get("model");
  const prompt = params.get("prompt");
  if (!model) return setNotice("autorun needs ?model=URL");
  if (prompt) {
    pendingAutorun = prompt;
    ui.prompt.value = "";
  }
  startLoad({ url: model });
}

applyParams();
refreshControls();
send({ type: "init", store: params.get("store") || undefined });
