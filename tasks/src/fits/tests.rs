//! Tests on real frames (tests/data, see its PROVENANCE.md) and on files made here.

use std::path::{Path, PathBuf};

use nearby_engine::task::TaskError;

use super::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(name)
}

const MEF: &str = "lco1m_fa05_20211008_2021SO2_raw_mef.fits";
const FZ: &str = "lco0m4_kb29_20160625_2010NY65_banzai.fits.fz";
const SAAO: &str = "ystar_saao_streak_long.fits";

/// A FITS file from cards and raw big-endian data, each padded to 2880-byte blocks.
fn fits_bytes(cards: &[&str], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cards.iter().chain(std::iter::once(&"END")) {
        out.extend(format!("{c:<80}").bytes());
    }
    while out.len() % 2880 != 0 {
        out.push(b' ');
    }
    out.extend_from_slice(data);
    while out.len() % 2880 != 0 {
        out.push(0);
    }
    out
}

fn min_max(v: &[f32]) -> (f32, f32) {
    v.iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)))
}

#[test]
fn lco_raw_mef_reads_every_amplifier_and_skips_the_empty_primary() {
    let path = data(MEF);
    let images = read_all_images(&path).unwrap();
    assert_eq!(images.len(), 4);
    for (i, im) in images.iter().enumerate() {
        assert_eq!((im.width, im.height), (544, 522));
        let o = im.header.origin().unwrap();
        assert_eq!(o.hdu, i + 1);
        assert_eq!(o.extname.as_deref(), Some("SCI"));
        assert_eq!(im.header.i64("BITPIX").unwrap(), 16);
        assert_eq!(im.header.f64("BZERO").unwrap(), 32768.0);
    }
    // Values checked with astropy (data[row, col]).
    let a = &images[0];
    assert_eq!(a.at(0, 0), 2834.0);
    assert_eq!(a.at(20, 10), 2822.0);
    assert_eq!(a.at(543, 521), 1030.0);
    assert_eq!(a.header.f64("GAIN").unwrap(), 6.42);
    assert_eq!(
        a.header.section("BIASSEC").unwrap(),
        Section {
            x1: 520,
            x2: 540,
            y1: 1,
            y2: 512
        }
    );
    // BZERO = 32768: values above 32767 come back unsigned, not wrapped.
    assert_eq!(min_max(&images[1].data), (1026.0, 65248.0));

    let primary = read_header(&path, 0).unwrap();
    assert_eq!(primary.str("OBJECT").unwrap(), "2021 SO2");
    assert_eq!(primary.f64("EXPTIME").unwrap(), 94.975);
    assert_eq!(primary.str("DATE-OBS").unwrap(), "2021-10-08T01:55:17.144");
    assert_eq!(hdu_count(&path).unwrap(), 5);

    let e = read_image(&path, 0).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}, HDU 0: NAXIS = 2 (0 x 0)", path.display())),
        "{e}"
    );
    assert!(e.contains("this HDU holds no pixels"), "{e}");
}

