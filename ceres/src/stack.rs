//! A detection's cutout stack: the same patch of sky in every exposure of its field, the
//! exposure where it was detected first. Stored as a FITS cube (the layout is in
//! `docs/ceres.md`) and normalised robustly for the network.
//!
//! Cube layout: primary HDU, BITPIX -32, NAXIS1 = NAXIS2 = the cutout size, NAXIS3 = exposures;
//! plane 0 is the detection's exposure, then the others in time order. Keys: DETID (detection
//! id), NIGHT (evening date), RUN, CCDNAME, NUMBER (catalog row), MJD-OBS (start of the detection's exposure), XDET/YDET (FITS pixel of the
//! detection in its frame), MJDn and DXn/DYn (plane n's mid-time and its shift from plane 0 in
//! pixels), LINEDETS and LINELEN (the satellite line: transients of the detection's exposure on
//! one line through it and the length of their run, `crate::lines`), and when labelled LABEL (`asteroid` or `artifact`), KIND (what it is: asteroid,
//! star, cosmic_ray, hot_pixel, bad_column, bleed, satellite, dust_ring, noise) and LABELSRC
//! (where the label came from). Optional header-only extensions WCS1..WCSn hold each plane's
//! TAN WCS in cutout pixels.

use std::path::Path;

use crate::lines::Line;
use nearby_tasks::fits::{read_cube, write_cube, Cube, FitsError, Header, Image};

/// The two classes: what CERES is asked to separate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Artifact = 0,
    Asteroid = 1,
}

impl Label {
    pub fn name(self) -> &'static str {
        match self {
            Label::Artifact => "artifact",
            Label::Asteroid => "asteroid",
        }
    }
    pub fn parse(s: &str) -> Option<Label> {
        match s.trim().to_ascii_lowercase().as_str() {
            "asteroid" | "valid" | "1" => Some(Label::Asteroid),
            "artifact" | "invalid" | "0" => Some(Label::Artifact),
            _ => None,
        }
    }
}

/// One detection's cutouts, in calibrated ADU.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub id: String,
    pub night: String,
    pub run: i64,
    pub ccd: String,
    pub number: i64,
    /// MJD-OBS (exposure start) of the detection's exposure, as its catalog has it.
    pub mjd_obs: f64,
    /// FITS pixel of the detection in its (trimmed) frame.
    pub x: f64,
    pub y: f64,
    pub size: usize,
    pub depth: usize,
    /// `depth` planes of `size` x `size`, plane 0 the detection's exposure.
    pub pixels: Vec<f32>,
    pub mjd: Vec<f64>,
    /// Shift of each plane's centre from plane 0's (registration), pixels.
    pub shift: Vec<(f64, f64)>,
    /// Transients of the detection's exposure and CCD on one straight line through it, and
    /// the length of their run ([`crate::lines`]): tens to hundreds over the frame on a
    /// satellite trail; `None` in cubes written before the count existed (no LINEDETS key).
    pub line: Option<Line>,
    pub label: Option<Label>,
    /// What the detection is (`asteroid`, `star`, `cosmic_ray`, ...), when known.
    pub kind: String,
    /// Where the label came from (`simulator truth`, `MPC report`, ...).
    pub label_source: String,
}

impl Stack {
    /// The cube and its header as the layout above.
    pub fn to_cube(&self) -> Cube {
        let mut h = Header::new();
        h.set("DETID", self.id.as_str(), "detection id")
            .set("NIGHT", self.night.as_str(), "evening date of the night")
            .set("RUN", self.run, "run number of the detection's exposure")
            .set("CCDNAME", self.ccd.as_str(), "CCD of the detection")
            .set("NUMBER", self.number, "catalog row NUMBER of the detection")
            .set(
                "MJD-OBS",
                self.mjd_obs,
                "[d] start of the detection's exposure",
            )
            .set("XDET", self.x, "[px] detection X in its frame (FITS)")
            .set("YDET", self.y, "[px] detection Y in its frame (FITS)")
            .set("DETPLANE", 0i64, "plane of the detection's exposure");
        for (k, m) in self.mjd.iter().enumerate() {
            h.set(
                &format!("MJD{}", k + 1),
                *m,
                "[d] mid-exposure MJD of plane",
            );
        }
        for (k, (dx, dy)) in self.shift.iter().enumerate() {
            h.set(&format!("DX{}", k + 1), *dx, "[px] plane centre shift in X");
            h.set(&format!("DY{}", k + 1), *dy, "[px] plane centre shift in Y");
        }
        if let Some(l) = self.line {
            h.set(
                "LINEDETS",
                l.members as i64,
                "transients of this exposure on a line through it",
            );
            h.set(
                "LINELEN",
                l.length_px,
                "[px] length of their run along the line",
            );
        }
        if let Some(l) = self.label {
            h.set("LABEL", l.name(), "asteroid or artifact");
        }
        if !self.kind.is_empty() {
            h.set("KIND", self.kind.as_str(), "what the detection is");
        }
        if !self.label_source.is_empty() {
            h.set(
                "LABELSRC",
                self.label_source.as_str(),
                "where the label came from",
            );
        }
        Cube {
            width: self.size,
            height: self.size,
            planes: self.depth,
            data: self.pixels.clone(),
            header: h,
        }
    }

