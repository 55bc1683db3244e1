//! The CERES network: a compact residual CNN over a detection's cutout stack (one input channel
//! per exposure), trained from scratch. Stem 3x3 conv to `width` channels, then `stages`
//! stages, each (after the first) halving the size with a stride-2 conv and doubling the
//! channels, each with `blocks_per_stage` residual blocks (conv-ReLU-conv plus the identity,
//! the second conv initialised to zero so every block starts as the identity: no batch
//! normalisation is needed at these depths); global average pooling and one logit.
//!
//! Weights are safetensors; `model.json` beside them holds the [`ModelConfig`] and the decision
//! threshold, so a model and the cutouts it is given can be checked against each other.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, Init, Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// The shape of the network and of its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Input planes: exposures per stack.
    pub exposures: usize,
    /// Input cutout side, pixels.
    pub cutout_px: usize,
    /// Channels of the first stage.
    pub width: usize,
    pub stages: usize,
    pub blocks_per_stage: usize,
    /// Side of the context each plane also gives, block-averaged down to `cutout_px` (one more
    /// channel per exposure: where a trail goes, where a fast asteroid is in the other
    /// exposures); 0 for none. Absent from model cards written before it existed: 0.
    #[serde(default)]
    pub context_px: usize,
}

impl ModelConfig {
    /// Input channels: one per exposure, twice that with context.
    pub fn channels(&self) -> usize {
        if self.context_px > 0 {
            2 * self.exposures
        } else {
            self.exposures
        }
    }

    /// The side a stack must have at least.
    pub fn stack_px(&self) -> usize {
        self.cutout_px.max(self.context_px)
    }

    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.context_px != 0
            && (self.context_px <= self.cutout_px
                || !self.context_px.is_multiple_of(self.cutout_px.max(1))
                || self.context_px > 512)
        {
            out.push((
                "context_px",
                format!(
                    "{}: expected 0 (none) or a multiple of cutout_px ({}) above it, at most 512",
                    self.context_px, self.cutout_px
                ),
            ));
        }
        if !(1..=16).contains(&self.exposures) {
            out.push(("exposures", format!("{}: expected 1 to 16", self.exposures)));
        }
        if !(1..=6).contains(&self.stages) {
            out.push(("stages", format!("{}: expected 1 to 6", self.stages)));
        }
        if self.cutout_px < 4
            || self.cutout_px > 256
            || self.cutout_px >> (self.stages.max(1) - 1) < 2
        {
            out.push((
                "cutout_px",
                format!(
                    "{}: expected 4 to 256 pixels, at least 2 after {} halvings",
                    self.cutout_px,
                    self.stages.saturating_sub(1)
                ),
            ));
        }
        if !(1..=256).contains(&self.width) {
            out.push((
                "width",
                format!("{}: expected 1 to 256 channels", self.width),
            ));
        }
        if self.blocks_per_stage > 16 {
            out.push((
                "blocks_per_stage",
                format!("{}: expected 0 to 16", self.blocks_per_stage),
            ));
        }
        out
    }
}

/// What is saved beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub config: ModelConfig,
    /// Scores at or above this are asteroids (chosen on the validation nights for the recall
    /// target).
    pub threshold: f64,
    pub recall_target: f64,
    /// How inputs are normalised (for people; the code is `stack::normalise_plane`).
    pub normalisation: String,
    pub trained_epochs: usize,
    /// The threshold of the best validation recall at precision >= `precision_floor`: where
    /// the held-out nights are measured honestly for that floor (the best threshold found on
    /// the held-out nights themselves is an upper bound, tuned on the test). Absent from cards
    /// written before it existed.
    #[serde(default)]
    pub precision_floor: Option<f64>,
    #[serde(default)]
    pub threshold_at_floor: Option<f64>,
    /// The satellite-line veto (`satellite_line_min`, `satellite_line_px`) the validation
    /// metrics and both thresholds were measured with; absent when trained without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satellite_line: Option<(usize, f64)>,
}

pub const CARD_FORMAT: &str = "nearby-ceres-model/1";
pub const NORMALISATION: &str = "per plane: (x - median) / (1.4826 MAD), then asinh(z / 3); \
                                 central cutout_px x cutout_px; plane 0 the detection's exposure";
/// The same with context channels (`stack::Stack::input`).
pub const NORMALISATION_CONTEXT: &str =
    "per plane: (x - median) / (1.4826 MAD) over the central context_px, then asinh(z / 3); \
     channels 0..exposures the central cutout_px x cutout_px, then exposures..2 exposures the \
     central context_px block-averaged to cutout_px; plane 0 the detection's exposure";

/// Stacks the network scores at a time: small enough that a feature map of the first stage
/// (32 stacks x 8 channels x 32 x 32 px, 1 MiB) stays in a core's L2 cache.
const SCORE_BATCH: usize = 32;