#[test]
fn tile_compressed_banzai_frame_reads_as_its_image() {
    let path = data(FZ);
    let im = read_first_image(&path).unwrap();
    assert_eq!((im.width, im.height), (1523, 1020));
    // The header is the image's, not the compressed table's.
    assert_eq!(im.header.i64("BITPIX").unwrap(), -32);
    assert!(!im.header.contains("ZBITPIX"));
    assert_eq!(im.header.origin().unwrap().hdu, 1);
    assert_eq!(im.header.str("OBJECT").unwrap(), "2010 NY65");
    assert_eq!(im.header.f64("EXPTIME").unwrap(), 45.265);
    assert_eq!(im.header.str("CTYPE1").unwrap(), "RA---TAN");
    assert!((im.at(0, 0) - 542.699_95).abs() < 1e-3);
    assert!((im.at(20, 10) - 609.582).abs() < 1e-3);
    let (lo, hi) = min_max(&im.data);
    assert!((lo + 4738.581).abs() < 1e-2 && (hi - 34765.273).abs() < 1e-2);
    im.check_usable().unwrap();

    // HDU 3 is the bad-pixel mask: uint8, all zero: readable, but not a usable frame.
    let bpm = read_image(&path, 3).unwrap();
    assert_eq!(bpm.header.i64("BITPIX").unwrap(), 8);
    let e = bpm.check_usable().unwrap_err();
    assert!(e.is_bad_input());
    assert_eq!(
        e.to_string(),
        format!(
            "{}, HDU 3 (BPM): no usable pixels: all 1553460 finite pixels are zero (a failed \
             readout?)",
            path.display()
        )
    );

    // HDU 2 is BANZAI's source catalog, a binary table.
    let cat = read_table(&path, "cat").unwrap();
    assert_eq!(cat.name, "CAT");
    assert_eq!(cat.nrows(), 37);
    assert_eq!(cat.columns.len(), 22);
    assert!(cat.skipped.is_empty());
    assert!((cat.f64s("X").unwrap()[0] - 368.55512325943255).abs() < 1e-12);
    assert_eq!(
        cat.column("XPEAK").unwrap().data,
        ColumnData::I64(cat_peaks(&cat))
    );
    assert_eq!(cat.f64s("XPEAK").unwrap()[0], 369.0);
    let e = read_table(&path, 1).unwrap_err().to_string();
    assert!(
        e.ends_with("HDU 1 (SCI): not a binary table HDU (it is an image)"),
        "{e}"
    );
    let e = cat.column("MAG_AUTO").unwrap_err().to_string();
    assert!(
        e.contains("no column MAG_AUTO; the columns are: X, Y, XWIN"),
        "{e}"
    );
}

fn cat_peaks(cat: &Table) -> Vec<i64> {
    match &cat.column("XPEAK").unwrap().data {
        ColumnData::I64(v) => v.clone(),
        other => panic!("XPEAK should be 64-bit integers, is {other:?}"),
    }
}

#[test]
fn saao_int16_frame_keeps_negative_values() {
    let im = read_image(&data(SAAO), 0).unwrap();
    assert_eq!((im.width, im.height), (512, 512));
    assert_eq!(im.header.i64("BITPIX").unwrap(), 16);
    assert!(!im.header.contains("BZERO"));
    assert_eq!(im.at(0, 0), 296.0);
    assert_eq!(im.at(20, 10), 294.0);
    assert_eq!(min_max(&im.data), (-401.0, 4954.0));
    assert_eq!(im.header.str("OBJECT").unwrap(), "T07490");
}

#[test]
fn every_pixel_type_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let values = [-70000.4, -1.6, -0.4, 0.0, 0.5, 1.4, 255.6, 40000.2, 1.0e6];
    let im = Image::new(3, 3, values.to_vec());
    let expect =
        |lo: f32, hi: f32| -> Vec<f32> { values.iter().map(|v| v.round().clamp(lo, hi)).collect() };
    for (pixel, want) in [
        (Pixel::U8, expect(0.0, 255.0)),
        (Pixel::I16, expect(-32768.0, 32767.0)),
        (Pixel::U16, expect(0.0, 65535.0)),
        (Pixel::I32, expect(-1.0e10, 1.0e10)),
        (Pixel::F32, values.to_vec()),
        (Pixel::F64, values.to_vec()),
    ] {
        let p = dir.path().join(format!("{pixel:?}.fits"));
        write_image(&p, &im, pixel).unwrap();
        let back = read_image(&p, 0).unwrap();
        assert_eq!(back.data, want, "{pixel:?}");
        assert_eq!(
            back.header.i64("BITPIX").unwrap(),
            pixel.bitpix(),
            "{pixel:?}"
        );
        let bzero = back.header.opt_f64("BZERO").unwrap();
        if pixel == Pixel::U16 {
            assert_eq!(bzero, Some(32768.0));
        } else {
            assert!(bzero.is_none_or(|z| z == 0.0), "{pixel:?}: BZERO {bzero:?}");
        }
    }
}

