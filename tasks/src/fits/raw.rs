//! The only place that calls cfitsio directly (through `fitsio::sys`, the bindings the `fitsio`
//! crate builds and links). Everything here is a safe function over an open [`Handle`]; callers
//! turn a cfitsio status into a [`FitsError`](super::FitsError) that names the file and HDU.
//!
//! Why not `fitsio`'s higher-level API: it panics on some inputs (a non-UTF-8 path, reading a
//! column of a non-table HDU), always writes an EXTNAME into a primary image, and has no call
//! to list every header card or to read a tile-compressed image's header as the image header.

use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;

use fitsio::sys;

/// cfitsio type codes (fitsio.h).
pub const TBYTE: c_int = 11;
pub const TLOGICAL: c_int = 14;
pub const TSTRING: c_int = 16;
pub const TUSHORT: c_int = 20;
pub const TSHORT: c_int = 21;
pub const TINT: c_int = 31;
pub const TLONGLONG: c_int = 81;
pub const TFLOAT: c_int = 42;
pub const TDOUBLE: c_int = 82;

/// HDU types.
pub const IMAGE_HDU: c_int = 0;
pub const ASCII_TBL: c_int = 1;
pub const BINARY_TBL: c_int = 2;

/// Status codes that this module names.
pub const FILE_NOT_OPENED: c_int = 104;
pub const END_OF_FILE: c_int = 107;
pub const READ_ERROR: c_int = 108;
pub const BAD_BITPIX: c_int = 211;
pub const BAD_NAXIS: c_int = 212;
pub const BAD_NAXES: c_int = 213;

/// A cfitsio failure: the status code and every message cfitsio left on its error stack.
#[derive(Debug, Clone)]
pub struct Status {
    pub code: c_int,
    pub text: String,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (cfitsio status {})", self.text, self.code)
    }
}

fn check(status: c_int) -> Result<(), Status> {
    if status == 0 {
        return Ok(());
    }
    let mut buf = [0 as c_char; 81];
    // SAFETY: ffgerr writes at most 30 characters plus NUL into the buffer.
    unsafe { sys::ffgerr(status, buf.as_mut_ptr()) };
    let mut text = cstr(&buf);
    let mut stack = Vec::new();
    loop {
        let mut m = [0 as c_char; 81];
        // SAFETY: ffgmsg writes at most 80 characters plus NUL; returns 0 when the stack is empty.
        let n = unsafe { sys::ffgmsg(m.as_mut_ptr()) };
        if n == 0 {
            break;
        }
        let s = cstr(&m);
        if !s.is_empty() && !stack.contains(&s) {
            stack.push(s);
        }
    }
    if !stack.is_empty() {
        text = format!("{text}: {}", stack.join("; "));
    }
    Err(Status { code: status, text })
}

