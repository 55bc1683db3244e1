//! A CERES dataset on disk: labelled stacks split into train / validation / test **by night**
//! (no night is in two splits, so the test measures nights the network never saw), the
//! network's inputs as safetensors per split and a manifest with every example's id, night,
//! label, kind and label source, and the class balance of each split.
//!
//! Layout: `manifest.json`, `train.safetensors`, `validation.safetensors`, `test.safetensors`;
//! each safetensors file holds `inputs` (N x channels x cutout_px x cutout_px, f32, as
//! `stack::Stack::input` makes them: one channel per exposure, twice that with `context_px`)
//! and `labels` (N, f32: 1 asteroid, 0 artifact).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::stack::{Label, Stack};

pub const FORMAT: &str = "nearby-ceres-dataset/1";
pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub id: String,
    pub night: String,
    pub label: String,
    pub kind: String,
    pub label_source: String,
    /// The cube file it came from, when it came from one.
    pub file: String,
    /// The satellite line (`Stack::line`): transients on it and the length of their run, px;
    /// absent from manifests written before it existed and for cubes without it: no veto
    /// information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_count: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_length_px: Option<f64>,
}

/// Count per class and per kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Balance {
    pub asteroid: usize,
    pub artifact: usize,
    pub kinds: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub nights: Vec<String>,
    pub balance: Balance,
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub exposures: usize,
    pub cutout_px: usize,
    /// Context block-averaged into a second channel per exposure (0: none; absent from
    /// manifests written before it existed).
    #[serde(default)]
    pub context_px: usize,
    pub seed: u64,
    /// Nights put in the training split whatever the shuffle says (extra training nights, e.g.
    /// simulated with more of a hard artifact); empty in manifests written before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_only_nights: Vec<String>,
    pub splits: BTreeMap<String, Split>,
}

impl Manifest {
    /// Input channels per example.
    pub fn channels(&self) -> usize {
        if self.context_px > 0 {
            2 * self.exposures
        } else {
            self.exposures
        }
    }
}

/// One split in memory.
pub struct Data {
    pub inputs: Vec<f32>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub example_len: usize,
    /// Examples the satellite-line veto calls artifacts whatever the network says (empty:
    /// none); set by the task that knows the veto's params.
    pub veto: Vec<bool>,
}

impl Data {
    /// `scores` with this split's veto applied ([`with_veto`]).
    pub fn vetoed(&self, scores: &[f32]) -> Vec<f32> {
        with_veto(scores, &self.veto)
    }
}

/// Scores with the satellite-line veto applied: a vetoed example gets -1, below every
/// threshold (scores are in [0, 1]); examples past the end of `veto` are not vetoed.
pub fn with_veto(scores: &[f32], veto: &[bool]) -> Vec<f32> {
    scores
        .iter()
        .enumerate()
        .map(|(i, s)| if veto.get(i) == Some(&true) { -1.0 } else { *s })
        .collect()
}