#[test]
fn headers_round_trip_with_types_comments_and_long_strings() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.fits");
    let mut im = Image::filled(4, 2, 7.0);
    let long = "a long string that does not fit on one card, so it continues on CONTINUE cards \
                as the long-string convention says";
    im.header
        .set("OBJECT", "O'Brien field", "with a quote")
        .set("EXPTIME", 120.0, "[s] exposure time")
        .set("CRVAL1", 280.123_456_789_012_3, "")
        .set("CD1_1", -9.16666666666667e-5, "")
        .set("RUN", 1000123, "run number")
        .set("FLIPPED", false, "")
        .set("LONGTXT", long, "")
        .set("ESO DET CHIP ID", "ccd42", "a HIERARCH key")
        .set("BITPIX", -64, "structural: ignored when writing");
    im.header.add_comment("made by a test");
    im.header.add_history("step 1");
    write_image(&p, &im, Pixel::F32).unwrap();
    let h = read_header(&p, 0).unwrap();
    assert_eq!(h.str("OBJECT").unwrap(), "O'Brien field");
    assert_eq!(h.card("OBJECT").unwrap().comment, "with a quote");
    assert_eq!(h.f64("EXPTIME").unwrap(), 120.0);
    assert_eq!(h.f64("CRVAL1").unwrap(), 280.123_456_789_012_3);
    assert_eq!(h.f64("CD1_1").unwrap(), -9.16666666666667e-5);
    assert_eq!(h.i64("RUN").unwrap(), 1000123);
    assert!(!h.bool("FLIPPED").unwrap());
    assert_eq!(h.str("LONGTXT").unwrap(), long);
    assert_eq!(h.str("ESO DET CHIP ID").unwrap(), "ccd42");
    assert_eq!(h.i64("BITPIX").unwrap(), -32);
    let text: Vec<_> = h
        .cards()
        .iter()
        .filter(|c| is_commentary(&c.key))
        .map(|c| (c.key.as_str(), c.comment.as_str()))
        .collect();
    assert!(text.contains(&("COMMENT", "made by a test")), "{text:?}");
    assert!(text.contains(&("HISTORY", "step 1")), "{text:?}");

    im.header.set("BAD", f64::NAN, "");
    let e = write_image(&p, &im, Pixel::F32).unwrap_err();
    assert!(!e.is_bad_input());
    assert!(e.to_string().contains("key BAD = NaN"), "{e}");
}

#[test]
fn mef_round_trips_plain_and_tile_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let mut primary = Header::new();
    primary
        .set("OBJECT", "field 1", "")
        .set("IMAGETYP", "object", "");
    let ccds: Vec<Image> = (0..3)
        .map(|k| {
            let data = (0..200 * 100)
                .map(|i| (1500 + (i * 7919 + k * 104729) % 97) as f32)
                .collect();
            let mut im = Image::new(200, 100, data);
            // Above 32767: stored through BZERO = 32768.
            im.data[5] = 65000.0;
            im.header
                .set("EXTNAME", format!("CCD{}", k + 1), "")
                .set("IMAGEID", k as i64 + 1, "");
            im
        })
        .collect();
    let plain = dir.path().join("r1.fits");
    let packed = dir.path().join("r1.fits.fz");
    write_mef(&plain, &primary, &ccds, Pixel::U16).unwrap();
    write_mef(&packed, &primary, &ccds, Pixel::U16).unwrap();
    for p in [&plain, &packed] {
        let back = read_all_images(p).unwrap();
        assert_eq!(back.len(), 3);
        for (k, (a, b)) in ccds.iter().zip(&back).enumerate() {
            assert_eq!(
                a.data,
                b.data,
                "{} CCD {k}: integers compress losslessly",
                p.display()
            );
            assert_eq!(b.header.str("EXTNAME").unwrap(), format!("CCD{}", k + 1));
            assert_eq!(b.header.i64("IMAGEID").unwrap(), k as i64 + 1);
            assert_eq!(b.header.origin().unwrap().hdu, k + 1);
        }
        assert_eq!(read_header(p, 0).unwrap().str("OBJECT").unwrap(), "field 1");
    }
    // The .fz file really is compressed: its HDUs are binary tables holding ZIMAGE.
    let raw = std::fs::read(&packed).unwrap();
    assert!(raw.windows(8).any(|w| w == b"ZIMAGE  "));
    assert!(raw.len() < std::fs::metadata(&plain).unwrap().len() as usize);

    // A single float image to .fz: quantized as fpack does, close to the input.
    let smooth = Image::new(
        64,
        64,
        (0..4096)
            .map(|i| 1000.0 + (i as f32 * 0.37).sin() * 50.0)
            .collect(),
    );
    let p = dir.path().join("f.fits.fz");
    write_image(&p, &smooth, Pixel::F32).unwrap();
    let back = read_first_image(&p).unwrap();
    let worst = smooth
        .data
        .iter()
        .zip(&back.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1.0, "float compression error {worst}");
}

