//! Combining resampled exposures pixel by pixel. Each method uses only the exposures that cover
//! a pixel (weight > 0) and gives the combined inverse-variance weight:
//!
//! - weighted mean: sum(w v) / sum(w); weight sum(w).
//! - median: the median of the values (the mean of the middle two for an even count); weight
//!   sum(w) * 2 / pi, the efficiency of the median of Gaussian samples.
//! - clipped mean: values farther from the median than `sigma` times their own noise
//!   (sqrt(1/w), widened by `ampfrac` times the median for bright sources whose profile changes
//!   from frame to frame, SWarp's `CLIP_AMPFRAC`) are dropped; the rest are averaged with their
//!   weights. The noise of each value comes from its weight, not from the spread of the few
//!   values at hand, which a handful of exposures cannot estimate.

use rayon::prelude::*;

use super::Layer;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    Median,
    ClippedMean { sigma: f32, ampfrac: f32 },
    WeightedMean,
}

impl Combine {
    pub fn name(&self) -> &'static str {
        match self {
            Combine::Median => "median",
            Combine::ClippedMean { .. } => "clipped_mean",
            Combine::WeightedMean => "weighted_mean",
        }
    }
}

/// The combined image, its weight, and how many exposures each pixel holds (after clipping).
#[derive(Debug, Clone)]
pub struct Combined {
    pub value: Vec<f32>,
    pub weight: Vec<f32>,
    pub count: Vec<u16>,
}

/// Combines layers of the same size. Pixels no layer covers are NaN with weight 0.
pub fn combine(layers: &[Layer], method: Combine) -> Combined {
    let Some(first) = layers.first() else {
        return Combined {
            value: Vec::new(),
            weight: Vec::new(),
            count: Vec::new(),
        };
    };
    let (w, n) = (first.width, first.width * first.height);
    let mut value = vec![f32::NAN; n];
    let mut weight = vec![0f32; n];
    let mut count = vec![0u16; n];
    value
        .par_chunks_mut(w)
        .zip(weight.par_chunks_mut(w))
        .zip(count.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, ((vals, wts), cnts))| {
            let mut px: Vec<(f32, f32)> = Vec::with_capacity(layers.len());
            for x in 0..w {
                let i = y * w + x;
                px.clear();
                px.extend(
                    layers
                        .iter()
                        .map(|l| (l.value[i], l.weight[i]))
                        .filter(|(_, wt)| *wt > 0.0),
                );
                if let Some((v, wt, c)) = combine_pixel(&mut px, method) {
                    vals[x] = v;
                    wts[x] = wt;
                    cnts[x] = c;
                }
            }
        });
    Combined {
        value,
        weight,
        count,
    }
}

/// One pixel's (value, weight) pairs -> (value, weight, count kept); `None` when empty.
pub fn combine_pixel(px: &mut [(f32, f32)], method: Combine) -> Option<(f32, f32, u16)> {
    if px.is_empty() {
        return None;
    }
    let wsum: f32 = px.iter().map(|p| p.1).sum();
    match method {
        Combine::WeightedMean => {
            let s: f32 = px.iter().map(|(v, w)| v * w).sum();
            Some((s / wsum, wsum, px.len() as u16))
        }
        Combine::Median => Some((
            median(px),
            wsum * std::f32::consts::FRAC_2_PI,
            px.len() as u16,
        )),
        Combine::ClippedMean { sigma, ampfrac } => {
            let med = median(px);
            let (mut s, mut ws, mut c) = (0.0f32, 0.0f32, 0u16);
            for &(v, w) in px.iter() {
                let tol2 = sigma * sigma * (1.0 / w + (ampfrac * med).powi(2));
                if (v - med).powi(2) <= tol2 {
                    s += v * w;
                    ws += w;
                    c += 1;
                }
            }
            if c == 0 {
                return Some((med, wsum * std::f32::consts::FRAC_2_PI, px.len() as u16));
            }
            Some((s / ws, ws, c))
        }
    }
}

/// Median of the values (sorts the slice by value).
fn median(px: &mut [(f32, f32)]) -> f32 {
    px.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let n = px.len();
    if n % 2 == 1 {
        px[n / 2].0
    } else {
        0.5 * (px[n / 2 - 1].0 + px[n / 2].0)
    }
}
