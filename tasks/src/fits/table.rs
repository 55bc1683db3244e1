//! Catalogs as FITS binary tables: scalar columns of i16/i32/i64/f32/f64 and strings, with
//! units (TUNITn), as SExtractor (FITS_1.0) and reference catalogs are written.

use std::path::Path;

use super::raw::{self, Handle};
use super::{
    display, header_at, kind_name, open, read_error, write_cards, write_error, FitsError, Header,
    Value,
};

/// The values of one column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Str(Vec<String>),
}

impl ColumnData {
    pub fn len(&self) -> usize {
        match self {
            ColumnData::I16(v) => v.len(),
            ColumnData::I32(v) => v.len(),
            ColumnData::I64(v) => v.len(),
            ColumnData::F32(v) => v.len(),
            ColumnData::F64(v) => v.len(),
            ColumnData::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f64 (None for strings).
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            ColumnData::I16(v) => v.iter().map(|&x| x as f64).collect(),
            ColumnData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            ColumnData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            ColumnData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            ColumnData::F64(v) => v.clone(),
            ColumnData::Str(_) => return None,
        })
    }

    /// The FITS TFORM code for this column.
    fn tform(&self) -> String {
        match self {
            ColumnData::I16(_) => "1I".into(),
            ColumnData::I32(_) => "1J".into(),
            ColumnData::I64(_) => "1K".into(),
            ColumnData::F32(_) => "1E".into(),
            ColumnData::F64(_) => "1D".into(),
            ColumnData::Str(v) => {
                format!("{}A", v.iter().map(|s| s.len()).max().unwrap_or(1).max(1))
            }
        }
    }
}

impl From<Vec<i16>> for ColumnData {
    fn from(v: Vec<i16>) -> Self {
        ColumnData::I16(v)
    }
}
impl From<Vec<i32>> for ColumnData {
    fn from(v: Vec<i32>) -> Self {
        ColumnData::I32(v)
    }
}
impl From<Vec<i64>> for ColumnData {
    fn from(v: Vec<i64>) -> Self {
        ColumnData::I64(v)
    }
}
impl From<Vec<f32>> for ColumnData {
    fn from(v: Vec<f32>) -> Self {
        ColumnData::F32(v)
    }
}
impl From<Vec<f64>> for ColumnData {
    fn from(v: Vec<f64>) -> Self {
        ColumnData::F64(v)
    }
}
impl From<Vec<String>> for ColumnData {
    fn from(v: Vec<String>) -> Self {
        ColumnData::Str(v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// TUNITn ("" when none), e.g. `deg`, `pixel`, `mas/yr`, `mag`.
    pub unit: String,
    pub data: ColumnData,
}

/// A binary table: EXTNAME, extra header cards, and columns of equal length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub name: String,
    pub header: Header,
    pub columns: Vec<Column>,
    /// Columns present in the file but not read (vector or logical columns), by name.
    pub skipped: Vec<String>,
}

/// Which HDU: by number (0 = primary) or by EXTNAME (case-insensitive).
#[derive(Debug, Clone, Copy)]
pub enum HduRef<'a> {
    Index(usize),
    Name(&'a str),
}

impl From<usize> for HduRef<'_> {
    fn from(i: usize) -> Self {
        HduRef::Index(i)
    }
}
impl<'a> From<&'a str> for HduRef<'a> {
    fn from(s: &'a str) -> Self {
        HduRef::Name(s)
    }
}

impl Table {
    pub fn new(name: &str) -> Table {
        Table {
            name: name.to_owned(),
            ..Table::default()
        }
    }

    /// Adds a column (builder style).
    pub fn with(mut self, name: &str, unit: &str, data: impl Into<ColumnData>) -> Table {
        self.columns.push(Column {
            name: name.to_owned(),
            unit: unit.to_owned(),
            data: data.into(),
        });
        self
    }

    pub fn nrows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.data.len())
    }

    pub fn column(&self, name: &str) -> Result<&Column, FitsError> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| FitsError::NoColumn {
                at: self.header.loc(),
                column: name.to_owned(),
                have: self
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A numeric column as f64.
    pub fn f64s(&self, name: &str) -> Result<Vec<f64>, FitsError> {
        let c = self.column(name)?;
        c.data.to_f64().ok_or_else(|| FitsError::BadData {
            at: self.header.loc(),
            what: format!("column {name} holds strings, expected numbers"),
        })
    }

    pub fn strs(&self, name: &str) -> Result<&[String], FitsError> {
        match &self.column(name)?.data {
            ColumnData::Str(v) => Ok(v),
            _ => Err(FitsError::BadData {
                at: self.header.loc(),
                what: format!("column {name} holds numbers, expected strings"),
            }),
        }
    }
}

