//! wasm-chord in the browser: wasm-bindgen bindings over [`chord_engine::Engine`].
//!
//! * [`session`]: plain Rust — a [`session::Loader`] that assembles a model from streamed chunks
//!   (held once), and a [`session::Session`] that advances a generation one engine step at a
//!   time, so the Web Worker that owns it can read a stop message between steps.
//! * [`bindings`]: the JS-facing classes `ModelLoader` and `ChordEngine`.
//! * `www/`: the static page and its worker; `build.sh` makes `dist/`.

pub mod bindings;
pub mod session;
#[doc(hidden)]
pub mod testing;
