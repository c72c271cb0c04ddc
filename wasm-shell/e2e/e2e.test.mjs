// End-to-end test of the static page in Debian's headless Chromium (playwright-core):
//   1. autorun (temp 0, n 16) downloads the model, caches it and generates the same ids as the
//      native `chord generate --temp 0`;
//   2. a reload (phone-sized viewport) gets the model from OPFS: no second request for it;
//   3. the Stop button stops a streaming reply; "Clear stored models" empties the cache;
//   4. the Cache API fallback (?store=cache) stores and reuses the model too.
//   WebGPU (a second browser with --enable-unsafe-webgpu: SwiftShader, Chromium's software
//   WebGPU): backend=gpu on the tests' tiny llama (Q4_1/Q8_0, written by run.sh) gives the
//   native CLI's greedy ids, the Stop button stops a WebGPU reply, and backend=auto on that
//   software adapter stays on the CPU with one line saying why.
// Screenshots and results.json go to target/wasm-shell-e2e/. Run through run.sh.
//
// Env: MODEL (GGUF path), CHORD (native CLI), PROMPT, CHROMIUM (default /usr/bin/chromium),
// GPU_MODEL (the WebGPU part's model; default target/wasm-shell-e2e/tiny-llama.gguf — SwiftShader
// takes ~25 s per token on SmolLM2-sized layers, ~0.25 s on the tiny one; skipped with a note
// when absent), E2E_ONLY=webgpu (only that part).

import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir, homedir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const MODEL = process.env.MODEL || join(homedir(), ".cache/wasm-chord/models/SmolLM2-135M-Instruct.Q4_1.gguf");
const CHORD = process.env.CHORD || join(repo, "target/release/chord");
const PROMPT = process.env.PROMPT || "The capital of France is";
const N = 16;
const OUT = join(repo, "target/wasm-shell-e2e");
const GEN_TIMEOUT = 300_000;

let passed = 0;
let failed = 0;
const results = {};

function check(name, ok, detail = "") {
  if (ok) {
    passed++;
    console.log(`ok - ${name}`);
  } else {
    failed++;
    console.log(`not ok - ${name}${detail ? `: ${detail}` : ""}`);
  }
  return ok;
}

function native(prompt, n, extra = [], model = MODEL) {
  const t = performance.now();
  const out = execFileSync(CHORD, ["generate", "--model", model, "--prompt", prompt, "-n", String(n), "--temp", "0", "--json", ...extra], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  return { ...JSON.parse(out), wallMs: performance.now() - t };
}

function startServer(models = dirname(MODEL)) {
  return new Promise((resolveP, reject) => {
    const srv = spawn("python3", [join(here, "../serve.py"), "--port", "0", "--models", models, "--quiet"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let buf = "";
    srv.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m) resolveP({ srv, base: `http://127.0.0.1:${m[1]}` });
    });
    srv.on("exit", (code) => reject(new Error(`serve.py exited with ${code}`)));
    setTimeout(() => reject(new Error("serve.py did not start")), 15_000);
  });
}

async function serverCount(base, path) {
  const r = await fetch(`${base}/__requests`);
  const counts = await r.json();
  return counts[`GET ${path}`] || 0;
}

async function outputOf(page) {
  await page.waitForSelector('#output[data-done="1"]', { timeout: GEN_TIMEOUT });
  return page.$eval("#output", (el) => ({
    text: el.textContent,
    ids: JSON.parse(el.dataset.ids || "[]"),
    decodeTokS: Number(el.dataset.decodeTokS),
    prefillMs: Number(el.dataset.prefillMs),
    firstTokenMs: Number(el.dataset.firstTokenMs),
    loadToFirstTokenMs: el.dataset.loadToFirstTokenMs ? Number(el.dataset.loadToFirstTokenMs) : null,
    fromCache: el.dataset.fromCache ?? null,
    finish: el.dataset.finish,
    backend: el.dataset.backend,
    error: el.dataset.error ?? null,
  }));
}

const GPU_MODEL = process.env.GPU_MODEL || join(OUT, "tiny-llama.gguf");

