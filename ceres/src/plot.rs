//! The per-epoch metrics as a PNG: losses on the left, validation asteroid precision, recall,
//! F1 (at 0.5) and recall at the precision floor on the right, epochs along x. Drawn here on
//! an RGB canvas (lines, axes and a 5x7 pixel font for the legend), written with the `png`
//! crate: no plotting library and no system fonts needed.

use std::path::Path;

use crate::train::EpochMetrics;

const W: usize = 900;
const H: usize = 420;

struct Canvas {
    px: Vec<[u8; 3]>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            self.px[y as usize * W + x as usize] = c;
        }
    }
    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3], thick: i64) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            for dx in 0..thick {
                for dy in 0..thick {
                    self.set(x as i64 + dx, y as i64 + dy, c);
                }
            }
        }
    }
    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch.to_ascii_uppercase());
            for (r, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits >> (4 - col) & 1 == 1 {
                        self.set(x + k as i64 * 6 + col, y + r as i64, c);
                    }
                }
            }
        }
    }
}

fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        _ => [0; 7],
    }
}

const BLACK: [u8; 3] = [0, 0, 0];
const GREY: [u8; 3] = [220, 220, 220];
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];
const GREEN: [u8; 3] = [44, 160, 44];
const RED: [u8; 3] = [214, 39, 40];

/// One panel: series of (label, colour, values) over epochs 1..=n, y from 0 to `ymax`.
fn panel(cv: &mut Canvas, x0: f64, title: &str, series: &[(&str, [u8; 3], Vec<f64>)], ymax: f64) {
    let (left, top, w, h) = (x0 + 40.0, 30.0, 380.0, 300.0);
    for k in 0..=4 {
        let y = top + h * k as f64 / 4.0;
        cv.line(left, y, left + w, y, GREY, 1);
        cv.text(
            left as i64 - 36,
            y as i64 - 3,
            &format!("{:.2}", ymax * (1.0 - k as f64 / 4.0)),
            BLACK,
        );
    }
    cv.line(left, top, left, top + h, BLACK, 1);
    cv.line(left, top + h, left + w, top + h, BLACK, 1);
    cv.text(left as i64, 10, title, BLACK);
    cv.text((left + w) as i64 - 30, (top + h) as i64 + 8, "EPOCH", BLACK);
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0);
    let xs = |i: usize| {
        left + if n > 1 {
            w * i as f64 / (n - 1) as f64
        } else {
            w / 2.0
        }
    };
    let ys = |v: f64| top + h * (1.0 - (v / ymax).clamp(0.0, 1.0));
    cv.text(left as i64, (top + h) as i64 + 8, "1", BLACK);
    cv.text(
        xs(n.saturating_sub(1)) as i64 - 6,
        (top + h) as i64 + 20,
        &n.to_string(),
        BLACK,
    );
    for (k, (label, c, v)) in series.iter().enumerate() {
        for i in 1..v.len() {
            cv.line(xs(i - 1), ys(v[i - 1]), xs(i), ys(v[i]), *c, 2);
        }
        if v.len() == 1 {
            cv.line(xs(0) - 2.0, ys(v[0]), xs(0) + 2.0, ys(v[0]), *c, 3);
        }
        let ly = (top + h + 40.0 + 12.0 * k as f64) as i64;
        cv.line(left, ly as f64 + 3.0, left + 16.0, ly as f64 + 3.0, *c, 3);
        cv.text(left as i64 + 22, ly, label, BLACK);
    }
}

/// Draws the history and writes it to `path`.
pub fn write(history: &[EpochMetrics], path: &Path) -> Result<(), String> {
    let mut cv = Canvas {
        px: vec![[255, 255, 255]; W * H],
    };
    let tl: Vec<f64> = history.iter().map(|m| m.train_loss).collect();
    let vl: Vec<f64> = history.iter().map(|m| m.validation_loss).collect();
    let lmax = tl
        .iter()
        .chain(&vl)
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.1, f64::max);
    panel(
        &mut cv,
        0.0,
        "LOSS",
        &[("TRAIN LOSS", BLUE, tl), ("VALIDATION LOSS", ORANGE, vl)],
        lmax,
    );
    let get = |f: fn(&EpochMetrics) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    panel(
        &mut cv,
        450.0,
        "VALIDATION ASTEROIDS AT 0.5",
        &[
            ("PRECISION", BLUE, get(|m| m.validation.asteroid.precision)),
            ("RECALL", ORANGE, get(|m| m.validation.asteroid.recall)),
            ("F1", GREEN, get(|m| m.validation.asteroid.f1)),
            (
                "RECALL AT PRECISION FLOOR",
                RED,
                get(|m| m.validation.recall_at_floor),
            ),
        ],
        1.0,
    );
    let file = std::fs::File::create(path)
        .map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, H as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes: Vec<u8> = cv.px.iter().flatten().copied().collect();
    w.write_image_data(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}
