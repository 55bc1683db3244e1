//! The source catalog, with SExtractor's column names, units and conventions.

/// One detected source. Field names are SExtractor's column names in lower case.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Running object number, 1-based.
    pub number: u32,
    /// Isophotal barycentre (filtered detection pixels), 1-based pixel coordinates.
    pub x_image: f64,
    pub y_image: f64,
    /// Gaussian-windowed centroid, 1-based.
    pub xwin_image: f64,
    pub ywin_image: f64,
    /// Variances and covariance of the windowed centroid (px^2).
    pub errx2win_image: f64,
    pub erry2win_image: f64,
    pub errxywin_image: f64,
    /// Variances and covariance of the isophotal barycentre (px^2).
    pub errx2_image: f64,
    pub erry2_image: f64,
    pub errxy_image: f64,
    /// Second moments of the isophotal profile (px^2).
    pub x2_image: f64,
    pub y2_image: f64,
    pub xy_image: f64,
    /// Semi-major and semi-minor axes (RMS along the principal axes, px).
    pub a_image: f64,
    pub b_image: f64,
    /// Position angle of the major axis, degrees counter-clockwise from x, -90..90.
    pub theta_image: f64,
    /// Ellipse parameters: cxx x^2 + cyy y^2 + cxy x y = R^2.
    pub cxx_image: f64,
    pub cyy_image: f64,
    pub cxy_image: f64,
    /// Bounding box of the isophotal footprint, 1-based inclusive.
    pub xmin_image: i32,
    pub ymin_image: i32,
    pub xmax_image: i32,
    pub ymax_image: i32,
    /// Pixels of the footprint above the (unfiltered) analysis threshold.
    pub isoarea_image: i32,
    /// Pixels in the footprint (detection pixels, as deblended).
    pub npix: i32,
    pub flux_iso: f64,
    pub fluxerr_iso: f64,
    pub mag_iso: f64,
    pub magerr_iso: f64,
    pub flux_auto: f64,
    pub fluxerr_auto: f64,
    pub mag_auto: f64,
    pub magerr_auto: f64,
    /// Kron factor of the AUTO aperture, in units of A and B (0 when the flux is not positive).
    pub kron_radius: f64,
    /// Radius enclosing half of FLUX_AUTO (px).
    pub flux_radius: f64,
    /// One value per aperture of `Catalog::apertures_px`.
    pub flux_aper: Vec<f64>,
    pub fluxerr_aper: Vec<f64>,
    pub mag_aper: Vec<f64>,
    pub magerr_aper: Vec<f64>,
    /// Peak value above the background (unfiltered).
    pub flux_max: f64,
    /// Background level at the object (ADU).
    pub background: f64,
    /// Detection threshold above the background (ADU).
    pub threshold: f64,
    /// FWHM from a Gaussian fit of the core's profile (px).
    pub fwhm_image: f64,
    pub elongation: f64,
    pub ellipticity: f64,
    /// S/N of the AUTO flux (FLUX_AUTO / FLUXERR_AUTO).
    pub snr_auto: f64,
    /// FLAGS bits (see `FLAG_*`).
    pub flags: u16,
    /// Sky position (degrees) when a WCS is applied with `Catalog::set_world`.
    pub alpha_j2000: Option<f64>,
    pub delta_j2000: Option<f64>,
}

/// A source catalog plus the frame-level quantities the writer puts in its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub sources: Vec<Source>,
    /// PHOT_APERTURES diameters (px), the order of `flux_aper`.
    pub apertures_px: Vec<f32>,
    /// SExtractor's SEXBKGND and SEXBKDEV: global background level and RMS.
    pub background_level: f32,
    pub background_rms: f32,
    /// SEXTHLD: detection threshold above the background.
    pub threshold: f32,
    /// Whether ALPHA_J2000/DELTA_J2000 were filled.
    pub has_world: bool,
}

/// Storage type of a column in a FITS binary table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `J`
    I32,
    /// `I`
    I16,
    /// `E`
    F32,
    /// `D`
    F64,
}

