//! `model.safetensors.index.json`: which shard file holds each tensor of a sharded checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The file name transformers gives the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

#[derive(Deserialize)]
struct IndexJson {
    weight_map: BTreeMap<String, String>,
}

/// The parsed index: tensor name -> shard file name (relative to the checkpoint directory).
pub(crate) struct ShardIndex {
    pub path: PathBuf,
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let index: IndexJson = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("not a valid shard index (expected {{\"weight_map\": {{tensor: file}}}}): {e}"),
        })?;
        // Shards must sit in the checkpoint directory itself: no paths that reach elsewhere.
        if let Some(bad) = index.weight_map.values().find(|f| f.contains(['/', '\\']) || f.starts_with('.')) {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("shard file name `{bad}` is not a plain file name"),
            });
        }
        Ok(ShardIndex { path: path.to_path_buf(), weight_map: index.weight_map })
    }

    /// The distinct shard files, sorted.
    pub fn shard_files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = self.weight_map.values().map(String::as_str).collect();
        files.sort_unstable();
        files.dedup();
        files
    }
}
