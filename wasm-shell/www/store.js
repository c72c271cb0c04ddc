// Model cache for the worker: the Origin Private File System (OPFS), or the Cache API where OPFS
// is missing. Entries are keyed by URL + size; an index maps each URL to its stored copies.
//
// store = await openStore(prefer)          prefer: "opfs" | "cache" | undefined (auto)
// store.kind                               "opfs" | "cache"
// await store.lookup(url)                  { name, size, stream(): ReadableStream } | null
// const w = await store.writer(url, size?)  await w.write(chunk), await w.commit(size), await w.abort()
// await store.list()                       [{ url, size, storedAt }]
// await store.clear()

const DIR = "wasm-chord-models";
const CACHE = "wasm-chord-models";
const CACHE_PREFIX = "/__wasm-chord-cache__/";
const INDEX = "index.json";

async function sha256hex(text) {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The stored name of `url` at `size` bytes. */
export async function entryName(url, size) {
  return (await sha256hex(`${url}\n${size}`)) + ".gguf";
}

class OpfsStore {
  constructor(dir) {
    this.kind = "opfs";
    this.dir = dir;
  }

  async readIndex() {
    try {
      const h = await this.dir.getFileHandle(INDEX);
      const v = JSON.parse(await (await h.getFile()).text());
      return v && typeof v === "object" && !Array.isArray(v) ? v : {};
    } catch {
      return {};
    }
  }

  async writeIndex(index) {
    const h = await this.dir.getFileHandle(INDEX, { create: true });
    await writeWhole(h, new TextEncoder().encode(JSON.stringify(index)));
  }

  async lookup(url) {
    const index = await this.readIndex();
    for (const e of index[url] || []) {
      try {
        const file = await (await this.dir.getFileHandle(e.name)).getFile();
        if (file.size === e.size) return { name: e.name, size: e.size, stream: () => file.stream() };
      } catch {
        // listed but gone (cleared by the browser): fall through to a download
      }
    }
    return null;
  }

  async writer(url) {
    // Written under a temporary name; only a committed copy is renamed and listed, so an
    // interrupted download never looks like a cached model.
    const tmp = `partial-${crypto.randomUUID()}`;
    const h = await this.dir.getFileHandle(tmp, { create: true });
    const sink = await openSink(h);
    return {
      write: (chunk) => sink.write(chunk),
      commit: async (size) => {
        await sink.close();
        const name = await entryName(url, size);
        await this.dir.removeEntry(name).catch(() => {});
        if (typeof h.move === "function") {
          await h.move(name);
        } else {
          // No move(): copy the bytes (rare; old browsers).
          const dst = await this.dir.getFileHandle(name, { create: true });
          const w = await openSink(dst);
          const r = (await h.getFile()).stream().getReader();
          for (;;) {
            const { done, value } = await r.read();
            if (done) break;
            await w.write(value);
          }
          await w.close();
          await this.dir.removeEntry(tmp).catch(() => {});
        }
        const index = await this.readIndex();
        const list = (index[url] || []).filter((e) => e.name !== name);
        list.unshift({ name, size, storedAt: Date.now() });
        index[url] = list;
        await this.writeIndex(index);
      },
      abort: async () => {
        await sink.close().catch(() => {});
        await this.dir.removeEntry(tmp).catch(() => {});
      },
    };
  }

  async list() {
    const index = await this.readIndex();
    const out = [];
    for (const [url, entries] of Object.entries(index)) {
      for (const e of entries) out.push({ url, size: e.size, storedAt: e.storedAt });
    }
    return out;
  }

  async clear() {
    const names = [];
    for await (const name of this.dir.keys()) names.push(name);
    for (const name of names) await this.dir.removeEntry(name, { recursive: true }).catch(() => {});
  }

  /** Remove leftovers of interrupted downloads. */
  async sweep() {
    const names = [];
    for await (const name of this.dir.keys()) if (name.startsWith("partial-")) names.push(name);
    for (const name of names) await this.dir.removeEntry(name).catch(() => {});
  }
}

/** A sequential writer on an OPFS file: a sync access handle in workers, else createWritable. */
async function openSink(handle) {
  if (typeof handle.createSyncAccessHandle === "function") {
    const a = await handle.createSyncAccessHandle();
    a.truncate(0);
    let at = 0;
    return {
      write: async (chunk) => {
        let off = 0;
        while (off < chunk.byteLength) {
          const n = a.write(chunk.subarray(off), { at: at + off });
          if (n <= 0) throw new Error("OPFS write failed (disk full?)");
          off += n;
        }
        at += off;
      },
      close: async () => {
        a.flush();
        a.close();
      },
    };
  }
  const w = await handle.createWritable();
  return { write: (chunk) => w.write(chunk), close: () => w.close() };
}

async function writeWhole(handle, bytes) {
  const s = await openSink(handle);
  await s.write(bytes);
  await s.close();
}

class CacheApiStore {
  constructor(cache) {
    this.kind = "cache";
    this.cache = cache;
  }

  key(name) {
    return new Request(new URL(CACHE_PREFIX + name, self.location.origin).href);
  }

  async readIndex() {
    try {
      const r = await this.cache.match(this.key(INDEX));
      const v = r ? await r.json() : {};
      return v && typeof v === "object" && !Array.isArray(v) ? v : {};
    } catch {
      return {};
    }
  }

  async writeIndex(index) {
    await this.cache.put(
      this.key(INDEX),
      new Response(JSON.stringify(index), { headers: { "content-type": "application/json" } }),
    );
  }

  async lookup(url) {
    const index = await this.readIndex();
    for (const e of index[url] || []) {
      const r = await this.cache.match(this.key(e.name));
      if (!r || !r.body) continue;
      const len = r.headers.get("content-length");
      if (len !== null && Number(len) !== e.size) continue;
      // The body streams from disk: a large model is never read into one buffer.
      return { name: e.name, size: e.size, stream: () => r.body };
    }
    return null;
  }

  async writer(url, expectedSize) {
    // The Cache API takes a whole Response: feed it a stream that the download writes into.
    // cache.put only stores a body that ended normally, and the index lists an entry only
    // after commit, so an interrupted download is never used.
    const known = Number.isSafeInteger(expectedSize) && expectedSize > 0;
    const name = known ? await entryName(url, expectedSize) : `partial-${crypto.randomUUID()}`;
    let ctrl;
    const body = new ReadableStream({ start: (c) => (ctrl = c) });
    const headers = known ? { "content-length": String(expectedSize) } : {};
    const put = this.cache.put(this.key(name), new Response(body, { headers }));
    put.catch(() => {});
    return {
      write: async (chunk) => ctrl.enqueue(chunk),
      commit: async (size) => {
        ctrl.close();
        await put;
        let final = name;
        if (!known || size !== expectedSize) {
          // Size learnt only now: store under the right key (one more copy, rare).
          final = await entryName(url, size);
          const r = await this.cache.match(this.key(name));
          if (!r) throw new Error("Cache API lost the model");
          await this.cache.put(
            this.key(final),
            new Response(r.body, { headers: { "content-length": String(size) } }),
          );
          await this.cache.delete(this.key(name));
        }
        const index = await this.readIndex();
        const list = (index[url] || []).filter((e) => e.name !== final);
        list.unshift({ name: final, size, storedAt: Date.now() });
        index[url] = list;
        await this.writeIndex(index);
      },
      abort: async () => {
        try {
          ctrl.error(new Error("aborted"));
        } catch {
          // already closed
        }
        await put.catch(() => {});
        await this.cache.delete(this.key(name)).catch(() => {});
      },
    };
  }

  async list() {
    const out = [];
    for (const [url, entries] of Object.entries(await this.readIndex())) {
      for (const e of entries) out.push({ url, size: e.size, storedAt: e.storedAt });
    }
    return out;
  }

  async clear() {
    await caches.delete(CACHE);
    this.cache = await caches.open(CACHE);
  }

  async sweep() {
    for (const req of await this.cache.keys()) {
      if (new URL(req.url).pathname.startsWith(CACHE_PREFIX + "partial-")) await this.cache.delete(req);
    }
  }
}

/** The best store available (`prefer` forces one when it exists). Null when none is. */
export async function openStore(prefer) {
  const tryOpfs = async () => {
    if (!self.navigator?.storage?.getDirectory) return null;
    const root = await navigator.storage.getDirectory();
    return new OpfsStore(await root.getDirectoryHandle(DIR, { create: true }));
  };
  const tryCache = async () => (self.caches ? new CacheApiStore(await caches.open(CACHE)) : null);
  const order = prefer === "cache" ? [tryCache, tryOpfs] : [tryOpfs, tryCache];
  for (const f of order) {
    try {
      const s = await f();
      if (s) {
        await s.sweep().catch(() => {});
        return s;
      }
    } catch {
      // not allowed here (private mode, file: URL): try the next
    }
  }
  return null;
}

/** Remove both stores' contents. */
export async function clearAll() {
  try {
    const root = await navigator.storage.getDirectory();
    await root.removeEntry(DIR, { recursive: true });
  } catch {
    // no OPFS or nothing stored
  }
  if (self.caches) await caches.delete(CACHE).catch(() => {});
}
