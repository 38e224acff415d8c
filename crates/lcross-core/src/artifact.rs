//! Artifacts on disk: safetensors files whose `__metadata__` holds lcross's JSON
//! metadata under the key `lcross`, written atomically (temp file + rename).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{CoreError, Result};

/// Write bytes to `path` atomically with lcross's one writer ([`lcross_fs::write_atomic`]:
/// temp file in the same directory, fsync, rename, directory fsync; links and devices
/// are not replaced unless `LCROSS_REPLACE_SPECIAL=1`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(lcross_fs::write_atomic(path, bytes)?)
}

/// Save named f32 tensors (`name -> (shape, values)`) with JSON metadata.
pub fn save<M: Serialize>(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, metadata: &M) -> Result<()> {
    let bytes: BTreeMap<&String, Vec<u8>> = tensors.iter().map(|(k, (_, v))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: Vec<(&String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, _))| TensorView::new(Dtype::F32, shape.clone(), &bytes[k]).map(|v| (k, v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| CoreError::Encode { what: path.display().to_string(), reason: e.to_string() })?;
    let meta = serde_json::to_string(metadata).map_err(|e| CoreError::Encode { what: format!("the metadata of {}", path.display()), reason: e.to_string() })?;
    let info: HashMap<String, String> = [("lcross".to_string(), meta)].into_iter().collect();
    let out = safetensors::serialize(views, Some(info)).map_err(|e| CoreError::Encode { what: path.display().to_string(), reason: e.to_string() })?;
    write_atomic(path, &out)
}

/// Named f32 tensors of an artifact: `name -> (shape, values)`.
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Load all f32 tensors and the JSON metadata of an lcross artifact.
pub fn load<M: DeserializeOwned>(path: &Path) -> Result<(Tensors, M)> {
    let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| CoreError::parse(path, None, format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| CoreError::parse(path, None, format!("not a valid safetensors file: {e}")))?;
    let meta_json =
        header.metadata().as_ref().and_then(|m| m.get("lcross")).ok_or_else(|| CoreError::parse(path, None, "no `lcross` metadata: not an lcross artifact"))?;
    let metadata: M = serde_json::from_str(meta_json).map_err(|e| CoreError::parse(path, None, format!("metadata field: {e}")))?;
    let mut tensors = BTreeMap::new();
    for name in st.names() {
        let t = st.tensor(name).map_err(|e| CoreError::parse(path, None, format!("tensor `{name}`: {e}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(CoreError::parse(path, None, format!("tensor `{name}` is {:?}, expected F32", t.dtype())));
        }
        let v: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(CoreError::parse(path, None, format!("tensor `{name}` has a non-finite value at index {i}")));
        }
        tensors.insert(name.to_string(), (t.shape().to_vec(), v));
    }
    Ok((tensors, metadata))
}