fn cstr(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

fn c_string(s: &str) -> CString {
    // Header text is ASCII by the standard; a NUL cannot be stored, so it is dropped.
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// An open FITS file; closed on drop.
pub struct Handle {
    ptr: *mut sys::fitsfile,
    pub path: PathBuf,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut status = 0;
        // SAFETY: ptr came from ffopen/ffinit and is closed exactly once.
        unsafe { sys::ffclos(self.ptr, &mut status) };
        // Errors at close surface through `close` for writers; readers ignore them.
        let _ = check(status);
    }
}

impl Handle {
    /// Opens an existing file read-only. The name is passed as a plain disk file (no cfitsio
    /// extended-filename syntax), so brackets in a path are not interpreted.
    pub fn open(path: &Path) -> Result<Handle, Status> {
        let name = path_str(path)?;
        let mut ptr = ptr::null_mut();
        let mut status = 0;
        let c = c_string(&name);
        // SAFETY: valid out-pointer and NUL-terminated name.
        unsafe { sys::ffdkopn(&mut ptr, c.as_ptr(), 0, &mut status) };
        check(status)?;
        Ok(Handle {
            ptr,
            path: path.to_path_buf(),
        })
    }

    /// Creates (replacing) a file. With `compress`, images written to it are tile-compressed
    /// (Rice), as `fpack` does; the primary HDU is then an empty header.
    pub fn create(path: &Path, compress: bool) -> Result<Handle, Status> {
        let mut name = path_str(path)?;
        if compress && name.contains(['[', ']']) {
            return Err(Status {
                code: 105,
                text: "a tile-compressed file's path cannot contain `[` or `]`".into(),
            });
        }
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| Status {
                code: 105,
                text: format!("cannot replace the existing file: {e}"),
            })?;
        }
        if compress {
            name.push_str("[compress]");
        }
        let mut ptr = ptr::null_mut();
        let mut status = 0;
        let c = c_string(&name);
        // SAFETY: valid out-pointer and NUL-terminated name. Only the compressed case needs
        // cfitsio's extended filename syntax (the `[compress]` suffix).
        unsafe {
            if compress {
                sys::ffinit(&mut ptr, c.as_ptr(), &mut status)
            } else {
                sys::ffdkinit(&mut ptr, c.as_ptr(), &mut status)
            }
        };
        check(status)?;
        Ok(Handle {
            ptr,
            path: path.to_path_buf(),
        })
    }

    /// A scratch file in memory (cfitsio's `mem://`), for formatting headers; `path` is the
    /// file they are meant for, named in errors.
    pub fn create_in_memory(path: &Path) -> Result<Handle, Status> {
        let mut ptr = ptr::null_mut();
        let mut status = 0;
        let c = c_string("mem://");
        // SAFETY: valid out-pointer and NUL-terminated name.
        unsafe { sys::ffinit(&mut ptr, c.as_ptr(), &mut status) };
        check(status)?;
        Ok(Handle {
            ptr,
            path: path.to_path_buf(),
        })
    }

    /// Closes the file, reporting any error from flushing it.
    pub fn close(mut self) -> Result<(), Status> {
        let mut status = 0;
        // SAFETY: ptr is valid; it is replaced by null so Drop does not close it again.
        unsafe { sys::ffclos(self.ptr, &mut status) };
        self.ptr = ptr::null_mut();
        std::mem::forget(self);
        check(status)
    }

    pub fn num_hdus(&mut self) -> Result<usize, Status> {
        let mut n: c_int = 0;
        let mut status = 0;
        // SAFETY: valid handle and out-pointer.
        unsafe { sys::ffthdu(self.ptr, &mut n, &mut status) };
        check(status)?;
        Ok(n.max(0) as usize)
    }

    /// Moves to HDU `hdu` (0 = primary); returns its type.
    pub fn move_to(&mut self, hdu: usize) -> Result<c_int, Status> {
        let mut kind: c_int = 0;
        let mut status = 0;
        // SAFETY: valid handle and out-pointer.
        unsafe { sys::ffmahd(self.ptr, hdu as c_int + 1, &mut kind, &mut status) };
        check(status)?;
        Ok(kind)
    }

    /// Where the current HDU's data unit ends (bytes from the start of the file, fill included).
    pub fn data_end(&mut self) -> Result<u64, Status> {
        let (mut head, mut start, mut end) = (0i64, 0i64, 0i64);
        let mut status = 0;
        // SAFETY: valid handle and out-pointers.
        unsafe { sys::ffghadll(self.ptr, &mut head, &mut start, &mut end, &mut status) };
        check(status)?;
        Ok(end.max(0) as u64)
    }

    /// The current HDU's header as 80-character cards. A tile-compressed image's header is
    /// converted to that of the image it holds (BITPIX, NAXISn instead of ZBITPIX, ZNAXISn).
    pub fn header_cards(&mut self) -> Result<Vec<String>, Status> {
        let mut out: *mut c_char = ptr::null_mut();
        let mut nkeys: c_int = 0;
        let mut status = 0;
        // SAFETY: cfitsio allocates `out`; it is freed below with fffree.
        unsafe {
            sys::ffcnvthdr2str(
                self.ptr,
                0,
                ptr::null_mut(),
                0,
                &mut out,
                &mut nkeys,
                &mut status,
            )
        };
        let result = if status == 0 && !out.is_null() {
            // SAFETY: cfitsio returns a NUL-terminated string of nkeys 80-character cards.
            let text = unsafe { CStr::from_ptr(out) }.to_bytes();
            Ok(text
                .chunks(80)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect())
        } else {
            check(status).map(|_| Vec::new())
        };
        if !out.is_null() {
            let mut s2 = 0;
            // SAFETY: `out` was allocated by cfitsio.
            unsafe { sys::fffree(out as *mut c_void, &mut s2) };
        }
        result
    }

    /// Image dimensions of the current HDU, fastest axis first (NAXIS1, NAXIS2, ...).
    pub fn image_shape(&mut self) -> Result<Vec<usize>, Status> {
        let mut naxis: c_int = 0;
        let mut status = 0;
        // SAFETY: valid handle and out-pointer.
        unsafe { sys::ffgidm(self.ptr, &mut naxis, &mut status) };
        check(status)?;
        let mut dims = vec![0 as c_long; naxis.max(0) as usize];
        if naxis > 0 {
            // SAFETY: dims has naxis elements.
            unsafe { sys::ffgisz(self.ptr, naxis, dims.as_mut_ptr(), &mut status) };
            check(status)?;
        }
        Ok(dims.into_iter().map(|d| d.max(0) as usize).collect())
    }

    /// Reads `n` pixels of the current image HDU as f32, BSCALE/BZERO applied by cfitsio.
    pub fn read_pixels_f32(&mut self, n: usize) -> Result<Vec<f32>, Status> {
        let mut data = vec![0f32; n];
        if n == 0 {
            return Ok(data);
        }
        let mut anynul: c_int = 0;
        let mut status = 0;
        // SAFETY: data has n elements; a null nulval disables null checking.
        unsafe {
            sys::ffgpv(
                self.ptr,
                TFLOAT,
                1,
                n as i64,
                ptr::null_mut(),
                data.as_mut_ptr() as *mut c_void,
                &mut anynul,
                &mut status,
            )
        };
        check(status)?;
        Ok(data)
    }

    /// Appends an image HDU (the primary if the file is empty).
    pub fn create_image(&mut self, bitpix: c_int, dims: &[usize]) -> Result<(), Status> {
        let mut naxes: Vec<c_long> = dims.iter().map(|&d| d as c_long).collect();
        let mut status = 0;
        // SAFETY: naxes has dims.len() elements.
        unsafe {
            sys::ffcrim(
                self.ptr,
                bitpix,
                naxes.len() as c_int,
                naxes.as_mut_ptr(),
                &mut status,
            )
        };
        check(status)
    }

    /// Writes a whole image; `T` must match `datatype` (TBYTE u8, TSHORT i16, TUSHORT u16,
    /// TINT i32, TFLOAT f32, TDOUBLE f64).
    pub fn write_pixels<T: Copy>(&mut self, datatype: c_int, data: &[T]) -> Result<(), Status> {
        if data.is_empty() {
            return Ok(());
        }
        let mut status = 0;
        // SAFETY: cfitsio reads data.len() elements of the declared type; it does not write.
        unsafe {
            sys::ffppr(
                self.ptr,
                datatype,
                1,
                data.len() as i64,
                data.as_ptr() as *mut c_void,
                &mut status,
            )
        };
        check(status)
    }

    /// Appends a card already formatted to 80 characters (or fewer).
    pub fn write_record(&mut self, card: &str) -> Result<(), Status> {
        let c = c_string(card);
        let mut status = 0;
        // SAFETY: NUL-terminated card.
        unsafe { sys::ffprec(self.ptr, c.as_ptr(), &mut status) };
        check(status)
    }

    /// Writes a string keyword (long strings continue over CONTINUE cards).
    pub fn write_key_str(&mut self, key: &str, value: &str, comment: &str) -> Result<(), Status> {
        let (k, v, c) = (c_string(key), c_string(value), c_string(comment));
        let mut status = 0;
        // SAFETY: NUL-terminated strings.
        unsafe { sys::ffpkls(self.ptr, k.as_ptr(), v.as_ptr(), c.as_ptr(), &mut status) };
        check(status)
    }

    /// Writes a keyword of a numeric or logical type through cfitsio's own formatting (used
    /// for HIERARCH names longer than 8 characters).
    pub fn write_key_typed<T: Copy>(
        &mut self,
        datatype: c_int,
        key: &str,
        mut value: T,
        comment: &str,
    ) -> Result<(), Status> {
        let (k, c) = (c_string(key), c_string(comment));
        let mut status = 0;
        // SAFETY: value has the type named by datatype; cfitsio only reads it.
        unsafe {
            sys::ffpky(
                self.ptr,
                datatype,
                k.as_ptr(),
                &mut value as *mut T as *mut c_void,
                c.as_ptr(),
                &mut status,
            )
        };
        check(status)
    }

    pub fn write_comment(&mut self, text: &str) -> Result<(), Status> {
        let c = c_string(text);
        let mut status = 0;
        // SAFETY: NUL-terminated text.
        unsafe { sys::ffpcom(self.ptr, c.as_ptr(), &mut status) };
        check(status)
    }

    pub fn write_history(&mut self, text: &str) -> Result<(), Status> {
        let c = c_string(text);
        let mut status = 0;
        // SAFETY: NUL-terminated text.
        unsafe { sys::ffphis(self.ptr, c.as_ptr(), &mut status) };
        check(status)
    }

    /// Appends a binary table with `nrows` rows and the given columns (name, TFORM, unit).
    pub fn create_table(
        &mut self,
        extname: &str,
        nrows: usize,
        columns: &[(String, String, String)],
    ) -> Result<(), Status> {
        let names: Vec<CString> = columns.iter().map(|c| c_string(&c.0)).collect();
        let forms: Vec<CString> = columns.iter().map(|c| c_string(&c.1)).collect();
        let units: Vec<CString> = columns.iter().map(|c| c_string(&c.2)).collect();
        let mut pn: Vec<*mut c_char> = names.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        let mut pf: Vec<*mut c_char> = forms.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        let mut pu: Vec<*mut c_char> = units.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        let e = c_string(extname);
        let mut status = 0;
        // SAFETY: the pointer arrays have one NUL-terminated string per column; cfitsio only
        // reads them.
        unsafe {
            sys::ffcrtb(
                self.ptr,
                BINARY_TBL,
                nrows as i64,
                columns.len() as c_int,
                pn.as_mut_ptr(),
                pf.as_mut_ptr(),
                pu.as_mut_ptr(),
                e.as_ptr(),
                &mut status,
            )
        };
        check(status)
    }

    /// Writes a whole numeric column (`colnum` from 1).
    pub fn write_col<T: Copy>(
        &mut self,
        datatype: c_int,
        colnum: usize,
        data: &[T],
    ) -> Result<(), Status> {
        if data.is_empty() {
            return Ok(());
        }
        let mut status = 0;
        // SAFETY: cfitsio reads data.len() elements of the declared type.
        unsafe {
            sys::ffpcl(
                self.ptr,
                datatype,
                colnum as c_int,
                1,
                1,
                data.len() as i64,
                data.as_ptr() as *mut c_void,
                &mut status,
            )
        };
        check(status)
    }

    pub fn write_col_str(&mut self, colnum: usize, data: &[String]) -> Result<(), Status> {
        if data.is_empty() {
            return Ok(());
        }
        let cs: Vec<CString> = data.iter().map(|s| c_string(s)).collect();
        let mut ps: Vec<*mut c_char> = cs.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        let mut status = 0;
        // SAFETY: one NUL-terminated string per row; cfitsio only reads them.
        unsafe {
            sys::ffpcls(
                self.ptr,
                colnum as c_int,
                1,
                1,
                ps.len() as i64,
                ps.as_mut_ptr(),
                &mut status,
            )
        };
        check(status)
    }

    pub fn table_shape(&mut self) -> Result<(usize, usize), Status> {
        let mut ncols: c_int = 0;
        let mut nrows: c_long = 0;
        let mut status = 0;
        // SAFETY: valid handle and out-pointers.
        unsafe {
            sys::ffgncl(self.ptr, &mut ncols, &mut status);
            sys::ffgnrw(self.ptr, &mut nrows, &mut status);
        }
        check(status)?;
        Ok((ncols.max(0) as usize, nrows.max(0) as usize))
    }

    /// The current table's data unit as raw bytes, `nbytes` of them from the first row (for
    /// files that keep their own binary layout in byte columns, as astrometry.net's index files).
    pub fn read_table_bytes(&mut self, nbytes: usize) -> Result<Vec<u8>, Status> {
        let mut data = vec![0u8; nbytes];
        if nbytes == 0 {
            return Ok(data);
        }
        let mut status = 0;
        // SAFETY: data has nbytes bytes; cfitsio writes at most that many.
        unsafe {
            sys::ffgtbb(
                self.ptr,
                1,
                1,
                nbytes as i64,
                data.as_mut_ptr(),
                &mut status,
            )
        };
        check(status)?;
        Ok(data)
    }

    /// A column's equivalent cfitsio type code (TZERO/TSCAL taken into account, so an unsigned
    /// 16-bit column is TUSHORT), repeat count and width (bytes per element).
    pub fn column_type(&mut self, colnum: usize) -> Result<(c_int, usize, usize), Status> {
        let (mut code, mut repeat, mut width): (c_int, c_long, c_long) = (0, 0, 0);
        let mut status = 0;
        // SAFETY: valid handle and out-pointers.
        unsafe {
            sys::ffeqty(
                self.ptr,
                colnum as c_int,
                &mut code,
                &mut repeat,
                &mut width,
                &mut status,
            )
        };
        check(status)?;
        Ok((code, repeat.max(0) as usize, width.max(0) as usize))
    }

    /// Reads a whole scalar numeric column as `T` (cfitsio converts; TSCAL/TZERO applied).
    pub fn read_col<T: Copy + Default>(
        &mut self,
        datatype: c_int,
        colnum: usize,
        nrows: usize,
    ) -> Result<Vec<T>, Status> {
        let mut data = vec![T::default(); nrows];
        if nrows == 0 {
            return Ok(data);
        }
        let mut anynul: c_int = 0;
        let mut status = 0;
        // SAFETY: data has nrows elements of the type named by datatype.
        unsafe {
            sys::ffgcv(
                self.ptr,
                datatype,
                colnum as c_int,
                1,
                1,
                nrows as i64,
                ptr::null_mut(),
                data.as_mut_ptr() as *mut c_void,
                &mut anynul,
                &mut status,
            )
        };
        check(status)?;
        Ok(data)
    }

    pub fn read_col_str(
        &mut self,
        colnum: usize,
        nrows: usize,
        width: usize,
    ) -> Result<Vec<String>, Status> {
        let mut bufs: Vec<Vec<c_char>> = (0..nrows).map(|_| vec![0; width + 1]).collect();
        if nrows == 0 {
            return Ok(Vec::new());
        }
        let mut ps: Vec<*mut c_char> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let mut nul = [0 as c_char; 1];
        let mut anynul: c_int = 0;
        let mut status = 0;
        // SAFETY: each buffer holds width characters plus NUL, as cfitsio requires.
        unsafe {
            sys::ffgcvs(
                self.ptr,
                colnum as c_int,
                1,
                1,
                nrows as i64,
                nul.as_mut_ptr(),
                ps.as_mut_ptr(),
                &mut anynul,
                &mut status,
            )
        };
        check(status)?;
        Ok(bufs.iter().map(|b| cstr(b).trim_end().to_owned()).collect())
    }
}

fn path_str(path: &Path) -> Result<String, Status> {
    path.to_str().map(str::to_owned).ok_or_else(|| Status {
        code: FILE_NOT_OPENED,
        text: "the path is not valid UTF-8".into(),
    })
}