#[test]
fn tables_round_trip_with_units() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cat.fits");
    let t = Table::new("LDAC_OBJECTS")
        .with("NUMBER", "", vec![1i32, 2, 3])
        .with("X_IMAGE", "pixel", vec![10.25f64, 20.5, 30.75])
        .with("MAG_AUTO", "mag", vec![18.5f32, 19.25, 21.0])
        .with("FLAGS", "", vec![0i16, 2, 16])
        .with("ID64", "", vec![1i64 << 40, -5, 0])
        .with(
            "NAME",
            "",
            vec!["star".to_owned(), "".to_owned(), "asteroid 1".to_owned()],
        );
    let mut primary = Header::new();
    primary.set("ORIGIN", "nearby", "");
    write_tables(
        &p,
        &primary,
        &[t.clone(), Table::new("EMPTY").with("A", "", vec![0f64; 0])],
    )
    .unwrap();
    let back = read_table(&p, 1).unwrap();
    assert_eq!(back.name, "LDAC_OBJECTS");
    assert_eq!(back.columns, t.columns);
    assert_eq!(back.column("x_image").unwrap().unit, "pixel");
    let empty = read_table(&p, "EMPTY").unwrap();
    assert_eq!(empty.nrows(), 0);
    assert_eq!(read_header(&p, 0).unwrap().str("ORIGIN").unwrap(), "nearby");

    let ragged = Table::new("R")
        .with("A", "", vec![1.0f64, 2.0])
        .with("B", "", vec![1.0f64]);
    let e = write_tables(&p, &Header::new(), &[ragged])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("table R: column B has 1 rows, the first column has 2"),
        "{e}"
    );
}

// ---- bad input: each case names the file, the HDU and (where one is at fault) the key ----

/// Reads a frame as a task would; returns the error message after checking that the engine
/// would quarantine the frame.
fn bad(path: &Path) -> String {
    let e = read_first_image(path)
        .and_then(|im| im.check_usable().map(|_| im))
        .unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    let msg = e.to_string();
    assert!(matches!(TaskError::from(e), TaskError::BadInput(m) if m.ends_with(&msg)));
    msg
}

#[test]
fn truncated_files_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(data(SAAO)).unwrap();
    let p = dir.path().join("half.fits");
    std::fs::write(&p, &whole[..whole.len() / 2]).unwrap();
    let e = bad(&p);
    assert!(
        e.starts_with(&format!("{}, HDU 0: the file is truncated", p.display())),
        "{e}"
    );

    // A MEF cut inside the last amplifier's pixels.
    let whole = std::fs::read(data(MEF)).unwrap();
    let p = dir.path().join("cut_mef.fits");
    std::fs::write(&p, &whole[..whole.len() - 300_000]).unwrap();
    let e = read_all_images(&p).unwrap_err();
    assert!(e.is_bad_input());
    let e = e.to_string();
    assert!(
        e.contains(
            "cut_mef.fits, HDU 4: the file is truncated or unreadable: the file has \
                    2012640 bytes but this HDU's data ends at byte 2312640"
        ),
        "{e}"
    );

    let p = dir.path().join("empty.fits");
    std::fs::write(&p, b"").unwrap();
    assert_eq!(
        bad(&p),
        format!(
            "{}, HDU 0: the file is truncated or unreadable: the file is empty",
            p.display()
        )
    );
}

