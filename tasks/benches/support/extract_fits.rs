//! Harness for bench/extract_vs_sextractor.sh: runs the extractor on FITS frames, compares its
//! catalog with SExtractor's, and makes synthetic star fields with a truth list.
//!
//! ```text
//! extract_fits run IMAGE.fits [--threads N] [--repeat K] [--out CAT.txt] [--minarea N]
//!                             [--thresh S] [--satur ADU] [--gain E_PER_ADU] [--weight W.fits]
//!                             [--trail-snr S]
//! extract_fits compare OURS.txt SEX.txt [--snr 10] [--radius 1]
//! extract_fits simulate OUT.fits TRUTH.txt [--seed N] [--size PX]
//! extract_fits completeness TRUTH.txt CAT.txt...
//! ```
//! Catalogs are SExtractor ASCII_HEAD text. `run` prints one `key=value` line per measurement.

use fitsio::images::{ImageDescription, ImageType};
use fitsio::FitsFile;
use nearby_tasks::extract::{extract, ExtractConfig, Image};
use std::collections::HashMap;
use std::time::Instant;

type Res<T> = Result<T, String>;

/// Pixels, width, height and the numeric header keys the run needs (GAIN, SATURATE).
type Frame = (Vec<f32>, usize, usize, HashMap<String, f64>);

/// The primary image of a plain (uncompressed, single-image) FITS file, read once and converted
/// here in cache-sized pieces (no whole-file buffer to fault in): `None` when the file needs
/// cfitsio (extensions only, BLANK, tile compression, odd BITPIX, short file). Conversion matches
/// cfitsio's: `(float)(i * BSCALE + BZERO)` in double precision.
fn read_fits_plain(path: &str) -> Res<Option<Frame>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut keys: HashMap<String, String> = HashMap::new();
    let mut block = [0u8; 2880];
    'header: loop {
        if file.read_exact(&mut block).is_err() {
            return Ok(None);
        }
        for card in block.chunks_exact(80) {
            let name = std::str::from_utf8(&card[..8]).unwrap_or("").trim_end();
            if name == "END" {
                break 'header;
            }
            if &card[8..10] == b"= " {
                let v = String::from_utf8_lossy(&card[10..]);
                let v = if v.trim_start().starts_with('\'') {
                    v.trim().to_string()
                } else {
                    v.split('/').next().unwrap_or("").trim().to_string()
                };
                keys.entry(name.to_string()).or_insert(v);
            }
        }
    }
    let int = |k: &str| keys.get(k).and_then(|v| v.parse::<i64>().ok());
    let num = |k: &str| {
        keys.get(k)
            .and_then(|v| v.replace(['D', 'd'], "E").parse::<f64>().ok())
    };
    let (Some(bitpix), Some(2), Some(w), Some(h)) =
        (int("BITPIX"), int("NAXIS"), int("NAXIS1"), int("NAXIS2"))
    else {
        return Ok(None);
    };
    if keys.contains_key("BLANK") || keys.contains_key("ZIMAGE") || w <= 0 || h <= 0 {
        return Ok(None);
    }
    if ![8, 16, 32, -32, -64].contains(&bitpix) {
        return Ok(None);
    }
    let (w, h) = (w as usize, h as usize);
    let n = w * h;
    let size = (bitpix.unsigned_abs() / 8) as usize;
    let (scale, zero) = (num("BSCALE").unwrap_or(1.0), num("BZERO").unwrap_or(0.0));
    let scaled = scale != 1.0 || zero != 0.0;
    let conv = |x: f64| -> f32 {
        if scaled {
            (x * scale + zero) as f32
        } else {
            x as f32
        }
    };
    let mut data: Vec<f32> = Vec::with_capacity(n);
    // Pieces of whole FITS blocks: a multiple of 8 bytes, so no pixel straddles two pieces.
    let mut buf = vec![0u8; 2880 * 64];
    let mut left = n * size;
    while left > 0 {
        let m = left.min(buf.len());
        if file.read_exact(&mut buf[..m]).is_err() {
            return Ok(None);
        }
        let raw = &buf[..m];
        match bitpix {
            8 => data.extend(raw.iter().map(|b| conv(*b as f64))),
            16 => data.extend(
                raw.chunks_exact(2)
                    .map(|b| conv(i16::from_be_bytes([b[0], b[1]]) as f64)),
            ),
            32 => data.extend(
                raw.chunks_exact(4)
                    .map(|b| conv(i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64)),
            ),
            -32 => data.extend(raw.chunks_exact(4).map(|b| {
                let v = f32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if scaled {
                    conv(v as f64)
                } else {
                    v
                }
            })),
            _ => data.extend(
                raw.chunks_exact(8)
                    .map(|b| conv(f64::from_be_bytes(b.try_into().expect("8 bytes")))),
            ),
        }
        left -= m;
    }
    let mut out = HashMap::new();
    for k in ["GAIN", "SATURATE"] {
        if let Some(v) = num(k) {
            out.insert(k.to_string(), v);
        }
    }
    Ok(Some((data, w, h, out)))
}