/// A catalog column: SExtractor's name, unit, type, repeat count (vector columns such as
/// FLUX_APER) and description.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: &'static str,
    pub unit: &'static str,
    pub ty: ColumnType,
    pub repeat: usize,
    pub description: &'static str,
}

type Get = fn(&Source) -> f64;

/// Scalar columns in catalog order: name, unit, type, description, accessor.
const SCALARS: &[(&str, &str, ColumnType, &str, Get)] = {
    use ColumnType::*;
    &[
        ("NUMBER", "", I32, "Running object number", |s| {
            s.number as f64
        }),
        ("X_IMAGE", "pixel", F64, "Object position along x", |s| {
            s.x_image
        }),
        ("Y_IMAGE", "pixel", F64, "Object position along y", |s| {
            s.y_image
        }),
        (
            "XWIN_IMAGE",
            "pixel",
            F64,
            "Windowed position estimate along x",
            |s| s.xwin_image,
        ),
        (
            "YWIN_IMAGE",
            "pixel",
            F64,
            "Windowed position estimate along y",
            |s| s.ywin_image,
        ),
        (
            "ERRX2WIN_IMAGE",
            "pixel**2",
            F64,
            "Variance of windowed pos along x",
            |s| s.errx2win_image,
        ),
        (
            "ERRY2WIN_IMAGE",
            "pixel**2",
            F64,
            "Variance of windowed pos along y",
            |s| s.erry2win_image,
        ),
        (
            "ERRXYWIN_IMAGE",
            "pixel**2",
            F64,
            "Covariance of windowed pos between x and y",
            |s| s.errxywin_image,
        ),
        (
            "ERRX2_IMAGE",
            "pixel**2",
            F64,
            "Variance of position along x",
            |s| s.errx2_image,
        ),
        (
            "ERRY2_IMAGE",
            "pixel**2",
            F64,
            "Variance of position along y",
            |s| s.erry2_image,
        ),
        (
            "ERRXY_IMAGE",
            "pixel**2",
            F64,
            "Covariance of position between x and y",
            |s| s.errxy_image,
        ),
        ("X2_IMAGE", "pixel**2", F64, "Variance along x", |s| {
            s.x2_image
        }),
        ("Y2_IMAGE", "pixel**2", F64, "Variance along y", |s| {
            s.y2_image
        }),
        (
            "XY_IMAGE",
            "pixel**2",
            F64,
            "Covariance between x and y",
            |s| s.xy_image,
        ),
        (
            "A_IMAGE",
            "pixel",
            F32,
            "Profile RMS along major axis",
            |s| s.a_image,
        ),
        (
            "B_IMAGE",
            "pixel",
            F32,
            "Profile RMS along minor axis",
            |s| s.b_image,
        ),
        ("THETA_IMAGE", "deg", F32, "Position angle (CCW/x)", |s| {
            s.theta_image
        }),
        (
            "CXX_IMAGE",
            "pixel**(-2)",
            F32,
            "Cxx object ellipse parameter",
            |s| s.cxx_image,
        ),
        (
            "CYY_IMAGE",
            "pixel**(-2)",
            F32,
            "Cyy object ellipse parameter",
            |s| s.cyy_image,
        ),
        (
            "CXY_IMAGE",
            "pixel**(-2)",
            F32,
            "Cxy object ellipse parameter",
            |s| s.cxy_image,
        ),
        (
            "XMIN_IMAGE",
            "pixel",
            I32,
            "Minimum x-coordinate among detected pixels",
            |s| s.xmin_image as f64,
        ),
        (
            "YMIN_IMAGE",
            "pixel",
            I32,
            "Minimum y-coordinate among detected pixels",
            |s| s.ymin_image as f64,
        ),
        (
            "XMAX_IMAGE",
            "pixel",
            I32,
            "Maximum x-coordinate among detected pixels",
            |s| s.xmax_image as f64,
        ),
        (
            "YMAX_IMAGE",
            "pixel",
            I32,
            "Maximum y-coordinate among detected pixels",
            |s| s.ymax_image as f64,
        ),
        (
            "ISOAREA_IMAGE",
            "pixel**2",
            I32,
            "Isophotal area above Analysis threshold",
            |s| s.isoarea_image as f64,
        ),
        ("FLUX_ISO", "count", F32, "Isophotal flux", |s| s.flux_iso),
        (
            "FLUXERR_ISO",
            "count",
            F32,
            "RMS error for isophotal flux",
            |s| s.fluxerr_iso,
        ),
        ("MAG_ISO", "mag", F32, "Isophotal magnitude", |s| s.mag_iso),
        (
            "MAGERR_ISO",
            "mag",
            F32,
            "RMS error for isophotal magnitude",
            |s| s.magerr_iso,
        ),
        (
            "FLUX_AUTO",
            "count",
            F32,
            "Flux within a Kron-like elliptical aperture",
            |s| s.flux_auto,
        ),
        (
            "FLUXERR_AUTO",
            "count",
            F32,
            "RMS error for AUTO flux",
            |s| s.fluxerr_auto,
        ),
        (
            "MAG_AUTO",
            "mag",
            F32,
            "Kron-like elliptical aperture magnitude",
            |s| s.mag_auto,
        ),
        (
            "MAGERR_AUTO",
            "mag",
            F32,
            "RMS error for AUTO magnitude",
            |s| s.magerr_auto,
        ),
        (
            "KRON_RADIUS",
            "",
            F32,
            "Kron apertures in units of A or B",
            |s| s.kron_radius,
        ),
        (
            "FLUX_RADIUS",
            "pixel",
            F32,
            "Fraction-of-light radii",
            |s| s.flux_radius,
        ),
        (
            "FLUX_MAX",
            "count",
            F32,
            "Peak flux above background",
            |s| s.flux_max,
        ),
        (
            "BACKGROUND",
            "count",
            F32,
            "Background at centroid position",
            |s| s.background,
        ),
        (
            "THRESHOLD",
            "count",
            F32,
            "Detection threshold above background",
            |s| s.threshold,
        ),
        (
            "FWHM_IMAGE",
            "pixel",
            F32,
            "FWHM assuming a gaussian core",
            |s| s.fwhm_image,
        ),
        ("ELONGATION", "", F32, "A_IMAGE/B_IMAGE", |s| s.elongation),
        ("ELLIPTICITY", "", F32, "1 - B_IMAGE/A_IMAGE", |s| {
            s.ellipticity
        }),
        (
            "SNR_AUTO",
            "",
            F32,
            "Signal-to-noise ratio of FLUX_AUTO",
            |s| s.snr_auto,
        ),
        ("FLAGS", "", I16, "Extraction flags", |s| s.flags as f64),
    ]
};