#[test]
fn garbage_is_not_fits() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage.fits");
    std::fs::write(&p, "this is not a FITS file\n".repeat(300)).unwrap();
    let e = bad(&p);
    assert!(
        e.starts_with(&format!("{}, HDU 0: not a valid FITS header", p.display())),
        "{e}"
    );
}

#[test]
fn wrong_naxis_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let cube = fits_bytes(
        &[
            "SIMPLE  =                    T",
            "BITPIX  =                   16",
            "NAXIS   =                    3",
            "NAXIS1  =                    4",
            "NAXIS2  =                    3",
            "NAXIS3  =                    2",
        ],
        &[1u8; 48],
    );
    let p = dir.path().join("cube.fits");
    std::fs::write(&p, cube).unwrap();
    assert_eq!(
        bad(&p),
        format!(
            "{}, HDU 0: NAXIS = 3 (4 x 3 x 2): expected a 2-D image",
            p.display()
        )
    );

    let line = fits_bytes(
        &[
            "SIMPLE  =                    T",
            "BITPIX  =                    8",
            "NAXIS   =                    1",
            "NAXIS1  =                   10",
        ],
        &[1u8; 10],
    );
    let p = dir.path().join("line.fits");
    std::fs::write(&p, line).unwrap();
    let e = read_image(&p, 0).unwrap_err().to_string();
    assert!(
        e.contains("HDU 0: NAXIS = 1 (10): expected a 2-D image"),
        "{e}"
    );

    // A degenerate third axis of length 1 is a 2-D image.
    let flat = fits_bytes(
        &[
            "SIMPLE  =                    T",
            "BITPIX  =                    8",
            "NAXIS   =                    3",
            "NAXIS1  =                    2",
            "NAXIS2  =                    2",
            "NAXIS3  =                    1",
        ],
        &[1, 2, 3, 4],
    );
    let p = dir.path().join("flat.fits");
    std::fs::write(&p, flat).unwrap();
    assert_eq!(read_image(&p, 0).unwrap().data, vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn unsupported_bitpix_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    for (bitpix, bytes) in [(64, 8), (12, 2)] {
        let f = fits_bytes(
            &[
                "SIMPLE  =                    T",
                &format!("BITPIX  = {bitpix:>20}"),
                "NAXIS   =                    2",
                "NAXIS1  =                    2",
                "NAXIS2  =                    2",
            ],
            &vec![0u8; 4 * bytes],
        );
        let p = dir.path().join(format!("b{bitpix}.fits"));
        std::fs::write(&p, f).unwrap();
        assert_eq!(
            bad(&p),
            format!(
                "{}, HDU 0: BITPIX = {bitpix} is not supported: expected 8, 16, 32, -32 or -64",
                p.display()
            )
        );
    }
}

#[test]
fn nan_and_all_zero_frames_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.fits");
    write_image(&p, &Image::filled(8, 8, f32::NAN), Pixel::F32).unwrap();
    assert_eq!(
        bad(&p),
        format!(
            "{}, HDU 0: no usable pixels: all 64 are NaN or infinite",
            p.display()
        )
    );
    let p = dir.path().join("zero.fits");
    write_image(&p, &Image::filled(8, 8, 0.0), Pixel::I16).unwrap();
    assert!(bad(&p).contains("all 64 finite pixels are zero"));

    // Some NaN pixels are fine (masked regions).
    let mut im = Image::filled(8, 8, 100.0);
    im.data[3] = f32::NAN;
    im.check_usable().unwrap();
}

#[test]
fn missing_keys_and_hdus_are_named() {
    let path = data(SAAO);
    let im = read_image(&path, 0).unwrap();
    let e = im.header.f64("GAIN").unwrap_err();
    assert!(e.is_bad_input());
    assert_eq!(
        e.to_string(),
        format!("{}, HDU 0: key GAIN is missing", path.display())
    );
    assert!(matches!(TaskError::from(e), TaskError::BadInput(_)));

    let e = read_image(&path, 3).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: there is no HDU 3: the file has 1 (numbered from 0, the primary)",
            path.display()
        )
    );

    let e = read_image(Path::new("/nonexistent/r1.fits"), 0).unwrap_err();
    assert!(!e.is_bad_input(), "a missing file is not quarantined: {e}");
    assert!(matches!(TaskError::from(e), TaskError::Failed(_)));
}