fn read_fits(path: &str) -> Res<Frame> {
    if let Some(frame) = read_fits_plain(path)? {
        return Ok(frame);
    }
    let mut f = FitsFile::open(path).map_err(|e| format!("{path}: {e}"))?;
    let nhdu = f.iter().count();
    for i in 0..nhdu {
        let hdu = f.hdu(i).map_err(|e| format!("{path}[{i}]: {e}"))?;
        if let fitsio::hdu::HduInfo::ImageInfo { shape, .. } = &hdu.info {
            if shape.len() == 2 && shape[0] > 0 && shape[1] > 0 {
                let (h, w) = (shape[0], shape[1]);
                let data: Vec<f32> = hdu
                    .read_image(&mut f)
                    .map_err(|e| format!("{path}[{i}]: {e}"))?;
                let mut keys = HashMap::new();
                for k in ["GAIN", "SATURATE"] {
                    if let Ok(v) = hdu.read_key::<f64>(&mut f, k) {
                        keys.insert(k.to_string(), v);
                    }
                }
                return Ok((data, w, h, keys));
            }
        }
    }
    Err(format!("{path}: no 2-D image HDU"))
}

fn opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Res<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|_| format!("bad value for {name}")),
        None => Ok(default),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn cmd_run(args: &[String]) -> Res<()> {
    let path = args.first().ok_or("run needs an image")?;
    let threads: usize = opt(args, "--threads", 0)?;
    let repeat: usize = opt(args, "--repeat", 1)?;
    let out: String = opt(args, "--out", String::new())?;
    let t0 = Instant::now();
    let (data, w, h, keys) = read_fits(path)?;
    let read_s = t0.elapsed().as_secs_f64();
    let weight = match opt::<String>(args, "--weight", String::new())? {
        s if s.is_empty() => None,
        s => Some(read_fits(&s)?.0),
    };
    let cfg = ExtractConfig {
        min_area_px: opt(args, "--minarea", 5)?,
        thresh_sigma: opt(args, "--thresh", 1.5)?,
        trail_snr: opt(args, "--trail-snr", 0.0)?,
        saturate_adu: Some(opt(
            args,
            "--satur",
            keys.get("SATURATE").copied().unwrap_or(50_000.0) as f32,
        )?),
        gain_e_per_adu: opt(
            args,
            "--gain",
            keys.get("GAIN").copied().unwrap_or(0.0) as f32,
        )?,
        ..ExtractConfig::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    let mut img = Image::new(&data, w, h);
    if let Some(wt) = &weight {
        img = img.with_weight(wt);
    }
    let mut times = Vec::new();
    let mut cat = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let c = pool.install(|| extract(&img, &cfg));
        times.push(t.elapsed().as_secs_f64());
        cat = Some(c);
    }
    let cat = cat.expect("at least one run");
    // --param FILE: write only the columns a SExtractor parameter file names (e.g. FLUX_APER(1)).
    let param: String = opt(args, "--param", String::new())?;
    let t = Instant::now();
    if !out.is_empty() {
        let text = if param.is_empty() {
            cat.to_ascii_head()
        } else {
            let list = std::fs::read_to_string(&param).map_err(|e| format!("{param}: {e}"))?;
            let names: Vec<&str> = list
                .lines()
                .map(|l| l.split(['(', '#']).next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .collect();
            cat.to_ascii_head_columns(Some(&names))
        };
        std::fs::write(&out, text).map_err(|e| format!("{out}: {e}"))?;
    }
    let write_s = t.elapsed().as_secs_f64();
    println!(
        "image={path} width={w} height={h} threads={} sources={}",
        pool.current_num_threads(),
        cat.sources.len()
    );
    println!("read_s={read_s:.4} write_s={write_s:.4} extract_s_median={:.4} extract_s_min={:.4} runs={}", median(times.clone()), times.iter().copied().fold(f64::INFINITY, f64::min), times.len());
    println!(
        "background={:.3} rms={:.3} threshold={:.3}",
        cat.background_level, cat.background_rms, cat.threshold
    );
    Ok(())
}

/// A parsed ASCII_HEAD catalog: column name -> values (vector columns: NAME, NAME_2, ...).
fn read_ascii(path: &str) -> Res<HashMap<String, Vec<f64>>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut names: Vec<(usize, String)> = Vec::new();
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix('#') {
            let mut it = h.split_whitespace();
            if let (Some(i), Some(n)) = (it.next(), it.next()) {
                if let Ok(i) = i.parse::<usize>() {
                    names.push((i, n.to_string()));
                }
            }
        } else if !line.trim().is_empty() {
            rows.push(
                line.split_whitespace()
                    .map(|v| v.parse().unwrap_or(f64::NAN))
                    .collect(),
            );
        }
    }
    let mut cols = HashMap::new();
    for (k, (i, n)) in names.iter().enumerate() {
        let end = names
            .get(k + 1)
            .map_or(rows.first().map_or(*i, |r| r.len() + 1), |x| x.0);
        for j in *i..end {
            let key = if j == *i {
                n.clone()
            } else {
                format!("{n}_{}", j - i + 1)
            };
            cols.insert(
                key,
                rows.iter()
                    .map(|r| r.get(j - 1).copied().unwrap_or(f64::NAN))
                    .collect(),
            );
        }
    }
    Ok(cols)
}