/** The WebGPU part: Chromium's software WebGPU (SwiftShader) with --enable-unsafe-webgpu. */
async function webgpu() {
  if (!existsSync(GPU_MODEL)) {
    console.log(`# skip WebGPU part: ${GPU_MODEL} not present`);
    return;
  }
  const t0 = performance.now();
  const n = Number(process.env.GPU_N || 16);
  const ref = native(PROMPT, n, [], GPU_MODEL);
  const { srv, base } = await startServer(dirname(GPU_MODEL));
  const modelPath = `/models/${basename(GPU_MODEL)}`;
  const profile = mkdtempSync(join(tmpdir(), "wasm-chord-e2e-gpu-"));
  let ctx;
  let page;
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--headless",
        "--enable-unsafe-webgpu",
      ],
      viewport: { width: 1100, height: 900 },
    });
    page = ctx.pages()[0] || (await ctx.newPage());
    const consoleErrors = [];
    // Uncaptured WebGPU errors (validation, device loss) are console warnings in Chromium.
    page.on("console", (m) => (m.type() === "error" || (m.type() === "warning" && /GPU/i.test(m.text()))) && consoleErrors.push(m.text()));
    page.on("pageerror", (e) => consoleErrors.push(String(e)));

    // backend=gpu: the native CLI's greedy ids, generated on WebGPU.
    const q = new URLSearchParams({ model: modelPath, prompt: PROMPT, n: String(n), temp: "0", autorun: "1", backend: "gpu", ctx: "128" });
    await page.goto(`${base}/?${q}`);
    const g = await outputOf(page);
    console.log(`# webgpu autorun done at ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await page.screenshot({ path: join(OUT, "6-webgpu.png"), fullPage: true });
    const badge = await page.textContent("#backend");
    check("webgpu: ran without error", !g.error, g.error || "");
    check("webgpu: generated on WebGPU", g.backend === "webgpu" && /WebGPU/.test(badge), `${g.backend} / ${badge}`);
    check("webgpu: greedy ids equal the native CLI's", JSON.stringify(g.ids) === JSON.stringify(ref.ids), `page ${JSON.stringify(g.ids)} vs native ${JSON.stringify(ref.ids)}`);
    results.webgpu = { ids: g.ids, native_ids: ref.ids, decodeTokS: g.decodeTokS, prefillMs: g.prefillMs, loadToFirstTokenMs: g.loadToFirstTokenMs, adapter: badge };

    // Stop a WebGPU reply after a few tokens.
    await page.click("#settings summary");
    await page.fill("#n", "100");
    await page.fill("#prompt", "Once upon a time");
    await page.click("#send");
    await page.waitForFunction(
      () => {
        const o = document.querySelector("#output");
        return o && (Number(o.dataset.tokens || 0) >= 3 || o.dataset.done === "1");
      },
      null,
      { timeout: GEN_TIMEOUT },
    );
    await page.click("#stop");
    const stopped = await outputOf(page);
    console.log(`# webgpu stop done at ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    check("webgpu stop: finish is cancelled", stopped.finish === "cancelled" && stopped.backend === "webgpu", `${stopped.finish} on ${stopped.backend}`);
    check("webgpu stop: fewer tokens than asked", stopped.ids.length > 0 && stopped.ids.length < 200, String(stopped.ids.length));
    check("webgpu stop: send is enabled again", await page.isEnabled("#send"));

    // backend=auto on a software adapter: the CPU, one line saying why, the same ids.
    const qa = new URLSearchParams({ model: modelPath, prompt: PROMPT, n: String(n), temp: "0", autorun: "1", backend: "auto", ctx: "128" });
    await page.goto(`${base}/?${qa}`);
    const a = await outputOf(page);
    const line = await page.textContent("#gpu");
    check("auto on SwiftShader: runs on the CPU", a.backend === "cpu", a.backend);
    check("auto on SwiftShader: one line says why", /WebGPU not used, running on the CPU: .*software adapter/.test(line), line);
    check("auto on SwiftShader: the native ids", JSON.stringify(a.ids) === JSON.stringify(ref.ids), JSON.stringify(a.ids));
    check("webgpu: no console errors or WebGPU warnings", consoleErrors.length === 0, consoleErrors.join(" | "));
    results.webgpu.seconds = (performance.now() - t0) / 1000;
    console.log(`webgpu part: ${results.webgpu.seconds.toFixed(1)} s; WebGPU decode ${g.decodeTokS.toFixed(1)} tok/s on ${badge}`);
  } catch (e) {
    if (page) await page.screenshot({ path: join(OUT, "failure-webgpu.png"), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    srv.kill();
    rmSync(profile, { recursive: true, force: true });
  }
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  if (!existsSync(MODEL)) throw new Error(`model not found: ${MODEL}`);
  const modelPath = `/models/${basename(MODEL)}`;

  const ref = native(PROMPT, N);
  const ref1 = native(PROMPT, 1);
  const refT1 = native(PROMPT, N, ["-t", "1"]);
  results.native = {
    ids: ref.ids,
    decode_tok_s: ref.decode_tok_s,
    prefill_tok_s: ref.prefill_tok_s,
    decode_tok_s_1_thread: refT1.decode_tok_s,
    process_wall_ms_n1: Math.round(ref1.wallMs),
  };
  check("native 1-thread ids equal the default run's", JSON.stringify(refT1.ids) === JSON.stringify(ref.ids));
  console.log(`native: ${ref.decode_tok_s.toFixed(1)} tok/s decode, ids ${JSON.stringify(ref.ids)}`);

  const { srv, base } = await startServer();
  const profile = mkdtempSync(join(tmpdir(), "wasm-chord-e2e-"));
  let ctx;
  let page;
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--headless",
      ],
      viewport: { width: 1100, height: 900 },
    });
    page = ctx.pages()[0] || (await ctx.newPage());
    const browserModelRequests = [];
    ctx.on("request", (r) => {
      if (new URL(r.url()).pathname === modelPath) browserModelRequests.push(r.url());
    });
    const consoleErrors = [];
    page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
    page.on("pageerror", (e) => consoleErrors.push(String(e)));

    const q = new URLSearchParams({ model: modelPath, prompt: PROMPT, n: String(N), temp: "0", seed: "1", autorun: "1" });
    const url = `${base}/?${q}`;

    // 1. First visit: download, cache, generate.
    await page.goto(url);
    const first = await outputOf(page);
    await page.screenshot({ path: join(OUT, "1-first-visit.png"), fullPage: true });
    check("first run finished without error", !first.error, first.error);
    check("greedy ids equal the native CLI's", JSON.stringify(first.ids) === JSON.stringify(ref.ids), `page ${JSON.stringify(first.ids)} vs native ${JSON.stringify(ref.ids)}`);
    check("first run downloaded the model (not from cache)", first.fromCache === "0");
    check("one request for the model", browserModelRequests.length === 1 && (await serverCount(base, modelPath)) === 1, `${browserModelRequests.length} seen`);
    const coi = await page.evaluate(() => self.crossOriginIsolated);
    check("page is cross-origin isolated (COOP/COEP)", coi === true);
    const badge = await page.textContent("#backend");
    check("backend badge says CPU SIMD", /SIMD128/.test(badge), badge);
    const gpu = await page.textContent("#gpu");
    check("auto without WebGPU: one line says why the CPU runs", /WebGPU not used, running on the CPU: .*(no WebGPU|no adapter)/.test(gpu), gpu);
    check("auto without WebGPU: generated on the CPU", first.backend === "cpu", first.backend);
    results.download = first;
    results.wasmMemoryBytesAfterLoad = Number(await page.getAttribute("#model-info", "data-wasm-memory-bytes"));

    // 2. Reload at phone size: the model must come from OPFS.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    const second = await outputOf(page);
    await page.screenshot({ path: join(OUT, "2-reload-phone.png"), fullPage: false });
    check("reload: same ids", JSON.stringify(second.ids) === JSON.stringify(ref.ids), JSON.stringify(second.ids));
    check("reload: model read from browser storage", second.fromCache === "1", `fromCache=${second.fromCache}`);
    check("reload: no second request for the model", browserModelRequests.length === 1 && (await serverCount(base, modelPath)) === 1, `${browserModelRequests.length} browser requests`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check("phone viewport: no horizontal scrolling", overflow <= 0, `overflow ${overflow}px`);
    results.cached = second;

    // Measurement only: int8 activations (ids may differ from x86 in the last digits of the
    // accumulation, so they are recorded, not asserted).
    await page.setViewportSize({ width: 1100, height: 900 });
    const qq = new URLSearchParams({ model: modelPath, prompt: PROMPT, n: String(N), temp: "0", autorun: "1", precision: "q8" });
    await page.goto(`${base}/?${qq}`);
    const q8 = await outputOf(page);
    const refQ8 = native(PROMPT, N, ["--precision", "q8"]);
    results.q8 = { wasm: q8, native_decode_tok_s: refQ8.decode_tok_s, native_ids: refQ8.ids, ids_equal: JSON.stringify(q8.ids) === JSON.stringify(refQ8.ids) };
    check("q8: generated from the cached model", !q8.error && q8.ids.length === N && q8.fromCache === "1", q8.error || "");
    console.log(`q8: wasm ${q8.decodeTokS.toFixed(1)} tok/s, native ${refQ8.decode_tok_s.toFixed(1)} tok/s, ids equal: ${results.q8.ids_equal}`);

    // 3. Stop button: a long reply stopped after a few tokens.
    await page.click("#settings summary");
    await page.fill("#n", "200");
    await page.selectOption("#mode", "chat");
    await page.fill("#prompt", "Tell me a long story about a dragon.");
    await page.click("#send");
    await page.waitForFunction(
      () => {
        const o = document.querySelector("#output");
        return o && (Number(o.dataset.tokens || 0) >= 3 || o.dataset.done === "1");
      },
      null,
      { timeout: GEN_TIMEOUT },
    );
    await page.click("#stop");
    const stopped = await outputOf(page);
    check("stop: finish is cancelled", stopped.finish === "cancelled", stopped.finish);
    check("stop: fewer tokens than asked", stopped.ids.length > 0 && stopped.ids.length < 200, String(stopped.ids.length));
    check("stop: send is enabled again", await page.isEnabled("#send"));
    await page.screenshot({ path: join(OUT, "3-stopped.png"), fullPage: true });

    // 4. Clear the cache.
    await page.click("#cache-box summary");
    await page.click("#clear-cache");
    await page.waitForFunction(() => /^\(0 /.test(document.querySelector("#cache-summary").textContent), null, { timeout: 10_000 });
    const opfsLeft = await page.evaluate(async () => {
      const names = [];
      const walk = async (dir, prefix) => {
        for await (const [n, h] of dir.entries()) {
          if (h.kind === "directory") await walk(h, `${prefix}${n}/`);
          else names.push(prefix + n);
        }
      };
      await walk(await navigator.storage.getDirectory(), "");
      return names;
    });
    check("clear: no file left in OPFS", opfsLeft.length === 0, JSON.stringify(opfsLeft));

    // 5. Cache API fallback: download once, then reuse.
    const q2 = new URLSearchParams({ model: modelPath, prompt: PROMPT, n: "4", temp: "0", autorun: "1", store: "cache" });
    await page.goto(`${base}/?${q2}`);
    const c1 = await outputOf(page);
    check("cache API: first load downloads", c1.fromCache === "0" && (await serverCount(base, modelPath)) === 2);
    check("cache API: ids are the native prefix", JSON.stringify(c1.ids) === JSON.stringify(ref.ids.slice(0, 4)), JSON.stringify(c1.ids));
    await page.reload();
    const c2 = await outputOf(page);
    check("cache API: reload reuses the stored model", c2.fromCache === "1" && (await serverCount(base, modelPath)) === 2, `fromCache=${c2.fromCache}`);
    await page.screenshot({ path: join(OUT, "4-cache-api.png"), fullPage: true });
    const cacheKinds = await page.textContent("#cache-summary");
    check("cache API: listed as Cache Storage", /Cache Storage/.test(cacheKinds), cacheKinds);

    // 6. A local file through the file picker, then a bogus file dropped on the drop zone.
    await page.goto(base);
    await page.waitForSelector("#load-url:not([disabled])");
    await page.setInputFiles("#model-file", MODEL);
    await page.waitForSelector("#model-info[data-from-cache]", { timeout: GEN_TIMEOUT });
    const fileText = await page.textContent("#progress-text");
    check("file: loaded from the local file", /from file/.test(fileText), fileText);
    await page.click("#settings summary");
    await page.selectOption("#mode", "complete");
    await page.fill("#n", "4");
    await page.fill("#temp", "0");
    await page.fill("#prompt", PROMPT);
    await page.press("#prompt", "Enter");
    const f1 = await outputOf(page);
    check("file: ids are the native prefix", JSON.stringify(f1.ids) === JSON.stringify(ref.ids.slice(0, 4)), JSON.stringify(f1.ids));
    await page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(64)], "bogus.gguf"));
      document.querySelector("#drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await page.waitForFunction(() => /Could not load/.test(document.querySelector("#notice")?.textContent || ""), null, { timeout: 30_000 });
    check("drop: a bogus file is reported", true);
    await page.screenshot({ path: join(OUT, "5-bad-drop.png"), fullPage: true });

    // 7. A bad URL is reported, not hung.
    await page.goto(`${base}/?model=/models/missing.gguf&prompt=x&autorun=1`);
    await page.waitForSelector("#notice:not([hidden])", { timeout: 30_000 });
    const notice = await page.textContent("#notice");
    check("missing model: error shown", /404/.test(notice), notice);

    // 8. backend=gpu where WebGPU cannot run: the load fails and says why.
    await page.goto(`${base}/?model=${encodeURIComponent(modelPath)}&prompt=x&autorun=1&backend=gpu`);
    await page.waitForSelector("#notice:not([hidden])", { timeout: 60_000 });
    const gpuNotice = await page.textContent("#notice");
    check("backend=gpu without WebGPU: the load fails with the reason", /Could not load the model: WebGPU: /.test(gpuNotice), gpuNotice);

    check("no console errors", consoleErrors.length === 0, consoleErrors.join(" | "));
    results.wasm = JSON.parse(execFileSync("cat", [join(repo, "wasm-shell/dist/build.json")], { encoding: "utf8" }));
  } catch (e) {
    if (page) await page.screenshot({ path: join(OUT, "failure.png"), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    srv.kill();
    rmSync(profile, { recursive: true, force: true });
  }
  await webgpu();
  writeFileSync(join(OUT, "results.json"), JSON.stringify(results, null, 1));
  const d = results.download;
  const c = results.cached;
  if (d && c) {
    console.log(
      `wasm: decode ${d.decodeTokS.toFixed(1)} / ${c.decodeTokS.toFixed(1)} tok/s (native ${ref.decode_tok_s.toFixed(1)}); ` +
        `load→first token ${(d.loadToFirstTokenMs / 1000).toFixed(2)} s downloaded, ${(c.loadToFirstTokenMs / 1000).toFixed(2)} s cached; ` +
        `prefill ${d.prefillMs.toFixed(0)} ms; native 1 thread ${results.native.decode_tok_s_1_thread.toFixed(1)} tok/s; ` +
        `native process (load + 1 token) ${results.native.process_wall_ms_n1} ms; ` +
        `wasm memory after load ${(results.wasmMemoryBytesAfterLoad / 1e6).toFixed(0)} MB; wasm ${results.wasm.wasm_bytes} B (${results.wasm.wasm_gzip_bytes} B gzip)`,
    );
  }
}

try {
  if (process.env.E2E_ONLY === "webgpu") {
    mkdirSync(OUT, { recursive: true });
    await webgpu();
    console.log(JSON.stringify(results));
  } else {
    await main();
  }
} catch (e) {
  failed++;
  console.log(`not ok - e2e crashed: ${e.stack || e}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
