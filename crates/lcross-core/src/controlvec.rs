//! llama.cpp control vectors: GGUF files with one f32 tensor `direction.<layer>` per
//! layer, loadable by `llama-cli --control-vector`.
//!
//! llama.cpp adds `direction.<il>` to the output of block `il` (0-based), which is
//! lcross's `resid_post(il)`; it never steers block 0, so a vector at layer 0 cannot be
//! exported.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use lcross_model::candle_core::quantized::{gguf_file, QTensor};
use lcross_model::candle_core::{Device, Tensor};

use crate::error::{CoreError, Result};

/// Write `layers` as a control-vector GGUF (`model_hint` = the architecture name).
pub fn export(path: &Path, layers: &BTreeMap<usize, Vec<f32>>, model_hint: &str) -> Result<()> {
    if layers.contains_key(&0) {
        return Err(CoreError::BadValue {
            what: "layer of a llama.cpp control vector".into(),
            value: "0".into(),
            expected: "layers from 1 (llama.cpp cannot steer layer 0; drop it before exporting)".into(),
        });
    }
    let max_layer = layers.keys().max().copied().ok_or_else(|| CoreError::Empty { what: "layers in the control vector".into() })?;
    let mut tensors = Vec::new();
    for (l, v) in layers {
        let t = Tensor::from_slice(v, v.len(), &Device::Cpu).map_err(lcross_model::ModelError::from)?;
        tensors.push((
            format!("direction.{l}"),
            QTensor::quantize(&t, lcross_model::candle_core::quantized::GgmlDType::F32).map_err(lcross_model::ModelError::from)?,
        ));
    }
    let metadata = [
        ("general.architecture", gguf_file::Value::String("controlvector".into())),
        ("controlvector.model_hint", gguf_file::Value::String(model_hint.into())),
        ("controlvector.layer_count", gguf_file::Value::I32(max_layer as i32)),
    ];
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &md, &ts).map_err(|e| CoreError::Encode { what: path.display().to_string(), reason: e.to_string() })?;
    crate::artifact::write_atomic(path, buf.get_ref())
}

/// Read a control-vector GGUF: `layer -> direction`, and the model hint if present.
pub fn import(path: &Path) -> Result<(crate::steering::LayerVectors, Option<String>)> {
    let file = lcross_model::gguf::GgufFile::open(path)?;
    let md: &HashMap<String, gguf_file::Value> = file.metadata();
    let hint = md.get("controlvector.model_hint").and_then(|v| v.to_string().ok()).cloned();
    let names: Vec<String> = file.content().tensor_infos.keys().cloned().collect();
    let mut file = file;
    let mut out = BTreeMap::new();
    for name in names {
        let layer: usize = name
            .strip_prefix("direction.")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CoreError::parse(path, None, format!("tensor `{name}` is not named direction.<layer>")))?;
        let dims = file.content().tensor_infos[&name].shape.dims().to_vec();
        if dims.len() != 1 {
            return Err(CoreError::parse(path, None, format!("tensor `{name}` has shape {dims:?}, expected one dimension")));
        }
        let q = file.qtensor(&name, &dims, &Device::Cpu)?;
        let v: Vec<f32> = q.dequantize(&Device::Cpu).and_then(|t| t.to_vec1()).map_err(lcross_model::ModelError::from)?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(CoreError::parse(path, None, format!("tensor `{name}` has non-finite values")));
        }
        out.insert(layer, v);
    }
    if out.is_empty() {
        return Err(CoreError::parse(path, None, "no direction.<layer> tensors"));
    }
    Ok((out, hint))
}

/// Write `sv` as a llama.cpp control vector, with the architecture of its model as the
/// file's hint where the model resolves (else `llama`).
pub fn export_vector(path: &Path, sv: &crate::steering::SteeringVector) -> Result<()> {
    let hint = lcross_model::resolve(&sv.metadata.model_id)
        .ok()
        .and_then(|loc| lcross_model::gguf::GgufFile::open(loc.path()).ok())
        .and_then(|mut f| f.config().ok())
        .map_or("llama".to_string(), |c| c.architecture.as_str().to_string());
    export(path, &sv.layers, &hint)
}

/// Read a llama.cpp control vector as an lcross vector of `model` (every direction must
/// have the model's hidden size); the concept is the file's stem and the dataset hash
/// the file's sha256.
pub fn import_vector(path: &Path, model: &lcross_model::Model) -> Result<crate::steering::SteeringVector> {
    use sha2::Digest;
    let (layers, _hint) = import(path)?;
    let h = model.config().hidden_size;
    if let Some((l, v)) = layers.iter().find(|(_, v)| v.len() != h) {
        return Err(CoreError::SizeMismatch {
            what: format!("{}: direction.{l} ({} has hidden size {h})", path.display(), model.id()),
            expected: h,
            got: v.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| CoreError::io(path, e))?;
    let concept = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut metadata = crate::steering::VectorMetadata::made_by_hand(
        model.id(),
        &model.file_sha256()?,
        h,
        layers.keys().copied().collect(),
        &concept,
        &format!("llama.cpp control vector {}", path.display()),
    );
    metadata.dataset_sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    metadata.provenance = Some(serde_json::json!({"imported_from": path.display().to_string()}));
    let sv = crate::steering::SteeringVector { metadata, layers };
    sv.check_model(model, false)?;
    Ok(sv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_import_round_trip() {
        let dir = std::env::temp_dir().join(format!("lcross-cvec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("v.gguf");
        let layers: BTreeMap<usize, Vec<f32>> = [(3, vec![0.5, -1.0, 2.0, 0.0]), (7, vec![1.0, 2.0, 3.0, 4.0])].into_iter().collect();
        export(&p, &layers, "llama").unwrap();
        let (back, hint) = import(&p).unwrap();
        assert_eq!(back, layers);
        assert_eq!(hint.as_deref(), Some("llama"));
        let zero: BTreeMap<usize, Vec<f32>> = [(0, vec![1.0])].into_iter().collect();
        assert!(export(&dir.join("z.gguf"), &zero, "llama").is_err());
    }
}