/// Assigns nights to splits: nights shuffled with `seed`, then `test` and `validation` nights
/// taken (at least one each), the rest for training. Needs at least 3 nights.
pub fn split_nights(
    nights: &BTreeSet<String>,
    validation_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<BTreeMap<String, &'static str>, String> {
    let n = nights.len();
    if n < 3 {
        return Err(format!(
            "{n} night(s) ({}): splitting by night needs at least 3 (train, validation, test)",
            nights.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut v: Vec<&String> = nights.iter().collect();
    v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let n_test = ((test_fraction * n as f64).round() as usize).clamp(1, n - 2);
    let n_val = ((validation_fraction * n as f64).round() as usize).clamp(1, n - 1 - n_test);
    Ok(v.into_iter()
        .enumerate()
        .map(|(i, night)| {
            let s = if i < n_test {
                "test"
            } else if i < n_test + n_val {
                "validation"
            } else {
                "train"
            };
            (night.clone(), s)
        })
        .collect())
}

/// The shape of the examples and how nights are split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildConfig {
    pub exposures: usize,
    pub cutout_px: usize,
    /// 0, or a multiple of `cutout_px`: see `stack::Stack::input`.
    pub context_px: usize,
    pub validation_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
}

/// Builds the dataset from labelled stacks (`files[i]` is stack i's cube file, or empty) and
/// writes it to `dir`. The nights in `train_only` go to the training split; the others are
/// split by [`split_nights`]. Unlabelled stacks and stacks smaller than asked are counted and
/// skipped.
pub fn build(
    stacks: &[Stack],
    files: &[String],
    train_only: &BTreeSet<String>,
    cfg: BuildConfig,
    dir: &Path,
) -> Result<(Manifest, usize), String> {
    let BuildConfig {
        exposures,
        cutout_px,
        context_px,
        validation_fraction,
        test_fraction,
        seed,
    } = cfg;
    if context_px > 0 && (context_px <= cutout_px || !context_px.is_multiple_of(cutout_px)) {
        return Err(format!(
            "context_px {context_px}: expected 0 or a multiple of cutout_px ({cutout_px}) above it"
        ));
    }
    let channels = if context_px > 0 {
        2 * exposures
    } else {
        exposures
    };
    let usable: Vec<usize> = (0..stacks.len())
        .filter(|&i| {
            stacks[i].label.is_some()
                && stacks[i].depth >= exposures
                && stacks[i].size >= cutout_px.max(context_px)
        })
        .collect();
    let skipped = stacks.len() - usable.len();
    let (forced, nights): (BTreeSet<String>, BTreeSet<String>) = usable
        .iter()
        .map(|&i| stacks[i].night.clone())
        .partition(|n| train_only.contains(n));
    let mut assign = split_nights(&nights, validation_fraction, test_fraction, seed)?;
    for n in &forced {
        assign.insert(n.clone(), "train");
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    let mut splits = BTreeMap::new();
    for split in SPLITS {
        let members: Vec<usize> = usable
            .iter()
            .copied()
            .filter(|&i| assign.get(&stacks[i].night) == Some(&split))
            .collect();
        let mut inputs = Vec::with_capacity(members.len() * channels * cutout_px * cutout_px);
        let mut labels = Vec::with_capacity(members.len());
        let mut balance = Balance::default();
        let mut examples = Vec::new();
        for &i in &members {
            let s = &stacks[i];
            let Some(x) = s.input(cutout_px, exposures, context_px) else {
                continue;
            };
            inputs.extend(x);
            let l = s.label.unwrap_or(Label::Artifact);
            labels.push(l as u8 as f32);
            match l {
                Label::Asteroid => balance.asteroid += 1,
                Label::Artifact => balance.artifact += 1,
            }
            let kind = if s.kind.is_empty() { l.name() } else { &s.kind };
            *balance.kinds.entry(kind.to_owned()).or_default() += 1;
            examples.push(Example {
                id: s.id.clone(),
                night: s.night.clone(),
                label: l.name().to_owned(),
                kind: kind.to_owned(),
                label_source: s.label_source.clone(),
                file: files.get(i).cloned().unwrap_or_default(),
                line_count: s.line.map(|l| l.members),
                line_length_px: s.line.map(|l| l.length_px),
            });
        }
        let n = labels.len();
        let dev = Device::Cpu;
        let t_in = Tensor::from_vec(inputs, (n, channels, cutout_px, cutout_px), &dev)
            .map_err(|e| e.to_string())?;
        let t_lab = Tensor::from_vec(labels, n, &dev).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{split}.safetensors"));
        candle_core::safetensors::save(
            &HashMap::from([("inputs".to_string(), t_in), ("labels".to_string(), t_lab)]),
            &path,
        )
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
        let nights = assign
            .iter()
            .filter(|(_, s)| **s == split)
            .map(|(n, _)| n.clone())
            .collect();
        splits.insert(
            split.to_owned(),
            Split {
                nights,
                balance,
                examples,
            },
        );
    }
    let m = Manifest {
        format: FORMAT.into(),
        exposures,
        cutout_px,
        context_px,
        seed,
        train_only_nights: forced.into_iter().collect(),
        splits,
    };
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    Ok((m, skipped))
}

pub fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a CERES dataset manifest: {e}", path.display()))?;
    if m.format != FORMAT {
        return Err(format!(
            "{}: format {:?}, expected {FORMAT:?}",
            path.display(),
            m.format
        ));
    }
    Ok(m)
}

/// Loads one split, checking its shapes against the manifest.
pub fn load_split(dir: &Path, m: &Manifest, split: &str) -> Result<Data, String> {
    let path = dir.join(format!("{split}.safetensors"));
    let t = crate::model::read_safetensors(&path)?;
    let get = |k: &str| {
        t.get(k)
            .ok_or_else(|| format!("{}: no tensor `{k}`", path.display()))
    };
    let inputs = get("inputs")?;
    let labels = get("labels")?;
    let dims = inputs.dims().to_vec();
    let want = [m.channels(), m.cutout_px, m.cutout_px];
    if dims.len() != 4 || dims[1..] != want {
        return Err(format!(
            "{}: inputs have shape {dims:?}, the manifest says N x {want:?}",
            path.display()
        ));
    }
    let n = dims[0];
    let labels: Vec<u8> = labels
        .to_vec1::<f32>()
        .map_err(|e| format!("{}: labels: {e}", path.display()))?
        .into_iter()
        .map(|v| (v >= 0.5) as u8)
        .collect();
    if labels.len() != n {
        return Err(format!(
            "{}: {} labels for {n} inputs",
            path.display(),
            labels.len()
        ));
    }
    let inputs = inputs
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| format!("{}: inputs: {e}", path.display()))?;
    Ok(Data {
        inputs,
        labels,
        n,
        example_len: want.iter().product(),
        veto: Vec::new(),
    })
}
