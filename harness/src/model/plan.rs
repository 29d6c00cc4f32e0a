//! A decoder as the training engine ([`crate::engine`]) runs it: embeddings, pre-norm blocks
//! of attention and MLP, a final norm and a head, each part named by its Hugging Face
//! weights. Each family's file writes its own plan (`Family::plan`); a family or config the
//! engine does not run says why, and training falls back to candle's autograd.

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm (llama).
    Rms,
    /// LayerNorm with a bias (gpt2, opt).
    Layer,
}

/// How a projection's weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// `[out, in]`, `y = x Wᵀ + b` (PyTorch `nn.Linear`).
    OutIn,
    /// `[in, out]`, `y = x W + b` (GPT-2's `Conv1D`).
    InOut,
}

/// A projection.
#[derive(Clone, Debug)]
pub struct Linear {
    /// The weight matrix.
    pub weight: String,
    /// The bias, if any.
    pub bias: Option<String>,
    /// The matrix layout.
    pub stored: Stored,
}

impl Linear {
    /// `{prefix}.weight` (and `{prefix}.bias` when `bias`).
    pub fn new(prefix: &str, bias: bool, stored: Stored) -> Self {
        Linear { weight: format!("{prefix}.weight"), bias: bias.then(|| format!("{prefix}.bias")), stored }
    }
}

/// A normalisation's gain and (LayerNorm) bias.
#[derive(Clone, Debug)]
pub struct Norm {
    /// The gain.
    pub weight: String,
    /// The bias (LayerNorm).
    pub bias: Option<String>,
}

impl Norm {
    /// `{prefix}.weight` (and `{prefix}.bias` for a LayerNorm).
    pub fn new(prefix: &str, kind: NormKind) -> Self {
        Norm { weight: format!("{prefix}.weight"), bias: (kind == NormKind::Layer).then(|| format!("{prefix}.bias")) }
    }
}

/// The query, key and value projections.
#[derive(Clone, Debug)]
pub enum Qkv {
    /// Three matrices.
    Separate {
        /// Queries.
        q: Linear,
        /// Keys.
        k: Linear,
        /// Values.
        v: Linear,
    },
    /// One matrix whose outputs are q | k | v (GPT-2's `c_attn`).
    Fused(Linear),
}

/// The MLP.
#[derive(Clone, Debug)]
pub enum Mlp {
    /// `down(act(gate(x)) ⊙ up(x))` (llama).
    Gated {
        /// The gate.
        gate: Linear,
        /// The up projection.
        up: Linear,
        /// The down projection.
        down: Linear,
    },
    /// `down(act(up(x)))`.
    Plain {
        /// The up projection.
        up: Linear,
        /// The down projection.
        down: Linear,
    },
}

/// One block: `h += out(attention(qkv(norm₁(h))))`, then `h += mlp(norm₂(h))`.
#[derive(Clone, Debug)]
pub struct Block {
    /// The norm before attention.
    pub attn_norm: Norm,
    /// The q, k, v projections.
    pub qkv: Qkv,
    /// The output projection.
    pub out: Linear,
    /// The norm before the MLP.
    pub mlp_norm: Norm,
    /// The MLP.
    pub mlp: Mlp,
}

/// The whole decoder.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The norm used everywhere.
    pub norm: NormKind,
    /// The token embedding `[vocab, d]`.
    pub tokens: String,
    /// A learned position table and the row that holds position 0.
    pub positions: Option<(String, usize)>,
    /// Rotary embeddings on queries and keys (base `rope_theta`).
    pub rope: bool,
    /// The blocks.
    pub blocks: Vec<Block>,
    /// The norm after the last block.
    pub final_norm: Norm,
    /// The head `[vocab, d]` (the token embedding when tied).
    pub head: String,
}
