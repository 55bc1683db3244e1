use super::*;

/// A tiny deterministic generator (SplitMix64) so the tests need no RNG crate.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[test]
fn parse_section_is_one_based_inclusive_x_then_y() {
    let s = parse_section("[1:2048,1:4100]").unwrap();
    assert_eq!(
        s,
        Section {
            x0: 0,
            x1: 2048,
            y0: 0,
            y1: 4100
        }
    );
    assert_eq!((s.width(), s.height()), (2048, 4100));
    assert_eq!(s.to_string(), "[1:2048,1:4100]");
    let s = parse_section(" [ 2049:2080 , 5:8 ] ").unwrap();
    assert_eq!(
        s,
        Section {
            x0: 2048,
            x1: 2080,
            y0: 4,
            y1: 8
        }
    );
    // Reversed ranges name the same pixels.
    assert_eq!(parse_section("[2080:2049,8:5]").unwrap(), s);
}

#[test]
fn parse_section_rejects_malformed_text_with_a_reason() {
    for (text, needle) in [
        ("1:10,1:10", "missing brackets"),
        ("[1:10]", "two ranges"),
        ("[1:10,1:10,1:2]", "two ranges"),
        ("[0:10,1:10]", "1-based"),
        ("[a:10,1:10]", "positive integers"),
        ("[1-10,1:10]", "colon"),
    ] {
        let e = parse_section(text).unwrap_err().to_string();
        assert!(e.contains(needle), "{text}: {e}");
        assert!(e.contains(text), "{text}: {e}");
    }
}

#[test]
fn overscan_rows_are_subtracted_and_frame_trimmed() {
    // 12 x 6 frame: data in columns 1..=8, overscan in 9..=12, each row with its own level.
    let (w, h) = (12, 6);
    let mut raw = vec![0.0f32; w * h];
    for y in 0..h {
        let level = 100.0 + 10.0 * y as f32;
        for x in 0..w {
            raw[y * w + x] = if x < 8 {
                level + (x + y) as f32
            } else {
                level + if x == 11 { 50.0 } else { 0.0 }
            };
        }
    }
    let bias = parse_section("[9:12,1:6]").unwrap();
    let trim = parse_section("[1:8,1:6]").unwrap();
    let (out, tw, th) =
        overscan_correct(&raw, w, h, bias, trim, OverscanOptions::default()).unwrap();
    assert_eq!((tw, th), (8, 6));
    for y in 0..th {
        for x in 0..tw {
            // Median of {L, L, L, L+50} is L: one hot overscan column does not bias it.
            assert_eq!(out[y * tw + x], (x + y) as f32, "({x},{y})");
        }
    }
}

#[test]
fn overscan_columns_when_the_strip_is_below_the_data() {
    let (w, h) = (5, 8);
    let mut raw = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            raw[y * w + x] = 7.0 * x as f32 + if y >= 3 { 1.0 } else { 0.0 };
        }
    }
    let (out, tw, th) = overscan_correct(
        &raw,
        w,
        h,
        parse_section("[1:5,1:3]").unwrap(),
        parse_section("[1:5,4:8]").unwrap(),
        OverscanOptions {
            smooth_half_width: 0,
        },
    )
    .unwrap();
    assert_eq!((tw, th), (5, 5));
    assert!(out.iter().all(|v| *v == 1.0), "{out:?}");
}

#[test]
fn overscan_errors_name_the_sections() {
    let raw = vec![0.0f32; 100];
    let e = overscan_correct(
        &raw,
        10,
        10,
        parse_section("[9:10,1:5]").unwrap(),
        parse_section("[1:8,1:10]").unwrap(),
        OverscanOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the overscan section [9:10,1:5] neither spans the rows nor the columns of the data section [1:8,1:10]"
    );
    let e = overscan_correct(
        &raw,
        10,
        10,
        parse_section("[9:11,1:10]").unwrap(),
        parse_section("[1:8,1:10]").unwrap(),
        OverscanOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "section [9:11,1:10] lies outside the 10x10 image"
    );
}

#[test]
fn smoothing_averages_neighbouring_lines() {
    assert_eq!(smooth(&[0.0, 3.0, 0.0, 3.0], 1), vec![1.5, 1.0, 2.0, 1.5]);
}