/// Writes a file of binary tables after a primary HDU holding `primary`'s cards. Every column of
/// a table must have the same length. An existing file is replaced.
pub fn write_tables(path: &Path, primary: &Header, tables: &[Table]) -> Result<(), FitsError> {
    for t in tables {
        if let Some(c) = t.columns.iter().find(|c| c.data.len() != t.nrows()) {
            return Err(FitsError::Write {
                file: display(path),
                reason: format!(
                    "table {}: column {} has {} rows, the first column has {}",
                    t.name,
                    c.name,
                    c.data.len(),
                    t.nrows()
                ),
            });
        }
    }
    let mut h = Handle::create(path, false).map_err(|s| write_error(path, "create", s))?;
    h.create_image(8, &[])
        .map_err(|s| write_error(path, "create primary HDU", s))?;
    write_cards(&mut h, primary)?;
    for t in tables {
        let cols: Vec<(String, String, String)> = t
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.data.tform(), c.unit.clone()))
            .collect();
        let what = format!("table {}", t.name);
        h.create_table(&t.name, t.nrows(), &cols)
            .map_err(|s| write_error(path, &what, s))?;
        let mut extra = t.header.clone();
        extra.remove("EXTNAME");
        write_cards(&mut h, &extra)?;
        for (i, c) in t.columns.iter().enumerate() {
            let n = i + 1;
            let r = match &c.data {
                ColumnData::I16(v) => h.write_col(raw::TSHORT, n, v),
                ColumnData::I32(v) => h.write_col(raw::TINT, n, v),
                ColumnData::I64(v) => h.write_col(raw::TLONGLONG, n, v),
                ColumnData::F32(v) => h.write_col(raw::TFLOAT, n, v),
                ColumnData::F64(v) => h.write_col(raw::TDOUBLE, n, v),
                ColumnData::Str(v) => h.write_col_str(n, v),
            };
            r.map_err(|s| write_error(path, &format!("{what}, column {}", c.name), s))?;
        }
    }
    h.close().map_err(|s| write_error(path, "close", s))
}

/// Reads a binary table HDU by number or EXTNAME.
pub fn read_table<'a>(path: &Path, hdu: impl Into<HduRef<'a>>) -> Result<Table, FitsError> {
    let index = match hdu.into() {
        HduRef::Index(i) => i,
        HduRef::Name(name) => {
            let headers = super::read_headers(path)?;
            headers
                .iter()
                .position(|h| {
                    h.get("EXTNAME")
                        .is_some_and(|v| matches!(v, Value::Str(s) if s.eq_ignore_ascii_case(name)))
                })
                .ok_or_else(|| FitsError::BadData {
                    at: super::loc(path, 0, None),
                    what: format!(
                        "no HDU has EXTNAME = '{name}' (the file has {} HDUs)",
                        headers.len()
                    ),
                })?
        }
    };
    let mut h = open(path)?;
    let (kind, header) = header_at(&mut h, index)?;
    if kind != raw::BINARY_TBL {
        return Err(FitsError::NotTable {
            at: header.loc(),
            found: kind_name(kind),
        });
    }
    let (ncols, nrows) = h.table_shape().map_err(|s| read_error(path, index, s))?;
    let mut t = Table {
        name: header.str("EXTNAME").unwrap_or_default(),
        header: header.clone(),
        columns: Vec::with_capacity(ncols),
        skipped: Vec::new(),
    };
    for n in 1..=ncols {
        let name = header
            .str(&format!("TTYPE{n}"))
            .unwrap_or(format!("COL{n}"));
        let unit = header.str(&format!("TUNIT{n}")).unwrap_or_default();
        let (code, repeat, width) = h.column_type(n).map_err(|s| read_error(path, index, s))?;
        let err = |s| read_error(path, index, s);
        let data = match (code, repeat) {
            (raw::TSTRING, _) => {
                ColumnData::Str(h.read_col_str(n, nrows, width.max(repeat)).map_err(err)?)
            }
            (_, r) if r != 1 => {
                t.skipped.push(name);
                continue;
            }
            (raw::TBYTE | raw::TSHORT, _) => {
                ColumnData::I16(h.read_col(raw::TSHORT, n, nrows).map_err(err)?)
            }
            // TUSHORT (20) and 32-bit integers (TINT 31, TLONG 41).
            (20 | raw::TINT | 41, _) => {
                ColumnData::I32(h.read_col(raw::TINT, n, nrows).map_err(err)?)
            }
            // TULONG (40), 64-bit integers.
            (40 | raw::TLONGLONG, _) => {
                ColumnData::I64(h.read_col(raw::TLONGLONG, n, nrows).map_err(err)?)
            }
            (raw::TFLOAT, _) => ColumnData::F32(h.read_col(raw::TFLOAT, n, nrows).map_err(err)?),
            (raw::TDOUBLE, _) => ColumnData::F64(h.read_col(raw::TDOUBLE, n, nrows).map_err(err)?),
            _ => {
                t.skipped.push(name);
                continue;
            }
        };
        t.columns.push(Column { name, unit, data });
    }
    Ok(t)
}

/// A binary table's data unit as raw bytes, with its header and row length (NAXIS1), for tables
/// whose rows are a layout of their own (astrometry.net's k-d trees are native-endian numbers in
/// byte columns), which [`read_table`] cannot interpret.
pub fn read_table_bytes(path: &Path, hdu: usize) -> Result<(Header, usize, Vec<u8>), FitsError> {
    let mut h = open(path)?;
    let (kind, header) = header_at(&mut h, hdu)?;
    if kind != raw::BINARY_TBL {
        return Err(FitsError::NotTable {
            at: header.loc(),
            found: kind_name(kind),
        });
    }
    let (_, nrows) = h.table_shape().map_err(|s| read_error(path, hdu, s))?;
    let row = header.i64("NAXIS1")?.max(0) as usize;
    let bytes = h
        .read_table_bytes(row * nrows)
        .map_err(|s| read_error(path, hdu, s))?;
    Ok((header, row, bytes))
}
