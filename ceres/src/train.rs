//! Training: AdamW on a class-weighted binary cross-entropy, with augmentation (flips, 90
//! degree rotations, Gaussian noise), a learning rate that warms up linearly then follows a
//! cosine, and early stopping on the validation nights' asteroid recall at a precision floor.
//!
//! Every epoch is a checkpoint (weights and AdamW moments as safetensors, the history as JSON,
//! written whole then renamed) in a directory named by a hash of the dataset manifest and the
//! config, so a killed training resumes after its last finished epoch and reaches the weights
//! an uninterrupted one would have (the shuffling of each epoch is seeded by the epoch).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::dataset::Data;
use crate::metrics::{self, Report};
use crate::model::Ceres;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_epochs: usize,
    /// Early stopping watches the best asteroid recall with at least this precision.
    pub precision_floor: f64,
    /// The decision threshold is set on the validation nights to reach this recall.
    pub recall_target: f64,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    pub seed: u64,
    pub augment: bool,
    /// Gaussian noise added by augmentation, in normalised units.
    pub noise_sigma: f64,
    /// Weight of asteroid examples in the loss; `None`: artifacts / asteroids in the training
    /// split, so both classes weigh the same in total.
    pub asteroid_weight: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub learning_rate: f64,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub seconds: f64,
    /// On the validation nights at threshold 0.5.
    pub validation: Report,
}

/// The history a checkpoint carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub key: String,
    pub epochs_done: usize,
    pub step: u64,
    pub history: Vec<EpochMetrics>,
    pub best_epoch: usize,
    pub best_recall: f64,
    pub best_loss: f64,
}

/// The outcome: the best epoch's network is left in the model passed to [`train`].
pub struct Trained {
    pub state: State,
    pub resumed_from: usize,
}

/// A stable 64-bit FNV-1a hash (checkpoint directory names must not change between builds).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One augmented copy of example `src` (planes x s x s): rotated `rot` quarter turns,
/// mirrored in x when `flip`, plus noise.
pub fn augment(
    src: &[f32],
    s: usize,
    rot: u8,
    flip: bool,
    noise: f64,
    rng: &mut ChaCha8Rng,
    out: &mut Vec<f32>,
) {
    let planes = src.len() / (s * s);
    for z in 0..planes {
        let p = &src[z * s * s..(z + 1) * s * s];
        for y in 0..s {
            for x in 0..s {
                let (mut u, v) = match rot % 4 {
                    0 => (x, y),
                    1 => (y, s - 1 - x),
                    2 => (s - 1 - x, s - 1 - y),
                    _ => (s - 1 - y, x),
                };
                if flip {
                    u = s - 1 - u;
                }
                let mut val = p[v * s + u];
                if noise > 0.0 {
                    let g: f64 = rng.sample(StandardNormal);
                    val += (g * noise) as f32;
                }
                out.push(val);
            }
        }
    }
}