#[test]
fn median_combine_rejects_a_cosmic_ray_and_counts_finite_values() {
    let a = [1.0f32, 2.0, f32::NAN];
    let b = [1.2f32, 2.0, 5.0];
    let c = [900.0f32, 2.0, 7.0];
    let (m, n) = combine(&[&a, &b, &c], Combine::Median).unwrap();
    assert_eq!(m, vec![1.2, 2.0, 6.0]);
    assert_eq!(n, vec![3, 3, 2]);
}

#[test]
fn sigma_clipped_mean_drops_outliers() {
    let mut rng = Rng(7);
    let frames: Vec<Vec<f32>> = (0..15)
        .map(|_| {
            (0..2000)
                .map(|_| (100.0 + 5.0 * rng.gauss()) as f32)
                .collect()
        })
        .collect();
    let mut frames = frames;
    frames[3][10] = 10_000.0; // a cosmic ray in one frame
    let refs: Vec<&[f32]> = frames.iter().map(|f| f.as_slice()).collect();
    let (m, n) = combine(&refs, Combine::SigmaClippedMean { sigma: 3.0 }).unwrap();
    assert_eq!(n[10], 14, "the cosmic ray is rejected");
    assert!((m[10] - 100.0).abs() < 6.0, "{}", m[10]);
    let mean: f64 = m.iter().map(|v| *v as f64).sum::<f64>() / m.len() as f64;
    assert!((mean - 100.0).abs() < 0.1, "{mean}");
    // The clipped mean is less noisy than the median (efficiency ~ 1 vs 0.64).
    let rms = |v: &[f32]| {
        (v.iter().map(|x| (*x as f64 - 100.0).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    let (med, _) = combine(&refs, Combine::Median).unwrap();
    assert!(
        rms(&m) < 0.95 * rms(&med),
        "clipped {} median {}",
        rms(&m),
        rms(&med)
    );
}

#[test]
fn combine_checks_sizes_and_parameters() {
    let a = [1.0f32; 4];
    let b = [1.0f32; 5];
    assert_eq!(
        combine(&[&a, &b], Combine::Median).unwrap_err().to_string(),
        "frame 1 has 5 pixels, expected 4"
    );
    assert_eq!(
        combine(&[], Combine::Median).unwrap_err(),
        CalibrateError::NoFrames
    );
    assert!(combine(&[&a], Combine::SigmaClippedMean { sigma: 0.0 }).is_err());
}

#[test]
fn master_flat_is_normalised_per_frame_and_overall() {
    let n = 1000;
    let bias = vec![50.0f32; n];
    let pattern: Vec<f32> = (0..n).map(|i| 0.9 + 0.2 * (i as f32 / n as f32)).collect();
    let flats: Vec<Vec<f32>> = [1000.0f32, 20000.0, 5000.0]
        .iter()
        .map(|lvl| pattern.iter().map(|p| 50.0 + lvl * p).collect())
        .collect();
    let refs: Vec<&[f32]> = flats.iter().map(|f| f.as_slice()).collect();
    let (m, cnt) = master_flat(&refs, Some(&bias), Combine::Median).unwrap();
    assert!(cnt.iter().all(|c| *c == 3));
    let med = robust_level(&m, None);
    assert!((med - 1.0).abs() < 1e-5, "{med}");
    // Shape preserved: ratio to the pattern is constant.
    let r0 = m[0] / pattern[0];
    assert!(m
        .iter()
        .zip(&pattern)
        .all(|(a, p)| (a / p - r0).abs() < 1e-4));
}

#[test]
fn apply_flat_fields_weights_and_masks() {
    let raw = [1100.0f32, 1100.0, 70000.0, f32::NAN, 1100.0, 1100.0];
    let bias = [100.0f32; 6];
    let flat = [1.0f32, 0.5, 1.0, 1.0, 0.01, f32::NAN];
    let det = Detector::new(2.0, 10.0, 65000.0);
    let bad = [0u8, 0, 0, 0, 0, 0];
    let c = apply(&raw, &bias, &flat, &det, Some(&bad)).unwrap();
    assert_eq!(c.science[0], 1000.0);
    assert_eq!(c.science[1], 2000.0);
    // var = (1000/2 + (10/2)^2) / flat^2
    assert!((1.0 / c.weight[0] - 525.0).abs() < 1e-3);
    assert!((1.0 / c.weight[1] - 2100.0).abs() < 1e-2);
    assert_eq!(
        c.mask,
        vec![
            0,
            0,
            MASK_SATURATED,
            MASK_NONFINITE,
            MASK_BAD_FLAT,
            MASK_BAD_FLAT
        ]
    );
    assert_eq!(&c.weight[2..], &[0.0; 4]);
    assert_eq!(c.science[3], 0.0);
    assert_eq!(c.science[4], 0.0);
    let c2 = apply(&raw, &bias, &flat, &det, Some(&[0, MASK_BAD, 0, 0, 0, 0])).unwrap();
    assert_eq!(c2.mask[1], MASK_BAD);
    assert_eq!(c2.weight[1], 0.0);
}

#[test]
fn apply_rejects_a_zero_gain_and_mismatched_sizes() {
    let e = apply(&[1.0], &[0.0], &[1.0], &Detector::new(0.0, 1.0, 1e9), None).unwrap_err();
    assert_eq!(e.to_string(), "gain_e_per_adu: must be > 0, found 0");
    let e = apply(
        &[1.0, 2.0],
        &[0.0],
        &[1.0, 1.0],
        &Detector::new(1.0, 1.0, 1e9),
        None,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "bias has 1 pixels, expected 2");
}

#[test]
fn hot_pixels_are_found_in_a_bias() {
    let mut rng = Rng(3);
    let mut b: Vec<f32> = (0..10_000)
        .map(|_| (500.0 + 3.0 * rng.gauss()) as f32)
        .collect();
    b[1234] = 600.0;
    b[77] = 530.0;
    let m = hot_pixels(&b, 6.0);
    assert_eq!(m[1234], MASK_BAD);
    assert_eq!(m[77], MASK_BAD);
    assert!(m.iter().filter(|v| **v != 0).count() <= 3);
}

#[test]
fn end_to_end_calibration_recovers_the_sky() {
    // raw = bias + flat * sky + noise; calibrating gives sky back with the predicted scatter.
    let (w, h) = (64, 64);
    let mut rng = Rng(11);
    let gain = 1.5f32;
    let rn = 5.0f32;
    let truth_flat: Vec<f32> = (0..w * h)
        .map(|i| 0.8 + 0.4 * ((i % w) as f32 / w as f32))
        .collect();
    let biases: Vec<Vec<f32>> = (0..9)
        .map(|_| {
            (0..w * h)
                .map(|_| 300.0 + (rn / gain) * rng.gauss() as f32)
                .collect()
        })
        .collect();
    let flats: Vec<Vec<f32>> = (0..7)
        .map(|_| {
            truth_flat
                .iter()
                .map(|f| 300.0 + f * 30_000.0 + (f * 30_000.0 / gain).sqrt() * rng.gauss() as f32)
                .collect()
        })
        .collect();
    let br: Vec<&[f32]> = biases.iter().map(|f| f.as_slice()).collect();
    let (mb, _) = master_bias(&br, Combine::SigmaClippedMean { sigma: 3.0 }).unwrap();
    let fr: Vec<&[f32]> = flats.iter().map(|f| f.as_slice()).collect();
    let (mf, _) = master_flat(&fr, Some(&mb), Combine::Median).unwrap();
    let sky = 1000.0f32;
    let raw: Vec<f32> = truth_flat
        .iter()
        .map(|f| {
            300.0 + f * sky + ((f * sky / gain) + (rn / gain).powi(2)).sqrt() * rng.gauss() as f32
        })
        .collect();
    let c = apply(&raw, &mb, &mf, &Detector::new(gain, rn, 65_000.0), None).unwrap();
    let level = robust_level(&c.science, None);
    // The master flat is normalised to median 1 and the truth flat has median ~1: sky comes back.
    let truth_med = robust_level(&truth_flat, None);
    assert!((level - sky * truth_med).abs() < 5.0, "{level}");
    // Flatness: left and right halves agree within noise.
    let half = |x0: usize, x1: usize| {
        let v: Vec<f32> = (0..h)
            .flat_map(|y| (x0..x1).map(move |x| (y, x)))
            .map(|(y, x)| c.science[y * w + x])
            .collect();
        v.iter().sum::<f32>() / v.len() as f32
    };
    assert!((half(0, w / 2) - half(w / 2, w)).abs() < 3.0);
    // The weights predict the scatter: chi^2 per pixel ~ 1.
    let chi2: f64 = c
        .science
        .iter()
        .zip(&c.weight)
        .map(|(s, wt)| ((*s - level) as f64).powi(2) * *wt as f64)
        .sum::<f64>()
        / (w * h) as f64;
    assert!((chi2 - 1.0).abs() < 0.1, "chi2 {chi2}");
}

/// `values` stored as FITS stores them: big-endian BITPIX 16 with BZERO 32768 (raw frames), or
/// float32 (masters).
fn stored_u16(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| ((*v as u16 ^ 0x8000) as i16).to_be_bytes())
        .collect()
}

fn stored_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

#[test]
fn single_pass_rows_equal_overscan_then_apply_bit_for_bit() {
    let (w, h) = (48, 37);
    let mut rng = Rng(5);
    // Serial overscan (columns beside the data) and parallel (rows below it).
    for (biassec, trimsec) in [
        ("[41:48,1:37]", "[3:40,2:36]"),
        ("[1:48,33:37]", "[2:47,1:32]"),
    ] {
        let (biassec, trimsec) = (
            parse_section(biassec).unwrap(),
            parse_section(trimsec).unwrap(),
        );
        let raw: Vec<f32> = (0..w * h)
            .map(|_| {
                let v = (1000.0 + 50.0 * rng.gauss()).round() as f32;
                if rng.uniform() < 0.01 {
                    65535.0
                } else {
                    v
                }
            })
            .collect();
        let (tw, th) = (trimsec.width(), trimsec.height());
        let bias: Vec<f32> = (0..tw * th)
            .map(|_| {
                let v = (3.0 * rng.gauss()) as f32;
                if rng.uniform() < 0.01 {
                    f32::NAN
                } else {
                    v
                }
            })
            .collect();
        let flat: Vec<f32> = (0..tw * th)
            .map(|_| match rng.uniform() {
                u if u < 0.01 => f32::NAN,
                u if u < 0.02 => 0.05,
                u if u < 0.03 => 20.0,
                _ => (1.0 + 0.1 * rng.gauss()) as f32,
            })
            .collect();
        let bad: Vec<u8> = (0..tw * th).map(|_| (rng.uniform() < 0.02) as u8).collect();
        let det = Detector::new(2.0, 5.0, 60000.0);

        let (trimmed, ..) =
            overscan_correct(&raw, w, h, biassec, trimsec, OverscanOptions::default()).unwrap();
        let want = apply(&trimmed, &bias, &flat, &det, Some(&bad)).unwrap();

        let (raw_b, bias_b, flat_b) = (stored_u16(&raw), stored_f32(&bias), stored_f32(&flat));
        let stored = |bytes, bitpix, bzero| Pixels::Stored {
            bytes,
            bitpix,
            bscale: 1.0,
            bzero,
        };
        // As FITS stores them (the one-loop kernel for a serial overscan) and decoded (the
        // row-by-row decode).
        let inputs = [
            (
                stored(&raw_b[..], 16, 32768.0),
                stored(&bias_b[..], -32, 0.0),
                stored(&flat_b[..], -32, 0.0),
            ),
            (
                Pixels::Decoded(&raw),
                Pixels::Decoded(&bias),
                Pixels::Decoded(&flat),
            ),
        ];
        for (raw_p, bias_p, flat_p) in inputs {
            let levels =
                overscan_levels(&raw_p, w, h, biassec, trimsec, OverscanOptions::default())
                    .unwrap();
            let ccd = Ccd::new(raw_p, w, trimsec, &levels, bias_p, flat_p, Some(&bad)).unwrap();
            assert_eq!((ccd.width(), ccd.height()), (tw, th));
            let (mut sci, mut wt) = (vec![0u8; 4 * tw * th], vec![0u8; 4 * tw * th]);
            let mut scratch = RowScratch::default();
            let mut stats = RowStats::NONE;
            // Blocks of 5 rows, last one short, in reverse order.
            for y0 in (0..th).step_by(5).rev() {
                let rows = y0..(y0 + 5).min(th);
                let (a, b) = (4 * rows.start * tw, 4 * rows.end * tw);
                let s = ccd.calibrate_rows(&det, rows, &mut scratch, &mut sci[a..b], &mut wt[a..b]);
                stats = stats.merge(s);
            }
            let stored_bits = |v: &[u8]| {
                v.chunks_exact(4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .collect::<Vec<_>>()
            };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(stored_bits(&sci), bits(&want.science), "science, {biassec}");
            assert_eq!(stored_bits(&wt), bits(&want.weight), "weight, {biassec}");
            assert_eq!(stats.masked, want.mask.iter().filter(|m| **m != 0).count());
            assert!(stats.masked > 0);
            let min_sat = want
                .science
                .iter()
                .zip(&want.mask)
                .filter(|(_, m)| **m & MASK_SATURATED != 0)
                .map(|(v, _)| *v)
                .fold(f32::INFINITY, f32::min);
            assert!(min_sat.is_finite());
            assert_eq!(stats.min_saturated, min_sat);
            assert_eq!(stats.max_flat, 20.0);
            let level = robust_level(&raw, None) - robust_level(&trimmed, None);
            assert_eq!(ccd.overscan_level(), level);
        }
    }
}

#[test]
fn single_pass_checks_that_the_pieces_fit() {
    let raw = vec![1.0f32; 10 * 4];
    let trimsec = parse_section("[1:8,1:4]").unwrap();
    let levels = overscan_levels(
        &Pixels::Decoded(&raw),
        10,
        4,
        parse_section("[9:10,1:4]").unwrap(),
        trimsec,
        OverscanOptions::default(),
    )
    .unwrap();
    let (ok, short) = (vec![0.0f32; 32], vec![0.0f32; 31]);
    let e = Ccd::new(
        Pixels::Decoded(&raw),
        10,
        trimsec,
        &levels,
        Pixels::Decoded(&ok),
        Pixels::Decoded(&short),
        None,
    )
    .err()
    .unwrap();
    assert_eq!(e.to_string(), "flat has 31 pixels, expected 32");
}

#[test]
fn kernel_decodes_stored_int16_as_the_fits_reader_does() {
    use super::kernel::{OffsetI16, Row, LANES};
    // Every 16-bit value, for the BZERO of unsigned frames, none, a negative one, one just
    // below 2^24 and 2^25 (sums f32 must round); the f64 decode of Pixels::read is the
    // reference.
    let bytes: Vec<u8> = (i16::MIN..=i16::MAX)
        .flat_map(|v| v.to_be_bytes())
        .collect();
    for bzero in [32768.0, 0.0, -1000.0, 16_777_216.0 - 32768.0, 33_554_432.0] {
        assert!(OffsetI16::exact_for(bzero), "{bzero}");
        let level = 12.375;
        let row = OffsetI16 {
            bytes: &bytes,
            bzero: bzero as f32,
            level,
        };
        let mut want = vec![0.0f32; bytes.len() / 2];
        Pixels::Stored {
            bytes: &bytes,
            bitpix: 16,
            bscale: 1.0,
            bzero,
        }
        .read(0, &mut want);
        for (x, w) in want.iter().enumerate() {
            assert_eq!(row.at(x).to_bits(), (w - level).to_bits(), "{bzero} {x}");
        }
        for x0 in (0..want.len() - LANES).step_by(LANES * 37) {
            let lanes = row.lanes(x0);
            for j in 0..LANES {
                assert_eq!(lanes[j].to_bits(), (want[x0 + j] - level).to_bits());
            }
        }
    }
    // Not exact in f32 (or not integral): decoded row by row instead.
    for bzero in [0.5, 16_777_217.0, 1e17] {
        assert!(!OffsetI16::exact_for(bzero), "{bzero}");
    }
}

#[test]
fn robust_level_is_the_median_of_the_finite_samples() {
    let mut rng = Rng(11);
    // Odd and even sample counts, one sample per pixel and strided (n > 2^18), with
    // negatives, both zeros, NaN and infinities among them.
    for n in [1usize, 2, 7, 1000, 1001, (1 << 18) + 5, 3 << 18] {
        let v: Vec<f32> = (0..n)
            .map(|_| match rng.uniform() {
                u if u < 0.01 => f32::NAN,
                u if u < 0.02 => f32::NEG_INFINITY,
                u if u < 0.05 => -0.0,
                u if u < 0.08 => 0.0,
                _ => (rng.gauss() * 100.0).round() as f32 * 0.25,
            })
            .collect();
        let stride = n.div_ceil(1 << 18);
        let mut finite: Vec<f32> = v
            .iter()
            .step_by(stride)
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        let want = median_in_place(&mut finite);
        let got = robust_level_of(n, |i| v[i]);
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{n}: {got} {want}"
        );
    }
    assert!(robust_level_of(3, |_| f32::NAN).is_nan());
}

#[test]
fn overscan_level_of_a_large_frame_takes_the_samples_of_robust_level() {
    // Large enough for strided samples (stride 3 in both frames, a row length that is not a
    // multiple of it), with a serial and a parallel overscan, stored and decoded.
    let (w, h) = (2080, 300);
    let mut rng = Rng(23);
    let raw: Vec<f32> = (0..w * h)
        .map(|_| (1000.0 + 30.0 * rng.gauss()).round() as f32)
        .collect();
    let raw_b = stored_u16(&raw);
    for (biassec, trimsec) in [
        ("[2049:2080,1:300]", "[1:2048,5:295]"),
        ("[3:2078,291:300]", "[3:2077,1:290]"),
    ] {
        let (biassec, trimsec) = (
            parse_section(biassec).unwrap(),
            parse_section(trimsec).unwrap(),
        );
        let (trimmed, ..) =
            overscan_correct(&raw, w, h, biassec, trimsec, OverscanOptions::default()).unwrap();
        let want = robust_level(&raw, None) - robust_level(&trimmed, None);
        let n = trimsec.width() * trimsec.height();
        let stride = sample_stride(n);
        assert!(sample_stride(w * h) > 1 && stride > 1 && trimsec.width() % stride != 0);
        let stored = Pixels::Stored {
            bytes: &raw_b,
            bitpix: 16,
            bscale: 1.0,
            bzero: 32768.0,
        };
        for pixels in [stored, Pixels::Decoded(&raw)] {
            let levels =
                overscan_levels(&pixels, w, h, biassec, trimsec, OverscanOptions::default())
                    .unwrap();
            let (bias, flat) = (vec![0.0f32; n], vec![1.0f32; n]);
            let ccd = Ccd::new(
                pixels,
                w,
                trimsec,
                &levels,
                Pixels::Decoded(&bias),
                Pixels::Decoded(&flat),
                None,
            )
            .unwrap();
            assert_eq!(ccd.overscan_level().to_bits(), want.to_bits(), "{biassec}");
        }
    }
}

#[test]
fn kernel_loop_for_any_x86_64_gives_the_bytes_of_the_dispatched_one() {
    // calibrate_row runs the AVX2 copy where the processor has it; the plain loop (SSE2)
    // must write the same bytes and count the same.
    use super::kernel::{calibrate_row, row, BigEndianF32, OffsetI16};
    let w = 2048 + 5;
    let mut rng = Rng(31);
    let raw: Vec<f32> = (0..w)
        .map(|_| match rng.uniform() {
            u if u < 0.02 => 65535.0,
            _ => (1500.0 + 40.0 * rng.gauss()).round() as f32,
        })
        .collect();
    let bias: Vec<f32> = (0..w)
        .map(|_| match rng.uniform() {
            u if u < 0.01 => f32::NAN,
            _ => (400.0 + 3.0 * rng.gauss()) as f32,
        })
        .collect();
    let flat: Vec<f32> = (0..w)
        .map(|_| match rng.uniform() {
            u if u < 0.01 => f32::INFINITY,
            u if u < 0.02 => 0.01,
            _ => (1.0 + 0.05 * rng.gauss()) as f32,
        })
        .collect();
    let bad: Vec<u8> = (0..w).map(|_| (rng.uniform() < 0.03) as u8).collect();
    let (raw_b, bias_b, flat_b) = (stored_u16(&raw), stored_f32(&bias), stored_f32(&flat));
    let model = Detector::new(1.4, 6.0, 60000.0).pixel_model();
    let r = OffsetI16 {
        bytes: &raw_b,
        bzero: 32768.0,
        level: 1003.5,
    };
    let (b, f) = (BigEndianF32(&bias_b), BigEndianF32(&flat_b));
    for bad in [None, Some(&bad[..])] {
        let mut out = [
            vec![0u8; 4 * w],
            vec![0u8; 4 * w],
            vec![0u8; 4 * w],
            vec![0u8; 4 * w],
        ];
        let [s1, w1, s2, w2] = &mut out;
        let a = calibrate_row(&model, &r, &b, &f, bad, s1, w1);
        let p = row(&model, &r, &b, &f, bad, s2, w2);
        assert_eq!((s1, w1), (s2, w2));
        assert_eq!(a, p);
        assert!(a.masked > 0 && a.min_saturated.is_finite());
    }
}