// ---- the native reader and writer of plain files against cfitsio ----

#[test]
fn native_reader_gives_what_cfitsio_gives_on_real_frames() {
    for name in [MEF, SAAO] {
        let path = data(name);
        assert!(native::scan(&path).is_some(), "{name} is a plain file");
        let native = read_all_images(&path).unwrap();
        let cfitsio = read_all_images_cfitsio(&path).unwrap();
        assert_eq!(native, cfitsio, "{name}");
    }
    // Tables and tile compression are cfitsio's.
    assert!(native::scan(&data(FZ)).is_none());
}

#[test]
fn native_reader_applies_bscale_and_bzero_of_every_bitpix() {
    let dir = tempfile::tempdir().unwrap();
    let be16: Vec<u8> = [-3i16, 0, 7, 32767]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let be32: Vec<u8> = [-70000i32, 1, 2, 3]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let bef: Vec<u8> = [1.5f32, -2.25, f32::NAN, 1e30]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let bed: Vec<u8> = [0.1f64, -2.0, 1e300, 3.0]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    for (bitpix, bytes) in [
        (8, vec![0u8, 1, 200, 255]),
        (16, be16),
        (32, be32),
        (-32, bef),
        (-64, bed),
    ] {
        for scaling in [
            &[][..],
            &[
                "BSCALE  =                  2.5",
                "BZERO   =               -100.0",
            ][..],
        ] {
            let bp = format!("BITPIX  = {bitpix:>20}");
            let mut cards = vec!["SIMPLE  =                    T", &bp];
            cards.extend([
                "NAXIS   =                    2",
                "NAXIS1  =                    2",
                "NAXIS2  =                    2",
            ]);
            cards.extend(scaling);
            let p = dir.path().join(format!("b{bitpix}_{}.fits", scaling.len()));
            std::fs::write(&p, fits_bytes(&cards, &bytes)).unwrap();
            let native = read_image(&p, 0).unwrap();
            let cfitsio = read_image_cfitsio(&p, 0).unwrap();
            let same = native
                .data
                .iter()
                .zip(&cfitsio.data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "BITPIX {bitpix} {scaling:?}: {:?} vs {:?}",
                native.data, cfitsio.data
            );
            assert_eq!(native.header, cfitsio.header);
        }
    }
}

/// Headers that exercise cfitsio's formatting: long strings, quotes, HIERARCH, commentary.
fn rich_header(k: usize) -> Header {
    let mut h = Header::new();
    h.set("EXTNAME", format!("CCD{k}"), "")
        .set("OBJECT", "O'Brien field", "with a quote")
        .set("EXPTIME", 120.0, "[s] exposure time")
        .set("CD1_1", -9.16666666666667e-5, "")
        .set("RUN", 1000123 + k as i64, "run number")
        .set("FLIPPED", false, "")
        .set("LONGTXT", "a long string that does not fit on one card, so it continues on CONTINUE cards as the convention says", "")
        .set("ESO DET CHIP ID", "ccd42", "a HIERARCH key")
        .set("ESO DET WIN NX", 2048, "")
        .set("BZERO", 5.0, "structural: not copied");
    h.add_comment("made by a test");
    h.add_history("nearby calibrate: overscan, master bias, master flat, and a history line long enough to be split by cfitsio");
    h
}

/// Asserts two files are equal, showing the 80 bytes around the first difference.
fn same_bytes(a: &Path, b: &Path, what: &str) {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        let card = |v: &[u8]| {
            String::from_utf8_lossy(&v[i / 80 * 80..(i / 80 * 80 + 80).min(v.len())]).into_owned()
        };
        panic!("{what}: byte {i} differs:\n{:?}\n{:?}", card(&a), card(&b));
    }
    assert_eq!(a.len(), b.len(), "{what}: lengths");
}