    pub fn write(&self, path: &Path, wcs: &[Header]) -> Result<(), FitsError> {
        let c = self.to_cube();
        // Each plane again as a 2-D image under its WCS header (WCS readers want pixels).
        let planes: Vec<Image> = wcs
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let mut im = Image::new(c.width, c.height, c.plane(k.min(c.planes - 1)).to_vec());
                im.header = h.clone();
                im
            })
            .collect();
        write_cube(path, &c.header, c.width, c.height, &c.data, &planes)
    }

    /// Reads a cutout cube. Errors name the file, HDU and key.
    pub fn read(path: &Path) -> Result<Stack, FitsError> {
        let c = read_cube(path, 0)?;
        let h = &c.header;
        if c.width != c.height {
            return Err(FitsError::BadData {
                at: h.loc(),
                what: format!(
                    "a {}x{} cutout: expected square planes (NAXIS1 = NAXIS2)",
                    c.width, c.height
                ),
            });
        }
        let opt = |k: &str| h.opt_f64(k);
        let mjd = (1..=c.planes)
            .map(|k| opt(&format!("MJD{k}")).map(|v| v.unwrap_or(f64::NAN)))
            .collect::<Result<Vec<_>, _>>()?;
        let shift = (1..=c.planes)
            .map(|k| {
                Ok((
                    opt(&format!("DX{k}"))?.unwrap_or(0.0),
                    opt(&format!("DY{k}"))?.unwrap_or(0.0),
                ))
            })
            .collect::<Result<Vec<_>, FitsError>>()?;
        let line = match (opt("LINEDETS")?, opt("LINELEN")?) {
            (Some(n), Some(len))
                if n >= 0.0 && n.fract() == 0.0 && n < 1e9 && len >= 0.0 && len.is_finite() =>
            {
                Some(Line {
                    members: n as usize,
                    length_px: len,
                })
            }
            (None, None) => None,
            (n, len) => {
                return Err(FitsError::BadKey {
                    at: h.loc(),
                    key: "LINEDETS".into(),
                    found: format!("LINEDETS {n:?}, LINELEN {len:?}"),
                    expected:
                        "both or neither: a whole number of detections >= 0 and a length in px >= 0",
                })
            }
        };
        let label = match h.opt_str("LABEL")? {
            Some(s) => Some(Label::parse(&s).ok_or_else(|| FitsError::BadKey {
                at: h.loc(),
                key: "LABEL".into(),
                found: format!("'{s}'"),
                expected: "'asteroid' or 'artifact'",
            })?),
            None => None,
        };
        Ok(Stack {
            id: h.str("DETID")?,
            night: h.opt_str("NIGHT")?.unwrap_or_default(),
            run: h.opt_f64("RUN")?.unwrap_or(0.0) as i64,
            ccd: h.opt_str("CCDNAME")?.unwrap_or_default(),
            number: h.opt_f64("NUMBER")?.unwrap_or(0.0) as i64,
            mjd_obs: opt("MJD-OBS")?.unwrap_or(f64::NAN),
            x: opt("XDET")?.unwrap_or(f64::NAN),
            y: opt("YDET")?.unwrap_or(f64::NAN),
            size: c.width,
            depth: c.planes,
            pixels: c.data,
            mjd,
            shift,
            line,
            label,
            kind: h.opt_str("KIND")?.unwrap_or_default(),
            label_source: h.opt_str("LABELSRC")?.unwrap_or_default(),
        })
    }

    /// The network's input: the central `size` x `size` of each plane, normalised robustly
    /// (see [`normalise_plane`]), then, with `context` > 0, the central `context` x `context`
    /// of each plane block-averaged down to `size` x `size` (one more channel per exposure; a
    /// multiple of `size`). With context, each plane is normalised over its central `context`
    /// px and both channels are cut from that. `None` when the stack is smaller than asked.
    pub fn input(&self, size: usize, depth: usize, context: usize) -> Option<Vec<f32>> {
        let region = size.max(context);
        if self.size < region
            || self.depth < depth
            || (context > 0 && !context.is_multiple_of(size))
        {
            return None;
        }
        let channels = if context > 0 { 2 * depth } else { depth };
        let mut out = vec![0f32; channels * size * size];
        let mut normed = Vec::with_capacity(region * region);
        let off = (self.size - region) / 2;
        for z in 0..depth {
            let plane = &self.pixels[z * self.size * self.size..(z + 1) * self.size * self.size];
            normed.clear();
            for y in off..off + region {
                normed.extend_from_slice(&plane[y * self.size + off..y * self.size + off + region]);
            }
            normalise_plane(&mut normed);
            let centre = (region - size) / 2;
            let dst = &mut out[z * size * size..(z + 1) * size * size];
            for (y, row) in dst.chunks_exact_mut(size).enumerate() {
                let src = (centre + y) * region + centre;
                row.copy_from_slice(&normed[src..src + size]);
            }
            if context > 0 {
                let f = context / size;
                let dst = &mut out[(depth + z) * size * size..(depth + z + 1) * size * size];
                for (k, v) in dst.iter_mut().enumerate() {
                    let (x, y) = (k % size, k / size);
                    let mut acc = 0.0;
                    for row in normed[y * f * region..].chunks(region).take(f) {
                        acc += row[x * f..x * f + f].iter().sum::<f32>();
                    }
                    *v = acc / (f * f) as f32;
                }
            }
        }
        Some(out)
    }
}

/// Robust normalisation of one plane: subtract its median (the sky), divide by 1.4826 x MAD (the
/// noise), then compress with asinh(z / 3) so that a saturated star and a 3-sigma asteroid both
/// land in a range the network handles (asinh is linear near 0 and logarithmic far out).
/// Non-finite pixels (off the frame) become 0, the sky.
pub fn normalise_plane(p: &mut [f32]) {
    let mut v: Vec<f32> = p.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        p.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let med = median(&mut v);
    for x in v.iter_mut() {
        *x = (*x - med).abs();
    }
    let sigma = (1.4826 * median(&mut v)).max(1e-6);
    for x in p.iter_mut() {
        *x = if x.is_finite() {
            ((*x - med) / sigma / 3.0).asinh()
        } else {
            0.0
        };
    }
}

fn median(v: &mut [f32]) -> f32 {
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    *m
}