const APER_COLUMNS: [(&str, &str, &str); 4] = [
    (
        "FLUX_APER",
        "count",
        "Flux vector within fixed circular aperture(s)",
    ),
    (
        "FLUXERR_APER",
        "count",
        "RMS error vector for aperture flux(es)",
    ),
    ("MAG_APER", "mag", "Fixed aperture magnitude vector"),
    (
        "MAGERR_APER",
        "mag",
        "RMS error vector for fixed aperture mag.",
    ),
];

impl Catalog {
    /// Column descriptions, in the order `column_values` serves them: the scalar columns, the
    /// aperture vectors (when there are apertures), and ALPHA_J2000/DELTA_J2000 once a WCS was
    /// applied.
    pub fn columns(&self) -> Vec<Column> {
        let mut cols: Vec<Column> = SCALARS
            .iter()
            .map(|(name, unit, ty, description, _)| Column {
                name,
                unit,
                ty: *ty,
                repeat: 1,
                description,
            })
            .collect();
        if !self.apertures_px.is_empty() {
            for (name, unit, description) in APER_COLUMNS {
                cols.push(Column {
                    name,
                    unit,
                    ty: ColumnType::F32,
                    repeat: self.apertures_px.len(),
                    description,
                });
            }
        }
        if self.has_world {
            cols.push(Column {
                name: "ALPHA_J2000",
                unit: "deg",
                ty: ColumnType::F64,
                repeat: 1,
                description: "Right ascension of barycenter (J2000)",
            });
            cols.push(Column {
                name: "DELTA_J2000",
                unit: "deg",
                ty: ColumnType::F64,
                repeat: 1,
                description: "Declination of barycenter (J2000)",
            });
        }
        cols
    }