#[test]
fn native_writer_is_byte_for_byte_cfitsio() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..37 * 23)
        .map(|i| ((i * 7919) % 1000) as f32 * 70.3 - 3000.0)
        .chain([f32::NAN, 1e6, -1e6])
        .collect();
    let ccds: Vec<Image> = (0..2)
        .map(|k| {
            let mut im = Image::new(values.len() / 2, 2, values.clone());
            im.header = rich_header(k);
            im
        })
        .collect();
    let mut primary = rich_header(9);
    primary.remove("EXTNAME");
    for pixel in [
        Pixel::U8,
        Pixel::I16,
        Pixel::U16,
        Pixel::I32,
        Pixel::F32,
        Pixel::F64,
    ] {
        let (a, b) = (
            dir.path().join("native.fits"),
            dir.path().join("cfitsio.fits"),
        );
        write_mef(&a, &primary, &ccds, pixel).unwrap();
        write_mef_cfitsio(&b, &primary, &ccds, pixel).unwrap();
        same_bytes(&a, &b, &format!("MEF {pixel:?}"));
        write_image(&a, &ccds[0], pixel).unwrap();
        write_image_cfitsio(&b, &ccds[0], pixel).unwrap();
        same_bytes(&a, &b, &format!("image {pixel:?}"));
    }
    let e = write_mef(
        &dir.path().join("nan.fits"),
        &primary,
        &[{
            let mut im = ccds[0].clone();
            im.header.set("BAD", f64::NAN, "");
            im
        }],
        Pixel::F32,
    )
    .unwrap_err();
    assert!(e.to_string().contains("key BAD = NaN"), "{e}");
    assert!(
        !dir.path().join("nan.fits").exists(),
        "a refused header leaves no file"
    );
}

#[test]
fn mef_writer_streams_rows_into_the_bytes_write_mef_makes() {
    let dir = tempfile::tempdir().unwrap();
    let ccds: Vec<Image> = (0..3)
        .map(|k| {
            let (w, h) = (37 + k, 23);
            let data = (0..w * h)
                .map(|i| ((i * 7919 + k) % 1000) as f32 * 70.3 - 3000.0)
                .collect();
            let mut im = Image::new(w, h, data);
            im.header = rich_header(k);
            im
        })
        .collect();
    let mut primary = rich_header(9);
    primary.remove("EXTNAME");
    for pixel in [Pixel::I16, Pixel::F32, Pixel::F64] {
        let (a, b) = (dir.path().join("mef.fits"), dir.path().join("rows.fits"));
        write_mef(&a, &primary, &ccds, pixel).unwrap();
        let mut w = MefWriter::create(&b, &primary).unwrap();
        let mut scratch = Vec::new();
        for im in &ccds {
            // Reserved with a placeholder header of the same size, rows out of order.
            let mut first = im.header.clone();
            first.set("EXTNAME", "PLACEHOLDER", "");
            let slot = w.add_image(&first, im.width, im.height, pixel).unwrap();
            for y in (0..im.height).step_by(5).rev() {
                let rows = &im.data[y * im.width..((y + 5).min(im.height)) * im.width];
                w.rows().write(&slot, y, rows, &mut scratch).unwrap();
            }
            let too_many = vec![0.0; im.width * 2];
            let e = w
                .rows()
                .write(&slot, im.height - 1, &too_many, &mut scratch);
            assert!(e.unwrap_err().to_string().contains("do not fit whole rows"));
            w.rewrite_header(&slot, &im.header).unwrap();
        }
        drop(w);
        same_bytes(&a, &b, &format!("rows {pixel:?}"));
        // Read back in place: the same images as read_all_images gives.
        let mapped = ImageFile::open(&b).unwrap();
        assert!(mapped.is_mapped());
        let decoded = read_all_images(&b).unwrap();
        assert_eq!(mapped.len(), decoded.len());
        for (m, d) in mapped.images().zip(&decoded) {
            assert_eq!(
                (m.width, m.height, m.header),
                (d.width, d.height, &d.header)
            );
            let mut px = vec![0.0; m.pixels.len()];
            m.pixels.read(0, &mut px);
            assert_eq!(px, d.data);
        }
    }
}