struct Block {
    conv1: Conv2d,
    conv2: Conv2d,
}

pub struct Ceres {
    pub config: ModelConfig,
    pub varmap: VarMap,
    stem: Conv2d,
    /// Per stage: the stride-2 entry conv (none for the first) and its blocks.
    stages: Vec<(Option<Conv2d>, Vec<Block>)>,
    head: Linear,
}

fn conv(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    stride: usize,
    zero: bool,
) -> candle_core::Result<Conv2d> {
    let init = if zero {
        Init::Const(0.0)
    } else {
        candle_nn::init::DEFAULT_KAIMING_NORMAL
    };
    let w = vb.get_with_hints((cout, cin, 3, 3), "weight", init)?;
    let b = vb.get_with_hints(cout, "bias", Init::Const(0.0))?;
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    Ok(Conv2d::new(w, Some(b), cfg))
}

impl Ceres {
    /// A freshly initialised network: He-normal weights from a ChaCha stream seeded by `seed`
    /// (candle's CPU generator cannot be seeded), zero biases, zero second convs of blocks.
    pub fn new(config: &ModelConfig, dev: &Device, seed: u64) -> candle_core::Result<Ceres> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
        let stem = conv(vb.pp("stem"), config.channels(), config.width, 1, false)?;
        let mut stages = Vec::new();
        let mut c = config.width;
        for s in 0..config.stages {
            let vs = vb.pp(format!("stage{s}"));
            let entry = if s == 0 {
                None
            } else {
                let e = conv(vs.pp("down"), c, 2 * c, 2, false)?;
                c *= 2;
                Some(e)
            };
            let blocks = (0..config.blocks_per_stage)
                .map(|b| {
                    let vk = vs.pp(format!("block{b}"));
                    Ok(Block {
                        conv1: conv(vk.pp("conv1"), c, c, 1, false)?,
                        conv2: conv(vk.pp("conv2"), c, c, 1, true)?,
                    })
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            stages.push((entry, blocks));
        }
        let hv = vb.pp("head");
        let w = hv.get_with_hints((1, c), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let b = hv.get_with_hints(1, "bias", Init::Const(0.0))?;
        let net = Ceres {
            config: config.clone(),
            varmap,
            stem,
            stages,
            head: Linear::new(w, Some(b)),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (name, var) in net.vars() {
            let dims = var.as_tensor().dims().to_vec();
            if name.ends_with("bias") || name.contains("conv2") {
                continue;
            }
            let fan_in: usize = dims[1..].iter().product();
            let sd = (2.0 / fan_in.max(1) as f64).sqrt();
            let v: Vec<f32> = (0..var.elem_count())
                .map(|_| (rng.sample::<f64, _>(StandardNormal) * sd) as f32)
                .collect();
            var.set(&Tensor::from_vec(v, dims, dev)?)?;
        }
        Ok(net)
    }

    /// Logits, one per stack, for input of shape (N, channels, cutout_px, cutout_px). On the
    /// CPU the convolutions run as `conv::conv3x3` (im2col and gemm, several times faster than
    /// candle's CPU `conv2d` here, see that module), elsewhere as candle's `conv2d`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, x.device().is_cpu())
    }

    /// [`Ceres::forward`] with the convolutions as `conv::conv3x3` and the blocks' joins as
    /// `conv::add_relu` (`im2col`, CPU only) or as candle's `conv2d`, add and relu: the same
    /// network, equal to float rounding.
    pub fn forward_with(&self, x: &Tensor, im2col: bool) -> candle_core::Result<Tensor> {
        let conv = |c: &Conv2d, h: &Tensor, relu: bool| -> candle_core::Result<Tensor> {
            match (im2col, c.bias()) {
                (true, Some(b)) => crate::conv::conv3x3(h, c.weight(), b, c.config().stride, relu),
                _ => {
                    let y = c.forward(h)?;
                    if relu {
                        y.relu()
                    } else {
                        Ok(y)
                    }
                }
            }
        };
        let mut h = conv(&self.stem, x, true)?;
        for (entry, blocks) in &self.stages {
            if let Some(e) = entry {
                h = conv(e, &h, true)?;
            }
            for b in blocks {
                let r = conv(&b.conv2, &conv(&b.conv1, &h, true)?, false)?;
                h = if im2col {
                    crate::conv::add_relu(&h, &r)?
                } else {
                    (h + r)?.relu()?
                };
            }
        }
        let pooled = h.mean((2, 3))?;
        self.head.forward(&pooled)?.squeeze(1)
    }

    /// Scores (sigmoid of the logits) of a batch of inputs, each `channels x cutout_px^2`.
    /// The network runs on `SCORE_BATCH` stacks at a time whatever `n`.
    pub fn scores(&self, inputs: &[f32], n: usize, dev: &Device) -> candle_core::Result<Vec<f32>> {
        let c = &self.config;
        let len = c.channels() * c.cutout_px * c.cutout_px;
        if inputs.len() != n * len {
            candle_core::bail!("scores: {} values for {n} stacks of {len}", inputs.len());
        }
        let mut out = Vec::with_capacity(n);
        for chunk in inputs.chunks(SCORE_BATCH * len) {
            let k = chunk.len() / len;
            let x = Tensor::from_slice(chunk, (k, c.channels(), c.cutout_px, c.cutout_px), dev)?;
            out.extend(candle_nn::ops::sigmoid(&self.forward(&x)?)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The device the network's weights are on.
    pub fn device(&self) -> Device {
        self.head.weight().device().clone()
    }

    /// Named variables, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Sets every variable from `tensors` (names and shapes must match). With `partial`, only
    /// those present with the same shape are set (pretrained weights for a different head, say)
    /// and the names not set are returned; at least one must match.
    pub fn set_from(
        &self,
        tensors: &HashMap<String, Tensor>,
        origin: &Path,
        partial: bool,
    ) -> Result<Vec<String>, String> {
        let mut skipped = Vec::new();
        for (name, var) in self.vars() {
            let want = var.as_tensor().dims().to_vec();
            match tensors.get(&name) {
                Some(t) if t.dims() == want.as_slice() => {
                    // Files are read onto the CPU; the network may be on a GPU.
                    let t = t
                        .to_dtype(DType::F32)
                        .and_then(|t| t.to_device(var.device()))
                        .map_err(|e| format!("{}: tensor {name}: {e}", origin.display()))?;
                    var.set(&t)
                        .map_err(|e| format!("{}: tensor {name}: {e}", origin.display()))?;
                }
                Some(t) if !partial => {
                    return Err(format!(
                        "{}: tensor {name} has shape {:?}, but this model ({}) needs {:?}: the \
                         weights were trained for a different input or network shape",
                        origin.display(),
                        t.dims(),
                        describe(&self.config),
                        want
                    ))
                }
                None if !partial => {
                    return Err(format!(
                        "{}: no tensor {name}: these weights are not of a CERES network {}",
                        origin.display(),
                        describe(&self.config)
                    ))
                }
                _ => skipped.push(name),
            }
        }
        if partial && skipped.len() == self.vars().len() {
            return Err(format!(
                "{}: none of its {} tensors matches this network ({}) by name and shape",
                origin.display(),
                tensors.len(),
                describe(&self.config)
            ));
        }
        Ok(skipped)
    }

    /// Loads weights saved by [`Ceres::save`] (or compatible ones), with errors that say which
    /// file is bad and how.
    pub fn load_weights(&self, path: &Path, partial: bool) -> Result<Vec<String>, String> {
        let tensors = read_safetensors(path)?;
        self.set_from(&tensors, path, partial)
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let map: HashMap<String, Tensor> = self
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&map, path)
            .map_err(|e| format!("{}: cannot write: {e}", path.display()))
    }
}

/// Reads a safetensors file; a truncated or corrupt one is an error naming it.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, String> {
    if !path.exists() {
        return Err(format!("{}: no such file", path.display()));
    }
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        format!(
            "{}: not a readable safetensors file (truncated or corrupt?): {e}",
            path.display()
        )
    })
}

pub fn describe(c: &ModelConfig) -> String {
    let context = if c.context_px > 0 {
        format!(" with {0}x{0} px of context", c.context_px)
    } else {
        String::new()
    };
    format!(
        "{} exposures of {}x{} px{context}, width {}, {} stages of {} blocks",
        c.exposures, c.cutout_px, c.cutout_px, c.width, c.stages, c.blocks_per_stage
    )
}

/// A saved model: the network with its weights and card, from `dir/model.safetensors` and
/// `dir/model.json` (`path` is the directory or its `model.safetensors`).
pub fn load_model(path: &Path, dev: &Device) -> Result<(Ceres, ModelCard), String> {
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let card_path = dir.join("model.json");
    let text = std::fs::read_to_string(&card_path)
        .map_err(|e| format!("{}: cannot read: {e}", card_path.display()))?;
    let card: ModelCard = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a CERES model card: {e}", card_path.display()))?;
    if card.format != CARD_FORMAT {
        return Err(format!(
            "{}: format {:?}, expected {CARD_FORMAT:?}",
            card_path.display(),
            card.format
        ));
    }
    let problems = card.config.problems();
    if let Some((k, m)) = problems.first() {
        return Err(format!("{}: config.{k}: {m}", card_path.display()));
    }
    let net = Ceres::new(&card.config, dev, 0).map_err(|e| e.to_string())?;
    net.load_weights(&dir.join("model.safetensors"), false)?;
    Ok((net, card))
}