/// Weighted binary cross-entropy with logits: mean of w (softplus(z) - y z).
fn loss(logits: &Tensor, y: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (logits.relu()? + logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let per = (softplus - (y * logits)?)?;
    (per * w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}

/// AdamW's moments, one pair per variable of [`Ceres::vars`].
pub struct Adam {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;

impl Adam {
    pub fn new(vars: &[(String, Var)]) -> candle_core::Result<Adam> {
        let z = |v: &Var| v.as_tensor().zeros_like();
        Ok(Adam {
            m: vars.iter().map(|(_, v)| z(v)).collect::<Result<_, _>>()?,
            v: vars.iter().map(|(_, v)| z(v)).collect::<Result<_, _>>()?,
        })
    }

    fn step(
        &mut self,
        vars: &[(String, Var)],
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        wd: f64,
        t: u64,
    ) -> candle_core::Result<()> {
        let c1 = 1.0 - BETA1.powi(t as i32);
        let c2 = 1.0 - BETA2.powi(t as i32);
        for (k, (_, var)) in vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: the moments must not hold on to this step's graph (they would chain
            // every step's graph to the next and memory would grow without bound).
            let g = g.detach();
            self.m[k] = (self.m[k].affine(BETA1, 0.0)? + g.affine(1.0 - BETA1, 0.0)?)?.detach();
            self.v[k] =
                (self.v[k].affine(BETA2, 0.0)? + g.sqr()?.affine(1.0 - BETA2, 0.0)?)?.detach();
            let mhat = self.m[k].affine(1.0 / c1, 0.0)?;
            let vhat = self.v[k].affine(1.0 / c2, 0.0)?;
            let upd = (mhat / vhat.sqrt()?.affine(1.0, 1e-8)?)?;
            let theta = var.as_tensor();
            let new = ((theta.affine(1.0 - lr * wd, 0.0)?) - upd.affine(lr, 0.0)?)?.detach();
            var.set(&new)?;
        }
        Ok(())
    }
}

/// One optimisation step on a batch `x` (N x planes x s x s) with labels `y` and loss
/// weights `w`: forward, weighted BCE, backward, AdamW (step number `t`, from 1). Returns the
/// batch's loss.
#[allow(clippy::too_many_arguments)]
pub fn step(
    net: &Ceres,
    vars: &[(String, Var)],
    adam: &mut Adam,
    x: &Tensor,
    y: &Tensor,
    w: &Tensor,
    lr: f64,
    wd: f64,
    t: u64,
) -> candle_core::Result<f32> {
    let logits = net.forward(x)?;
    let l = loss(&logits, y, w)?;
    let grads = l.backward()?;
    adam.step(vars, &grads, lr, wd, t)?;
    l.to_scalar::<f32>()
}

/// Learning rate at `epoch` + `frac` of it: linear warm-up, then cosine down to 5%.
pub fn learning_rate(cfg: &TrainConfig, epoch: usize, frac: f64) -> f64 {
    let e = epoch as f64 + frac;
    let w = cfg.warmup_epochs as f64;
    if e < w {
        return cfg.learning_rate * (e + 1e-3) / w;
    }
    let span = (cfg.epochs as f64 - w).max(1.0);
    let t = ((e - w) / span).clamp(0.0, 1.0);
    cfg.learning_rate * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Scores of every example of `data` (no augmentation), in batches.
pub fn score_all(net: &Ceres, data: &Data, dev: &Device) -> candle_core::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(data.n);
    let bs = 256;
    for start in (0..data.n).step_by(bs) {
        let n = bs.min(data.n - start);
        let x = &data.inputs[start * data.example_len..(start + n) * data.example_len];
        out.extend(net.scores(x, n, dev)?);
    }
    Ok(out)
}

fn bce(scores: &[f32], labels: &[u8], w_pos: f64) -> f64 {
    let (mut s, mut ws) = (0.0, 0.0);
    for (p, l) in scores.iter().zip(labels) {
        let p = (*p as f64).clamp(1e-7, 1.0 - 1e-7);
        let (w, v) = if *l != 0 {
            (w_pos, -p.ln())
        } else {
            (1.0, -(1.0 - p).ln())
        };
        s += w * v;
        ws += w;
    }
    if ws > 0.0 {
        s / ws
    } else {
        0.0
    }
}

fn checkpoint_tensors(vars: &[(String, Var)], adam: &Adam) -> HashMap<String, Tensor> {
    let mut m = HashMap::new();
    for (k, (name, var)) in vars.iter().enumerate() {
        m.insert(format!("w.{name}"), var.as_tensor().clone());
        m.insert(format!("m.{name}"), adam.m[k].clone());
        m.insert(format!("v.{name}"), adam.v[k].clone());
    }
    m
}

fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: cannot rename: {e}", path.display()))
}

fn epoch_file(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:04}.safetensors"))
}

/// Whether `patience` epochs have passed without a better validation recall.
fn stopped_early(state: &State, cfg: &TrainConfig) -> bool {
    state.epochs_done > 0 && state.epochs_done - state.best_epoch >= cfg.patience
}

