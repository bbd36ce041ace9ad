//! The default model, embedded in the binary so a fresh machine runs with no download: jamba-tiny-quotes, a
//! 7.9M-parameter Jamba (8 layers: one attention, seven Mamba; MoE on odd layers with 4 experts, top-2)
//! trained on the quotations of Debian's fortunes packages. Its files live in models/jamba-tiny-quotes/.

use crate::config::JambaConfig;
use crate::tokenizer::{SideFiles, Tokenizer};
use crate::weights::Checkpoint;
use crate::Result;

pub const NAME: &str = "jamba-tiny-quotes";

const CONFIG: &str = include_str!("../models/jamba-tiny-quotes/config.json");
const GENERATION_CONFIG: &str = include_str!("../models/jamba-tiny-quotes/generation_config.json");
const TOKENIZER_CONFIG: &str = include_str!("../models/jamba-tiny-quotes/tokenizer_config.json");
const SPECIAL_TOKENS_MAP: &str = include_str!("../models/jamba-tiny-quotes/special_tokens_map.json");
static TOKENIZER: &[u8] = include_bytes!("../models/jamba-tiny-quotes/tokenizer.json");
#[cfg(feature = "embedded-model")]
static WEIGHTS: &[u8] = include_bytes!("../models/jamba-tiny-quotes/model.safetensors");

pub fn config() -> Result<JambaConfig> {
    JambaConfig::from_json_str(CONFIG)
}

/// The weights: embedded, or (a build without the `embedded-model` feature, 16 MB smaller, e.g. to carry to a
/// GPU machine) memory-mapped from the source tree the binary was built from.
pub fn checkpoint() -> Result<Checkpoint> {
    #[cfg(feature = "embedded-model")]
    return Checkpoint::from_static(NAME, WEIGHTS);
    #[cfg(not(feature = "embedded-model"))]
    return Checkpoint::open(concat!(env!("CARGO_MANIFEST_DIR"), "/models/jamba-tiny-quotes"));
}

pub fn tokenizer() -> Result<Tokenizer> {
    let side = SideFiles {
        generation_config: Some(GENERATION_CONFIG),
        config: Some(CONFIG),
        tokenizer_config: Some(TOKENIZER_CONFIG),
        special_tokens_map: Some(SPECIAL_TOKENS_MAP),
    };
    Tokenizer::from_bytes(TOKENIZER, side)
}