    /// The values of one column, row after row (`repeat` values per row), as f64; `None` for an
    /// unknown name.
    pub fn column_values(&self, name: &str) -> Option<Vec<f64>> {
        if let Some((.., get)) = SCALARS.iter().find(|c| c.0 == name) {
            return Some(self.sources.iter().map(get).collect());
        }
        let vecs: Option<fn(&Source) -> &Vec<f64>> = match name {
            "FLUX_APER" => Some(|s| &s.flux_aper),
            "FLUXERR_APER" => Some(|s| &s.fluxerr_aper),
            "MAG_APER" => Some(|s| &s.mag_aper),
            "MAGERR_APER" => Some(|s| &s.magerr_aper),
            _ => None,
        };
        if let Some(f) = vecs {
            return Some(
                self.sources
                    .iter()
                    .flat_map(|s| f(s).iter().copied())
                    .collect(),
            );
        }
        match name {
            "ALPHA_J2000" if self.has_world => Some(
                self.sources
                    .iter()
                    .map(|s| s.alpha_j2000.unwrap_or(f64::NAN))
                    .collect(),
            ),
            "DELTA_J2000" if self.has_world => Some(
                self.sources
                    .iter()
                    .map(|s| s.delta_j2000.unwrap_or(f64::NAN))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Fill ALPHA_J2000/DELTA_J2000 from the isophotal barycentre with a pixel-to-sky function
    /// taking 1-based FITS pixel coordinates and returning degrees (`None` where it fails).
    pub fn set_world<F>(&mut self, pix_to_sky: F)
    where
        F: Fn(f64, f64) -> Option<(f64, f64)>,
    {
        for s in &mut self.sources {
            let rd = pix_to_sky(s.x_image, s.y_image);
            s.alpha_j2000 = rd.map(|r| r.0);
            s.delta_j2000 = rd.map(|r| r.1);
        }
        self.has_world = true;
    }

    /// The catalog as SExtractor's ASCII_HEAD text: `#   i NAME  description  [unit]` header
    /// lines, then one row per source.
    pub fn to_ascii_head(&self) -> String {
        self.to_ascii_head_columns(None)
    }

    /// [`Catalog::to_ascii_head`] restricted to the named columns (in catalog order), like
    /// SExtractor's PARAMETERS_NAME list; `None` writes every column.
    pub fn to_ascii_head_columns(&self, names: Option<&[&str]>) -> String {
        use std::fmt::Write;
        let cols: Vec<Column> = self
            .columns()
            .into_iter()
            .filter(|c| names.is_none_or(|n| n.contains(&c.name)))
            .collect();
        let mut out = String::new();
        let mut idx = 1;
        for c in &cols {
            let unit = if c.unit.is_empty() {
                String::new()
            } else {
                format!(" [{}]", c.unit)
            };
            let _ = writeln!(out, "#{idx:4} {:<22} {}{}", c.name, c.description, unit);
            idx += c.repeat;
        }
        let data: Vec<Vec<f64>> = cols
            .iter()
            .map(|c| self.column_values(c.name).unwrap_or_default())
            .collect();
        for (row, _) in self.sources.iter().enumerate() {
            let mut line = String::new();
            for (c, vals) in cols.iter().zip(&data) {
                for k in 0..c.repeat {
                    let v = vals[row * c.repeat + k];
                    match c.ty {
                        ColumnType::I32 | ColumnType::I16 => {
                            let _ = write!(line, " {:>10}", v as i64);
                        }
                        _ => {
                            let _ = write!(line, " {:>15.8e}", v);
                        }
                    }
                }
            }
            out.push_str(line.trim_start());
            out.push('\n');
        }
        out
    }
}
