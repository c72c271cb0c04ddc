// The engine's thread. Downloads (or reads from the cache) a model chunk by chunk straight into
// the wasm loader, caches it while it streams, moves the engine to WebGPU when asked and
// possible, and generates one engine step at a time (`stepAsync`: on WebGPU the step's readback
// comes back through this thread's event loop), yielding to its message loop between steps so
// that a "stop" message gets through.
//
// In:  init {store} · load {url | file, nCtx, precision, backend: auto|gpu|cpu} ·
//      generate {mode, prompt | messages, options} · stop ·
//      cache-list · cache-clear
// Out: ready · progress · loaded · token · done · cache · error {op, message}

import init, { ModelLoader, backend, gpuBuild, maxModelBytes, version } from "./pkg/wasm_shell.js";
import { clearAll, openStore } from "./store.js";

let engine = null;
let store = null;
let storePref = undefined;
let stopRequested = false;
let busy = false;
let wasmReady = null;

const post = (m) => self.postMessage(m);

function errorText(e) {
  if (e instanceof Error) return e.message;
  return String(e);
}

/** Let queued messages (a stop) run: a MessageChannel task, not a clamped timer. */
function yieldToEvents() {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => resolve();
    ch.port2.postMessage(0);
  });
}

async function getStore() {
  if (!store) store = await openStore(storePref);
  return store;
}

async function cacheReport() {
  const s = await getStore();
  let usage = null;
  let quota = null;
  try {
    const est = await navigator.storage.estimate();
    usage = est.usage ?? null;
    quota = est.quota ?? null;
  } catch {
    // no StorageManager
  }
  return { type: "cache", kind: s ? s.kind : "none", entries: s ? await s.list() : [], usage, quota };
}

/** Throttled progress: at most every 100 ms, plus the last one. */
function progressReporter(phase, total) {
  const t0 = performance.now();
  let last = 0;
  return (loaded, force = false) => {
    const now = performance.now();
    if (!force && now - last < 100) return;
    last = now;
    const secs = (now - t0) / 1000;
    post({ type: "progress", phase, loaded, total, mbps: secs > 0 ? loaded / 1e6 / secs : 0 });
  };
}

async function pump(stream, loader, writer, report) {
  const reader = stream.getReader();
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    loader.push(value);
    if (writer) await writer.write(value);
    n += value.byteLength;
    report(n);
  }
  report(n, true);
  return n;
}

async function load({ url, file, nCtx, precision, backend: wanted }) {
  const t0 = performance.now();
  if (engine) {
    engine.free();
    engine = null;
  }
  let loader = null;
  let writer = null;
  let fromCache = false;
  let size = null;
  let source;
  try {
    if (file) {
      size = file.size;
      source = file.name;
      if (size > maxModelBytes()) throw new Error(tooBig(size));
      loader = new ModelLoader(size);
      await pump(file.stream(), loader, null, progressReporter("file", size));
    } else {
      source = new URL(url, self.location.href).href;
      const s = await getStore();
      const hit = s ? await s.lookup(source) : null;
      if (hit) {
        fromCache = true;
        size = hit.size;
        loader = new ModelLoader(size);
        await pump(hit.stream(), loader, null, progressReporter("cache", size));
      } else {
        const resp = await fetch(source, { cache: "no-store" });
        if (!resp.ok) throw new Error(`download failed: HTTP ${resp.status} ${resp.statusText}`);
        if (!resp.body) throw new Error("download failed: no response body");
        // A compressed transfer's Content-Length is not the file's size.
        const enc = resp.headers.get("content-encoding");
        const len = Number(resp.headers.get("content-length"));
        size = (!enc || enc === "identity") && len > 0 ? len : null;
        if (size !== null && size > maxModelBytes()) throw new Error(tooBig(size));
        loader = new ModelLoader(size ?? undefined);
        if (s) {
          try {
            writer = await s.writer(source, size ?? undefined);
          } catch (e) {
            post({ type: "warning", message: `not cached: ${errorText(e)}` });
          }
        }
        const got = await pump(resp.body, loader, writer, progressReporter("download", size));
        size = got;
      }
    }
    const tRead = performance.now();
    post({ type: "progress", phase: "build", loaded: size, total: size, mbps: 0 });
    engine = loader.finish({ nCtx: nCtx || 0, precision: precision || "f32" });
    loader.free();
    loader = null;
    // auto: WebGPU on a hardware adapter, else the CPU and why; gpu: WebGPU or an error.
    let choice;
    try {
      choice = await engine.useBackend(wanted || "auto");
    } catch (e) {
      engine.free();
      engine = null;
      throw e;
    }
    if (writer) {
      try {
        await writer.commit(size);
      } catch (e) {
        post({ type: "warning", message: `not cached: ${errorText(e)}` });
      }
      writer = null;
    }
    post({
      type: "loaded",
      source,
      fromCache,
      size,
      info: engine.info(),
      backend: { wanted: wanted || "auto", ...choice },
      readMs: tRead - t0,
      loadMs: performance.now() - t0,
      wasmMemoryBytes: (await wasmReady).memory?.buffer.byteLength ?? null,
      cache: await cacheReport(),
    });
  } catch (e) {
    if (writer) await writer.abort().catch(() => {});
    if (loader) loader.free();
    throw e;
  }
}

function tooBig(size) {
  return `the model is ${(size / 2 ** 30).toFixed(2)} GiB; this wasm32 build holds at most ${(maxModelBytes() / 2 ** 30).toFixed(2)} GiB`;
}

async function generate({ mode, prompt, messages, options }) {
  if (!engine) throw new Error("no model loaded");
  stopRequested = false;
  if (mode === "chat") engine.startChat(messages, options);
  else engine.start(prompt, options);
  const onToken = (text, id) => {
    post({ type: "token", text, id });
    return !stopRequested;
  };
  for (;;) {
    if (stopRequested) {
      engine.stop();
      break;
    }
    if (await engine.stepAsync(onToken)) break;
    await yieldToEvents();
  }
  post({ type: "done", stats: engine.stats() });
}

const handlers = {
  async init({ store: pref }) {
    storePref = pref;
    wasmReady ??= init();
    await wasmReady;
    post({
      type: "ready",
      backend: backend(),
      version: version(),
      maxModelBytes: maxModelBytes(),
      crossOriginIsolated: self.crossOriginIsolated === true,
      webgpu: typeof navigator !== "undefined" && "gpu" in navigator,
      gpuBuild: gpuBuild(),
      cache: await cacheReport(),
    });
  },
  load,
  generate,
  async "cache-list"() {
    post(await cacheReport());
  },
  async "cache-clear"() {
    store = null;
    await clearAll();
    post(await cacheReport());
  },
};

self.onmessage = async ({ data }) => {
  if (data.type === "stop") {
    stopRequested = true;
    return;
  }
  const h = handlers[data.type];
  if (!h) return post({ type: "error", op: data.type, message: "unknown request" });
  if (busy && data.type !== "cache-list") {
    return post({ type: "error", op: data.type, message: "busy: wait for the current task" });
  }
  busy = data.type !== "cache-list";
  try {
    await h(data);
  } catch (e) {
    post({ type: "error", op: data.type, message: errorText(e) });
  } finally {
    if (data.type !== "cache-list") busy = false;
  }
};