/// Trains `net` on `train` watching `validation`; checkpoints in `ckpt` (created); `key`
/// identifies the dataset and config (a checkpoint with another key is ignored). On return the
/// network holds the best epoch's weights.
#[allow(clippy::too_many_arguments)]
pub fn train(
    net: &Ceres,
    cfg: &TrainConfig,
    train: &Data,
    validation: &Data,
    ckpt: &Path,
    key: &str,
    cancel: &AtomicBool,
    log: &mut dyn Write,
) -> Result<Trained, String> {
    let dev = net.device();
    let e = |e: candle_core::Error| e.to_string();
    std::fs::create_dir_all(ckpt)
        .map_err(|err| format!("{}: cannot create: {err}", ckpt.display()))?;
    let vars = net.vars();
    let mut adam = Adam::new(&vars).map_err(e)?;
    let state_path = ckpt.join("state.json");
    let mut state = State {
        key: key.to_owned(),
        epochs_done: 0,
        step: 0,
        history: Vec::new(),
        best_epoch: 0,
        best_recall: -1.0,
        best_loss: f64::INFINITY,
    };
    // Resume from the last finished epoch of the same training.
    if let Ok(text) = std::fs::read_to_string(&state_path) {
        match serde_json::from_str::<State>(&text) {
            Ok(s) if s.key == key && s.epochs_done > 0 => {
                let t = crate::model::read_safetensors(&epoch_file(ckpt, s.epochs_done))?;
                for (k, (name, var)) in vars.iter().enumerate() {
                    // Checkpoints are read onto the CPU; the network may be on a GPU.
                    let get = |p: &str| {
                        t.get(&format!("{p}.{name}"))
                            .ok_or_else(|| {
                                format!("checkpoint of epoch {} lacks {p}.{name}", s.epochs_done)
                            })
                            .and_then(|t| t.to_device(&dev).map_err(e))
                    };
                    var.set(&get("w")?).map_err(e)?;
                    adam.m[k] = get("m")?;
                    adam.v[k] = get("v")?;
                }
                writeln!(
                    log,
                    "ceres: resuming after epoch {} from {}",
                    s.epochs_done,
                    ckpt.display()
                )
                .map_err(|err| err.to_string())?;
                state = s;
            }
            _ => {}
        }
    }
    let resumed_from = state.epochs_done;
    let pos = train.labels.iter().filter(|l| **l != 0).count();
    let neg = train.n - pos;
    if pos == 0 || neg == 0 {
        return Err(format!(
            "the training split has {pos} asteroids and {neg} artifacts: both classes are needed"
        ));
    }
    let w_pos = cfg.asteroid_weight.unwrap_or(neg as f64 / pos as f64);
    let s = net.config.cutout_px;
    let len = train.example_len;
    let batches = train.n.div_ceil(cfg.batch_size);
    // A training that stopped early and is run again (its task re-run after the checkpoint
    // was written) must not go on: it ends where the uninterrupted one ended.
    while state.epochs_done < cfg.epochs && !stopped_early(&state, cfg) {
        let epoch = state.epochs_done;
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ fnv1a(&epoch.to_le_bytes()));
        let mut order: Vec<usize> = (0..train.n).collect();
        order.shuffle(&mut rng);
        let (mut sum, mut wsum) = (0.0, 0.0);
        for b in 0..batches {
            if cancel.load(Ordering::Relaxed) {
                return Err("cancelled".into());
            }
            let idx = &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(train.n)];
            let mut x = Vec::with_capacity(idx.len() * len);
            let mut y = Vec::with_capacity(idx.len());
            let mut w = Vec::with_capacity(idx.len());
            for &i in idx {
                let src = &train.inputs[i * len..(i + 1) * len];
                if cfg.augment {
                    let rot = rng.random_range(0..4u8);
                    let flip = rng.random::<bool>();
                    augment(src, s, rot, flip, cfg.noise_sigma, &mut rng, &mut x);
                } else {
                    x.extend_from_slice(src);
                }
                let l = train.labels[i];
                y.push(l as f32);
                w.push(if l != 0 { w_pos as f32 } else { 1.0 });
            }
            let n = idx.len();
            let xt = Tensor::from_vec(x, (n, net.config.channels(), s, s), &dev).map_err(e)?;
            let yt = Tensor::from_vec(y, n, &dev).map_err(e)?;
            let wt = Tensor::from_vec(w.clone(), n, &dev).map_err(e)?;
            state.step += 1;
            let lr = learning_rate(cfg, epoch, b as f64 / batches as f64);
            let l = step(
                net,
                &vars,
                &mut adam,
                &xt,
                &yt,
                &wt,
                lr,
                cfg.weight_decay,
                state.step,
            )
            .map_err(e)?;
            let bw: f64 = w.iter().map(|v| *v as f64).sum();
            sum += l as f64 * bw;
            wsum += bw;
        }
        // The metrics (and early stopping) with the satellite-line veto, the loss without.
        let raw = score_all(net, validation, &dev).map_err(e)?;
        let scores = validation.vetoed(&raw);
        let report = metrics::report(&scores, &validation.labels, 0.5, cfg.precision_floor);
        let m = EpochMetrics {
            epoch: epoch + 1,
            learning_rate: learning_rate(cfg, epoch, 0.0),
            train_loss: sum / wsum.max(1e-12),
            validation_loss: bce(&raw, &validation.labels, w_pos),
            seconds: t0.elapsed().as_secs_f64(),
            validation: report,
        };
        writeln!(
            log,
            "ceres: epoch {}: {:.1} s, loss {:.4} (validation {:.4}), asteroid P {:.3} R {:.3} F1 {:.3} at 0.5, recall {:.3} at precision >= {}",
            m.epoch,
            m.seconds,
            m.train_loss,
            m.validation_loss,
            m.validation.asteroid.precision,
            m.validation.asteroid.recall,
            m.validation.asteroid.f1,
            m.validation.recall_at_floor,
            cfg.precision_floor
        )
        .map_err(|err| err.to_string())?;
        let better = m.validation.recall_at_floor > state.best_recall
            || (m.validation.recall_at_floor == state.best_recall
                && m.validation_loss < state.best_loss);
        state.epochs_done = epoch + 1;
        if better {
            state.best_epoch = m.epoch;
            state.best_recall = m.validation.recall_at_floor;
            state.best_loss = m.validation_loss;
        }
        state.history.push(m);
        let tensors = checkpoint_tensors(&vars, &adam);
        write_atomic(&epoch_file(ckpt, state.epochs_done), |p| {
            candle_core::safetensors::save(&tensors, p)
                .map_err(|err| format!("{}: {err}", p.display()))
        })?;
        let text = serde_json::to_string_pretty(&state).map_err(|err| err.to_string())?;
        write_atomic(&state_path, |p| {
            std::fs::write(p, &text).map_err(|err| format!("{}: {err}", p.display()))
        })?;
        // Keep the best epoch and the last one; older checkpoints go.
        if state.epochs_done > 1 {
            let prev = state.epochs_done - 1;
            if prev != state.best_epoch {
                let _ = std::fs::remove_file(epoch_file(ckpt, prev));
            }
        }
        if stopped_early(&state, cfg) {
            writeln!(
                log,
                "ceres: early stop: no better validation recall for {} epochs",
                cfg.patience
            )
            .map_err(|err| err.to_string())?;
            break;
        }
    }
    // Leave the best epoch's weights in the network.
    let best = crate::model::read_safetensors(&epoch_file(ckpt, state.best_epoch.max(1)))?;
    for (name, var) in &vars {
        let t = best
            .get(&format!("w.{name}"))
            .ok_or_else(|| format!("best checkpoint lacks w.{name}"))?;
        var.set(&t.to_device(&dev).map_err(e)?).map_err(e)?;
    }
    Ok(Trained {
        state,
        resumed_from,
    })
}