#[test]
fn image_file_decodes_compressed_files_and_names_bad_ones() {
    let path = data(FZ);
    let f = ImageFile::open(&path).unwrap();
    assert!(!f.is_mapped());
    let d = read_all_images(&path).unwrap();
    assert_eq!(f.len(), d.len());
    assert!(matches!(f.image(0).pixels, Pixels::Decoded(p) if p == &d[0].data[..]));
    // Every pixel zero: the same verdict as Image::check_usable.
    let zero = dir_file(&fits_bytes(
        &[
            "SIMPLE  =                    T",
            "BITPIX  =                   16",
            "NAXIS   =                    2",
            "NAXIS1  =                    4",
            "NAXIS2  =                    2",
        ],
        &[0u8; 16],
    ));
    let f = ImageFile::open(zero.path()).unwrap();
    let e = f.image(0).check_usable().unwrap_err().to_string();
    assert_eq!(
        e,
        read_all_images(zero.path()).unwrap()[0]
            .check_usable()
            .unwrap_err()
            .to_string()
    );
    assert!(e.contains("all 8 finite pixels are zero"), "{e}");
}

/// A temporary file holding `bytes`.
fn dir_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".fits").tempfile().unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
    f
}

#[test]
fn stored_check_usable_stops_at_a_usable_pixel_and_counts_a_bad_frame_to_the_end() {
    // 3 blocks of pixels and a bit: zeros and NaNs, with (or without) one usable pixel last.
    let n = 3 * 4096 + 7;
    let frame = |last: f32| {
        let data: Vec<u8> = (0..n)
            .map(|i| match i {
                i if i == n - 1 => last,
                i if i % 3 == 0 => f32::NAN,
                _ => 0.0,
            })
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let cards = [
            "SIMPLE  =                    T".to_string(),
            "BITPIX  =                  -32".to_string(),
            "NAXIS   =                    2".to_string(),
            format!("NAXIS1  = {n:>20}"),
            "NAXIS2  =                    1".to_string(),
        ];
        let cards: Vec<&str> = cards.iter().map(|c| c.as_str()).collect();
        dir_file(&fits_bytes(&cards, &data))
    };
    let good = frame(2.5);
    let f = ImageFile::open(good.path()).unwrap();
    assert!(f.is_mapped());
    f.image(0).check_usable().unwrap();
    let bad = frame(0.0);
    let f = ImageFile::open(bad.path()).unwrap();
    let e = f.image(0).check_usable().unwrap_err().to_string();
    let finite = (0..n).filter(|i| i % 3 != 0 || *i == n - 1).count();
    assert!(
        e.contains(&format!("all {finite} finite pixels are zero")),
        "{e}"
    );
    assert_eq!(
        e,
        read_all_images(bad.path()).unwrap()[0]
            .check_usable()
            .unwrap_err()
            .to_string()
    );
}

#[test]
fn one_stored_pixel_decodes_as_a_row_of_them() {
    // Every BITPIX, scaled and not, with values at the ends of each type's range.
    let values: [f64; 6] = [0.0, 1.0, -1.0, 127.0, -32768.0, 32767.0];
    for bitpix in [8i64, 16, 32, -32, -64] {
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| match bitpix {
                8 => vec![v.rem_euclid(256.0) as u8],
                16 => (*v as i16).to_be_bytes().to_vec(),
                32 => (*v as i32).wrapping_mul(65537).to_be_bytes().to_vec(),
                -32 => (*v as f32 * 1.25).to_be_bytes().to_vec(),
                _ => (v * 1.0e-3 + 1.0e9).to_be_bytes().to_vec(),
            })
            .collect();
        for (bscale, bzero) in [(1.0, 0.0), (1.0, 32768.0), (0.37, -12.5)] {
            let p = Pixels::Stored {
                bytes: &bytes,
                bitpix,
                bscale,
                bzero,
            };
            let mut row = vec![0.0f32; values.len()];
            p.read(0, &mut row);
            for (i, want) in row.iter().enumerate() {
                assert_eq!(
                    p.get(i).to_bits(),
                    want.to_bits(),
                    "{bitpix} {bscale} {bzero} {i}"
                );
            }
        }
    }
}