fn col<'a>(c: &'a HashMap<String, Vec<f64>>, name: &str, path: &str) -> Res<&'a Vec<f64>> {
    c.get(name).ok_or(format!("{path}: no column {name}"))
}

fn cmd_compare(args: &[String]) -> Res<()> {
    let (ours, sex) = (
        args.first().ok_or("compare OURS SEX")?,
        args.get(1).ok_or("compare OURS SEX")?,
    );
    let snr_min: f64 = opt(args, "--snr", 10.0)?;
    let radius: f64 = opt(args, "--radius", 1.0)?;
    let a = read_ascii(ours)?;
    let b = read_ascii(sex)?;
    let (ax, ay, af) = (
        col(&a, "X_IMAGE", ours)?,
        col(&a, "Y_IMAGE", ours)?,
        col(&a, "FLUX_AUTO", ours)?,
    );
    let (bx, by, bf, be, bfl) = (
        col(&b, "X_IMAGE", sex)?,
        col(&b, "Y_IMAGE", sex)?,
        col(&b, "FLUX_AUTO", sex)?,
        col(&b, "FLUXERR_AUTO", sex)?,
        col(&b, "FLAGS", sex)?,
    );
    let awx = a.get("XWIN_IMAGE");
    let bwx = b.get("XWIN_IMAGE");
    // Grid index of our sources for the nearest-neighbour search.
    let cell = 4.0f64;
    let mut grid: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for i in 0..ax.len() {
        grid.entry(((ax[i] / cell).floor() as i64, (ay[i] / cell).floor() as i64))
            .or_default()
            .push(i);
    }
    let nearest = |x: f64, y: f64| -> Option<(usize, f64)> {
        let (gx, gy) = ((x / cell).floor() as i64, (y / cell).floor() as i64);
        let mut best: Option<(usize, f64)> = None;
        for dy in -1..=1 {
            for dx in -1..=1 {
                for &i in grid
                    .get(&(gx + dx, gy + dy))
                    .map(|v| v.as_slice())
                    .unwrap_or(&[])
                {
                    let d = (ax[i] - x).hypot(ay[i] - y);
                    if best.is_none_or(|b| d < b.1) {
                        best = Some((i, d));
                    }
                }
            }
        }
        best
    };
    let mut clean = 0usize;
    let mut matched = 0usize;
    let mut ratios = Vec::new();
    let mut dpos = Vec::new();
    let mut dwin = Vec::new();
    for j in 0..bx.len() {
        if bfl[j] != 0.0 || be[j].is_nan() || be[j] <= 0.0 || bf[j] / be[j] <= snr_min {
            continue;
        }
        clean += 1;
        if let Some((i, d)) = nearest(bx[j], by[j]) {
            if d <= radius {
                matched += 1;
                ratios.push(af[i] / bf[j]);
                dpos.push(d);
                if let (Some(awx), Some(bwx)) = (awx, bwx) {
                    let (awy, bwy) = (&a["YWIN_IMAGE"], &b["YWIN_IMAGE"]);
                    dwin.push((awx[i] - bwx[j]).hypot(awy[i] - bwy[j]));
                }
            }
        }
    }
    let frac = matched as f64 / clean.max(1) as f64;
    let mut r2 = ratios.clone();
    r2.sort_by(f64::total_cmp);
    let q = |p: f64| {
        r2.get(((r2.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("ours={} sextractor={} sex_clean_snr>{snr_min}={clean} matched<={radius}px={matched} fraction={frac:.4}", ax.len(), bx.len());
    println!(
        "flux_auto_ratio_median={:.4} p10={:.4} p90={:.4}",
        median(ratios),
        q(0.1),
        q(0.9)
    );
    println!(
        "offset_median_px={:.4} win_offset_median_px={:.4}",
        median(dpos),
        median(dwin)
    );
    Ok(())
}

/// SplitMix64 + Box-Muller: the same deterministic generator as the unit tests.
struct Rng(u64);
impl Rng {
    fn u(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn g(&mut self) -> f64 {
        (-2.0 * self.u().max(1e-300).ln()).sqrt() * (2.0 * std::f64::consts::PI * self.u()).cos()
    }
}

fn cmd_simulate(args: &[String]) -> Res<()> {
    let (out, truth) = (
        args.first().ok_or("simulate OUT.fits TRUTH.txt")?,
        args.get(1).ok_or("simulate OUT.fits TRUTH.txt")?,
    );
    let seed: u64 = opt(args, "--seed", 1)?;
    let size: usize = opt(args, "--size", 1024)?;
    let (w, h) = (size, size);
    let (sig_psf, sig_sky, sky) = (1.3f64, 10.0f64, 200.0f64);
    let mut rng = Rng(seed);
    let mut img = vec![0.0f64; w * h];
    let k = sig_sky * (4.0 * std::f64::consts::PI * sig_psf * sig_psf).sqrt();
    let mut lines = String::from("# x_1based y_1based flux snr_psf\n");
    let spacing = 24usize;
    let mut y = spacing / 2;
    while y + spacing / 2 <= h {
        let mut x = spacing / 2;
        while x + spacing / 2 <= w {
            let snr = (2f64.ln() + rng.u() * (300f64.ln() - 2f64.ln())).exp();
            let (sx, sy, f) = (x as f64 + rng.u() - 0.5, y as f64 + rng.u() - 0.5, snr * k);
            for yy in y.saturating_sub(10)..(y + 11).min(h) {
                for xx in x.saturating_sub(10)..(x + 11).min(w) {
                    // 5x5 subsampled Gaussian
                    let mut acc = 0.0;
                    for a in 0..5 {
                        for b in 0..5 {
                            let dx = xx as f64 + (b as f64 + 0.5) / 5.0 - 0.5 - sx;
                            let dy = yy as f64 + (a as f64 + 0.5) / 5.0 - 0.5 - sy;
                            acc += (-(dx * dx + dy * dy) / (2.0 * sig_psf * sig_psf)).exp();
                        }
                    }
                    img[yy * w + xx] +=
                        f * acc / 25.0 / (2.0 * std::f64::consts::PI * sig_psf * sig_psf);
                }
            }
            lines.push_str(&format!(
                "{:.4} {:.4} {:.3} {:.3}\n",
                sx + 1.0,
                sy + 1.0,
                f,
                snr
            ));
            x += spacing;
        }
        y += spacing;
    }
    let data: Vec<f32> = img
        .iter()
        .map(|v| (sky + v + sig_sky * rng.g()) as f32)
        .collect();
    let _ = std::fs::remove_file(out);
    let desc = ImageDescription {
        data_type: ImageType::Float,
        dimensions: &[h, w],
    };
    let mut f = FitsFile::create(out)
        .with_custom_primary(&desc)
        .open()
        .map_err(|e| format!("{out}: {e}"))?;
    let hdu = f.primary_hdu().map_err(|e| e.to_string())?;
    hdu.write_image(&mut f, &data).map_err(|e| e.to_string())?;
    std::fs::write(truth, lines).map_err(|e| format!("{truth}: {e}"))?;
    println!("wrote {out} ({w}x{h}) and {truth}");
    Ok(())
}

fn cmd_completeness(args: &[String]) -> Res<()> {
    let truth = args.first().ok_or("completeness TRUTH CAT...")?;
    let text = std::fs::read_to_string(truth).map_err(|e| format!("{truth}: {e}"))?;
    let stars: Vec<[f64; 4]> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 4).then(|| [v[0], v[1], v[2], v[3]])
        })
        .collect();
    let bins = [2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 50.0, 300.0];
    print!("{:>12}", "S/N bin");
    let cats: Vec<(String, Vec<(f64, f64)>)> = args[1..]
        .iter()
        .map(|p| {
            let c = read_ascii(p)?;
            let (x, y) = (col(&c, "X_IMAGE", p)?, col(&c, "Y_IMAGE", p)?);
            Ok((p.clone(), x.iter().zip(y).map(|(a, b)| (*a, *b)).collect()))
        })
        .collect::<Res<_>>()?;
    for (p, _) in &cats {
        print!(" {:>28}", p.rsplit('/').next().unwrap_or(p));
    }
    println!();
    for b in bins.windows(2).map(|b| (b[0], b[1])).chain([(10.0, 300.0)]) {
        print!("{:>5}-{:<6}", b.0, b.1);
        for (_, pos) in &cats {
            let sel: Vec<&[f64; 4]> = stars.iter().filter(|s| s[3] >= b.0 && s[3] < b.1).collect();
            let found = sel
                .iter()
                .filter(|s| pos.iter().any(|(x, y)| (x - s[0]).hypot(y - s[1]) <= 1.5))
                .count();
            print!(
                " {:>20.3} ({:>3}/{:<3})",
                found as f64 / sel.len().max(1) as f64,
                found,
                sel.len()
            );
        }
        println!();
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("compare") => cmd_compare(&args[1..]),
        Some("simulate") => cmd_simulate(&args[1..]),
        Some("completeness") => cmd_completeness(&args[1..]),
        _ => Err("usage: extract_fits run|compare|simulate|completeness ...".to_string()),
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
