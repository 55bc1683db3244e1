//! Previews for reviewers: each cutout stretched to 8 bits, by IRAF's zscale (the display range
//! from a line fitted to the sorted pixel values near the median) or by an asinh stretch (faint
//! sky and bright cores both visible), and the panels of one detection side by side in a
//! grey-scale PNG. The PNG is written here: zlib with stored (uncompressed) deflate blocks,
//! which every reader accepts.

/// How pixel values become grey levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stretch {
    /// IRAF's zscale with this contrast (0.25 is IRAF's and ds9's default).
    Zscale { contrast: f32 },
    /// asinh((v - median) / (a (p99.5 - median))) / asinh(1 / a), with a = 0.1.
    Asinh,
}

/// zscale samples at most this many pixels, on a regular stride (IRAF's nsample).
const ZSCALE_SAMPLES: usize = 1000;
/// Rejection limit of the line fit, in standard deviations of its residuals (IRAF's krej).
const ZSCALE_KREJ: f32 = 2.5;
/// The fit gives up (full range) when fewer than this fraction of the samples remain.
const ZSCALE_MAX_REJECT: f32 = 0.5;
const ZSCALE_ITERATIONS: usize = 5;

/// IRAF's zscale display range (z1, z2) of the finite values; `None` when there are none.
pub fn zscale(values: &[f32], contrast: f32) -> Option<(f32, f32)> {
    let stride = values.len().div_ceil(ZSCALE_SAMPLES).max(1);
    let mut s: Vec<f32> = values
        .iter()
        .step_by(stride)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if s.is_empty() {
        // The stride may have missed the finite pixels of a mostly empty cutout.
        s = values.iter().copied().filter(|v| v.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        let stride = s.len().div_ceil(ZSCALE_SAMPLES).max(1);
        s = s.into_iter().step_by(stride).collect();
    }
    s.sort_by(f32::total_cmp);
    let n = s.len();
    let (zmin, zmax) = (s[0], s[n - 1]);
    let center = n.div_ceil(2); // 1-based index of the median sample
    let median = if n % 2 == 1 {
        s[center - 1]
    } else {
        0.5 * (s[center - 1] + s[center])
    };
    if n < 2 {
        return Some((zmin, zmax));
    }
    let min_good = ((n as f32 * ZSCALE_MAX_REJECT) as usize).max(5);
    let grow = ((n as f32 * 0.01) as usize).max(1);
    let xscale = 2.0 / (n - 1) as f32;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * xscale - 1.0).collect();
    let mut good = vec![true; n];
    let mut n_good = n;
    let mut last = n + 1;
    let mut slope = 0.0f32;
    for _ in 0..ZSCALE_ITERATIONS {
        if n_good >= last || n_good < min_good {
            break;
        }
        let (mut sx, mut sy, mut sxx, mut sxy, mut m) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for i in (0..n).filter(|&i| good[i]) {
            let (xi, yi) = (x[i] as f64, s[i] as f64);
            sx += xi;
            sy += yi;
            sxx += xi * xi;
            sxy += xi * yi;
            m += 1.0;
        }
        let det = m * sxx - sx * sx;
        if det == 0.0 {
            break;
        }
        let b = ((m * sxy - sx * sy) / det) as f32;
        let a = ((sy * sxx - sx * sxy) / det) as f32;
        slope = b;
        let resid: Vec<f32> = (0..n).map(|i| s[i] - (a + b * x[i])).collect();
        let good_resid: Vec<f32> = (0..n).filter(|&i| good[i]).map(|i| resid[i]).collect();
        let mean = good_resid.iter().sum::<f32>() / good_resid.len() as f32;
        let sigma = (good_resid.iter().map(|r| (r - mean).powi(2)).sum::<f32>()
            / good_resid.len() as f32)
            .sqrt();
        let thr = ZSCALE_KREJ * sigma;
        let mut next = good.clone();
        for i in (0..n).filter(|&i| resid[i].abs() > thr) {
            for g in next
                .iter_mut()
                .take((i + grow + 1).min(n))
                .skip(i.saturating_sub(grow))
            {
                *g = false;
            }
        }
        good = next;
        last = n_good;
        n_good = good.iter().filter(|g| **g).count();
    }
    if n_good < min_good {
        return Some((zmin, zmax));
    }
    // The fitted slope is per unit of normalised x; per sample it is `slope * xscale`.
    let zslope = slope * xscale / contrast;
    let z1 = zmin.max(median - (center as f32 - 1.0) * zslope);
    let z2 = zmax.min(median + (n - center) as f32 * zslope);
    Some((z1, z2))
}

/// 8-bit grey levels of `values` (NaN -> 0).
pub fn stretch(values: &[f32], how: Stretch) -> Vec<u8> {
    let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return vec![0; values.len()];
    }
    let level = |t: f32| (t.clamp(0.0, 1.0) * 255.0).round() as u8;
    match how {
        Stretch::Zscale { contrast } => {
            let (z1, z2) = zscale(values, contrast).unwrap_or((0.0, 1.0));
            let span = if z2 > z1 { z2 - z1 } else { 1.0 };
            values
                .iter()
                .map(|&v| {
                    if v.is_finite() {
                        level((v - z1) / span)
                    } else {
                        0
                    }
                })
                .collect()
        }
        Stretch::Asinh => {
            let mut s = finite;
            s.sort_by(f32::total_cmp);
            let median = s[s.len() / 2];
            let top = s[((s.len() - 1) as f32 * 0.995) as usize];
            let span = if top > median { top - median } else { 1.0 };
            const A: f32 = 0.1;
            let norm = (1.0 / A).asinh();
            values
                .iter()
                .map(|&v| {
                    if v.is_finite() {
                        level((((v - median) / span).max(0.0) / A).asinh() / norm)
                    } else {
                        0
                    }
                })
                .collect()
        }
    }
}

/// Panels of `size` x `size` grey levels side by side, `gap` pixels apart (grey 128), rows
/// flipped so that north-up FITS rows (y up) display upright.
pub fn mosaic(panels: &[Vec<u8>], size: usize, gap: usize) -> (usize, usize, Vec<u8>) {
    let n = panels.len().max(1);
    let width = n * size + (n - 1) * gap;
    let mut out = vec![128u8; width * size];
    for (k, p) in panels.iter().enumerate() {
        let x0 = k * (size + gap);
        for y in 0..size {
            let dst = (size - 1 - y) * width + x0;
            out[dst..dst + size].copy_from_slice(&p[y * size..(y + 1) * size]);
        }
    }
    (width, size, out)
}

/// A grey-scale 8-bit PNG of `width` x `height` pixels, top row first.
pub fn encode_png(width: usize, height: usize, grey: &[u8]) -> Vec<u8> {
    // Raw scanlines, each led by filter type 0 (none).
    let mut raw = Vec::with_capacity((width + 1) * height);
    for row in grey.chunks(width.max(1)).take(height) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    // zlib stream: header (deflate, 32K window, no dictionary), stored blocks, Adler-32.
    let mut z = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        z.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(b) = blocks.next() {
        z.push(u8::from(blocks.peek().is_none()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    // Bit depth 8, colour type 0 (grey), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as PNG chunks carry.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Adler-32 checksum of the uncompressed zlib data.
fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    (b << 16) | a
}
