//! Write the tests' tiny llama ([`wasm_shell::testing::tiny_model`]) to a GGUF file, so the
//! end-to-end test can serve it to the page and run it through the native CLI too:
//! `cargo run --release -p wasm-shell --example tiny_model -- OUT.gguf`.

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: tiny_model OUT.gguf");
        return std::process::ExitCode::FAILURE;
    };
    let bytes = wasm_shell::testing::tiny_model();
    if bytes.is_empty() {
        eprintln!("tiny_model: building the model failed");
        return std::process::ExitCode::FAILURE;
    }
    match std::fs::write(&path, &bytes) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tiny_model: cannot write {}: {e}", path.to_string_lossy());
            std::process::ExitCode::FAILURE
        }
    }
}
