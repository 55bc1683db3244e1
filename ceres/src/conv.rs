//! The network's 3x3 convolutions (padding 1, stride 1 or 2) on the CPU, as a candle custom op
//! with its own backward: per stack, im2col (the input's nine shifted copies, one row per
//! input channel and kernel tap) and one matrix product with the kernel, the bias and
//! optionally the ReLU that follows fused in; the backward gets the kernel gradient as one
//! matrix product per stack and the input gradient as a matrix product followed by col2im.
//!
//! Why it exists: candle 0.11's CPU `conv2d` runs a direct tiled loop, and its backward runs a
//! direct `conv_transpose2d` (an inner product per output pixel) for the input gradient and a
//! `conv2d` whose kernel is a whole feature map for the kernel gradient. With this network's
//! few channels (8 to 32) that left 70% of a training step in those loops and the matrix
//! multiplier nearly idle (`perf record` of `ceres_bench`). Here all the arithmetic is in
//! `gemm` (AVX-512 kernels enabled); the numbers before and after are in
//! bench/RESULTS-ceres.md. The results equal candle's `conv2d` to float rounding (tests in
//! `crate::tests`); candle's `conv2d` stays the path on other devices.
//!
//! Work is split over stacks with rayon; the kernel and bias gradients are summed over fixed
//! groups of stacks and the groups added in order, so a training step gives the same bits
//! whatever the number of threads.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Stacks per group whose kernel gradients are summed together (see the module doc).
const GROUP: usize = 4;

/// `relu?(conv(x, w) + b)` with a 3x3 kernel and padding 1: x (N, cin, H, W), w (cout, cin, 3,
/// 3), b (cout); the result is (N, cout, H', W') with H' = (H - 1) / stride + 1, as candle's
/// `conv2d`. CPU only.
pub fn conv3x3(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, relu: bool) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Conv3x3 { stride, relu })
}

#[derive(Debug, Clone, Copy)]
struct Conv3x3 {
    stride: usize,
    relu: bool,
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    stacks: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    stride: usize,
}

impl Geometry {
    fn new(x: &[usize], k: &[usize], b: &[usize], stride: usize) -> Result<Geometry> {
        let ok = x.len() == 4
            && k.len() == 4
            && k[1] == x[1]
            && k[2] == 3
            && k[3] == 3
            && b == [k[0]]
            && (1..=2).contains(&stride)
            && x[2] > 0
            && x[3] > 0;
        if !ok {
            candle_core::bail!(
                "conv3x3: input {x:?}, kernel {k:?}, bias {b:?}, stride {stride}: expected \
                 (N, C, H, W), (C', C, 3, 3), (C') and stride 1 or 2"
            );
        }
        Ok(Geometry {
            stacks: x[0],
            cin: x[1],
            cout: k[0],
            h: x[2],
            w: x[3],
            oh: (x[2] - 1) / stride + 1,
            ow: (x[3] - 1) / stride + 1,
            stride,
        })
    }

    /// Rows of the im2col matrix: input channels times kernel taps.
    fn taps(&self) -> usize {
        self.cin * 9
    }

    /// Columns of the im2col matrix: output pixels.
    fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// The row stride of the im2col matrix: a little more than a row, so that its rows do not
    /// start 4 KiB apart (1024 pixels), where gemm's packing, which reads down a column of it,
    /// met every row in the same cache set; the padding made training steps ~10% faster.
    fn col_stride(&self) -> usize {
        self.pixels() + 16
    }

    /// The im2col matrix as a [`View`].
    fn col_view(&self) -> View {
        View {
            rows: self.taps(),
            cols: self.pixels(),
            row_stride: self.col_stride(),
            col_stride: 1,
        }
    }

    fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    fn out_len(&self) -> usize {
        self.cout * self.pixels()
    }

    /// For kernel column `kx`, the output columns whose input column is inside the plane,
    /// and the input column of the first.
    fn inside_x(&self, kx: usize) -> (usize, usize, usize) {
        let lo = usize::from(kx == 0);
        let hi = if self.w + 1 > kx {
            ((self.w - kx) / self.stride + 1).min(self.ow)
        } else {
            0
        };
        (lo, hi.max(lo), lo * self.stride + kx - 1)
    }

    /// The input row of output row `oy` for kernel row `ky`, if inside the plane.
    fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(1)
            .filter(|iy| *iy < self.h)
    }
}

/// With stride 1, tap (`ky`, `kx`) reads the plane shifted by one offset in the flattened
/// plane: its im2col row is `row[p] = plane[p + offset]` for `p` in `first..end`, zero
/// elsewhere, except in the column that the shift wraps around a line's edge (see
/// [`wrapped_column`]); `first == end` when the tap lies wholly in the padding. One long copy instead of one per line: im2col took a quarter of the
/// inference time when it copied line by line.
fn flat_shift(g: &Geometry, ky: usize, kx: usize) -> (usize, usize, isize) {
    let p = g.h * g.w;
    let offset = (ky as isize - 1) * g.w as isize + kx as isize - 1;
    let first = (-offset).clamp(0, p as isize) as usize;
    let end = (p as isize - offset).clamp(first as isize, p as isize) as usize;
    (first, end, offset)
}

/// The output column whose pixels a stride-1 tap in kernel column `kx` takes from beyond the
/// line's edge (the padding), if any.
fn wrapped_column(g: &Geometry, kx: usize) -> Option<usize> {
    match kx {
        0 => Some(0),
        2 => Some(g.w - 1),
        _ => None,
    }
}

/// The rows of the im2col matrix, one per input channel and kernel tap.
fn tap_rows(g: &Geometry) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..g.cin).flat_map(|ci| (0..3).flat_map(move |ky| (0..3).map(move |kx| (ci, ky, kx))))
}

/// Fills `col` (taps x pixels, rows `g.col_stride()` apart) from one stack's planes `x` (cin x
/// h x w).
fn im2col(g: &Geometry, x: &[f32], col: &mut [f32]) {
    let (p, plane) = (g.pixels(), g.h * g.w);
    for ((ci, ky, kx), row) in tap_rows(g).zip(col.chunks_exact_mut(g.col_stride())) {
        let row = &mut row[..p];
        let src = &x[ci * plane..(ci + 1) * plane];
        if g.stride == 1 {
            let (first, end, offset) = flat_shift(g, ky, kx);
            row[..first].fill(0.0);
            row[end..].fill(0.0);
            if end > first {
                let from = (first as isize + offset) as usize;
                row[first..end].copy_from_slice(&src[from..from + end - first]);
            }
            if let Some(c) = wrapped_column(g, kx) {
                row.chunks_exact_mut(g.ow).for_each(|line| line[c] = 0.0);
            }
            continue;
        }
        let (lo, hi, ix0) = g.inside_x(kx);
        for (oy, out) in row.chunks_exact_mut(g.ow).enumerate() {
            let Some(iy) = g.input_row(oy, ky) else {
                out.fill(0.0);
                continue;
            };
            let line = &src[iy * g.w..(iy + 1) * g.w];
            out[..lo].fill(0.0);
            out[hi..].fill(0.0);
            for (o, v) in out[lo..hi]
                .iter_mut()
                .zip(line[ix0..].iter().step_by(g.stride))
            {
                *o = *v;
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each entry of `col` into the input pixel it was taken from
/// (`col` is scratch: its entries that came from the padding are zeroed).
fn col2im_add(g: &Geometry, col: &mut [f32], x: &mut [f32]) {
    let (p, plane) = (g.pixels(), g.h * g.w);
    for ((ci, ky, kx), row) in tap_rows(g).zip(col.chunks_exact_mut(g.col_stride())) {
        let row = &mut row[..p];
        let dst = &mut x[ci * plane..(ci + 1) * plane];
        if g.stride == 1 {
            if let Some(c) = wrapped_column(g, kx) {
                row.chunks_exact_mut(g.ow).for_each(|line| line[c] = 0.0);
            }
            let (first, end, offset) = flat_shift(g, ky, kx);
            if end == first {
                continue;
            }
            let to = (first as isize + offset) as usize;
            for (o, v) in dst[to..to + end - first].iter_mut().zip(&row[first..end]) {
                *o += *v;
            }
            continue;
        }
        let (lo, hi, ix0) = g.inside_x(kx);
        for (oy, from) in row.chunks_exact(g.ow).enumerate() {
            let Some(iy) = g.input_row(oy, ky) else {
                continue;
            };
            let line = &mut dst[iy * g.w..(iy + 1) * g.w];
            for (o, v) in line[ix0..].iter_mut().step_by(g.stride).zip(&from[lo..hi]) {
                *o += *v;
            }
        }
    }
}

/// The sum of `v`, in eight interleaved partial sums (a plain sum is one serial chain of
/// additions, which the compiler must not reorder into vector lanes).
fn lane_sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(l, x)| *l += x);
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// A row-major matrix view for [`matmul`]: `rows` x `cols`, element (i, j) at
/// `i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
struct View {
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl View {
    fn row_major(rows: usize, cols: usize) -> View {
        View {
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn transposed(self) -> View {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Whether every element lies inside a slice of `len`.
    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < len
    }
}

/// `dst (+)= a b` on one thread, `dst` added to when `accumulate`.
fn matmul(dst: &mut [f32], d: View, a: &[f32], av: View, b: &[f32], bv: View, accumulate: bool) {
    assert!(
        d.rows == av.rows
            && d.cols == bv.cols
            && av.cols == bv.rows
            && d.fits(dst.len())
            && av.fits(a.len())
            && bv.fits(b.len()),
        "matmul: shapes or strides do not fit their slices"
    );
    // SAFETY: the assertion keeps every element that gemm reads or writes inside its slice;
    // `dst` is borrowed mutably, so it does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            av.cols,
            dst.as_mut_ptr(),
            d.col_stride as isize,
            d.row_stride as isize,
            accumulate,
            a.as_ptr(),
            av.col_stride as isize,
            av.row_stride as isize,
            b.as_ptr(),
            bv.col_stride as isize,
            bv.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The f32 data of a contiguous CPU storage.
fn data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("conv3x3: a non-contiguous operand")
    };
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// Runs `f` on the f32 data of a CPU tensor, made contiguous first.
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(data(s, layout)?),
        _ => candle_core::bail!("conv3x3: runs on the CPU only"),
    }
}

impl CustomOp3 for Conv3x3 {
    fn name(&self) -> &'static str {
        "ceres-conv3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(xl.dims(), kl.dims(), bl.dims(), self.stride)?;
        let (x, k, b) = (data(xs, xl)?, data(ks, kl)?, data(bs, bl)?);
        let mut out = vec![0f32; g.stacks * g.out_len()];
        if g.stacks > 0 {
            let (p, t) = (g.pixels(), g.taps());
            out.par_chunks_mut(g.out_len())
                .zip(x.par_chunks(g.in_len()))
                .for_each_init(
                    || vec![0f32; t * g.col_stride()],
                    |col, (y, x)| {
                        im2col(&g, x, col);
                        for (row, bias) in y.chunks_exact_mut(p).zip(b) {
                            row.fill(*bias);
                        }
                        let kv = View::row_major(g.cout, t);
                        matmul(
                            y,
                            View::row_major(g.cout, p),
                            k,
                            kv,
                            col,
                            g.col_view(),
                            true,
                        );
                        if self.relu {
                            y.iter_mut().for_each(|v| *v = v.max(0.0));
                        }
                    },
                );
        }
        let shape = Shape::from((g.stacks, g.cout, g.oh, g.ow));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        k: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), k.dims(), b.dims(), self.stride)?;
        let want_x = x.track_op();
        let (gx, gk, gb) = with_data(x, |x| {
            with_data(k, |k| {
                with_data(res, |res| {
                    with_data(grad_res, |grad| {
                        Ok(self.backward(&g, x, k, res, grad, want_x))
                    })
                })
            })
        })?;
        let dev = x.device();
        let gx = match gx {
            Some(v) => Some(Tensor::from_vec(v, x.shape(), dev)?),
            None => None,
        };
        Ok((
            gx,
            Some(Tensor::from_vec(gk, k.shape(), dev)?),
            Some(Tensor::from_vec(gb, b.shape(), dev)?),
        ))
    }
}

/// The kernel and bias gradients summed over one group of stacks.
type GroupSums = (Vec<f32>, Vec<f32>);

impl Conv3x3 {
    /// Gradients of the input (when `want_x`), kernel and bias from those of the output.
    fn backward(
        &self,
        g: &Geometry,
        x: &[f32],
        k: &[f32],
        res: &[f32],
        grad: &[f32],
        want_x: bool,
    ) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
        let (p, t) = (g.pixels(), g.taps());
        // With stride 1 the input gradient is itself a 3x3 convolution: of the output gradient
        // with the kernel mirrored and its channel axes swapped (`flipped`, cin x cout·9). Its
        // im2col and one product with inner dimension cout·9 run faster than the product with
        // inner dimension cout and the col2im that stride 2 needs.
        let mirrored = Geometry {
            cin: g.cout,
            cout: g.cin,
            ..*g
        };
        let mut flipped = Vec::new();
        if g.stride == 1 && want_x {
            flipped.resize(g.cin * mirrored.taps(), 0.0);
            for (ci, row) in flipped.chunks_exact_mut(mirrored.taps()).enumerate() {
                for (f, (co, ky, kx)) in row.iter_mut().zip(tap_rows(&mirrored)) {
                    *f = k[((co * g.cin + ci) * 3 + 2 - ky) * 3 + 2 - kx];
                }
            }
        }
        // The gradients of one group of stacks: kernel and bias summed, input written to `gx`.
        let group = |i: usize, mut gx: Option<&mut [f32]>| {
            let mut gk = vec![0f32; g.cout * t];
            let mut gb = vec![0f32; g.cout];
            let mut col = vec![0f32; t * g.col_stride()];
            let mut dy_col = vec![0f32; mirrored.taps() * mirrored.col_stride()];
            let mut masked = vec![0f32; if self.relu { g.out_len() } else { 0 }];
            for s in i * GROUP..((i + 1) * GROUP).min(g.stacks) {
                let out = s * g.out_len()..(s + 1) * g.out_len();
                // The gradient before the ReLU: none where the output was clipped to 0.
                let dy: &[f32] = if self.relu {
                    for ((d, gr), r) in masked.iter_mut().zip(&grad[out.clone()]).zip(&res[out]) {
                        // As a bit mask, which vectorises (a select does not on x86-64 v1).
                        let keep = 0u32.wrapping_sub(u32::from(*r > 0.0));
                        *d = f32::from_bits(gr.to_bits() & keep);
                    }
                    &masked
                } else {
                    &grad[out]
                };
                for (sum, row) in gb.iter_mut().zip(dy.chunks_exact(p)) {
                    *sum += lane_sum(row);
                }
                im2col(g, &x[s * g.in_len()..(s + 1) * g.in_len()], &mut col);
                let dyv = View::row_major(g.cout, p);
                let colv = g.col_view();
                matmul(
                    &mut gk,
                    View::row_major(g.cout, t),
                    dy,
                    dyv,
                    &col,
                    colv.transposed(),
                    true,
                );
                let Some(gx) = gx.as_deref_mut() else {
                    continue;
                };
                let local = s - i * GROUP;
                let gxs = &mut gx[local * g.in_len()..(local + 1) * g.in_len()];
                if g.stride == 1 {
                    im2col(&mirrored, dy, &mut dy_col);
                    let fv = View::row_major(g.cin, mirrored.taps());
                    let xv = View::row_major(g.cin, p);
                    matmul(gxs, xv, &flipped, fv, &dy_col, mirrored.col_view(), false);
                } else {
                    let kv = View::row_major(g.cout, t).transposed();
                    matmul(&mut col, colv, k, kv, dy, dyv, false);
                    col2im_add(g, &mut col, gxs);
                }
            }
            (gk, gb)
        };
        let groups = g.stacks.div_ceil(GROUP);
        let (gx, partial): (_, Vec<GroupSums>) = if want_x {
            let mut gx = vec![0f32; g.stacks * g.in_len()];
            let partial = gx
                .par_chunks_mut(GROUP * g.in_len())
                .enumerate()
                .map(|(i, chunk)| group(i, Some(chunk)))
                .collect();
            (Some(gx), partial)
        } else {
            let partial = (0..groups)
                .into_par_iter()
                .map(|i| group(i, None))
                .collect();
            (None, partial)
        };
        let mut gk = vec![0f32; g.cout * t];
        let mut gb = vec![0f32; g.cout];
        for (pk, pb) in partial {
            gk.iter_mut().zip(pk).for_each(|(a, v)| *a += v);
            gb.iter_mut().zip(pb).for_each(|(a, v)| *a += v);
        }
        (gx, gk, gb)
    }
}

/// `relu(a + b)` for two tensors of the same shape (a residual block's join), as one pass
/// forward and one backward. CPU only.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

#[derive(Debug, Clone, Copy)]
struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "ceres-add-relu"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if al.dims() != bl.dims() {
            candle_core::bail!(
                "add_relu: shapes {:?} and {:?} differ",
                al.dims(),
                bl.dims()
            );
        }
        let (a, b) = (data(a, al)?, data(b, bl)?);
        let sum = a
            .par_iter()
            .zip(b)
            .with_min_len(1 << 14)
            .map(|(x, y)| (x + y).max(0.0))
            .collect();
        Ok((CpuStorage::F32(sum), al.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = with_data(res, |res| {
            with_data(grad_res, |grad| {
                Ok(res
                    .par_iter()
                    .zip(grad)
                    .with_min_len(1 << 14)
                    .map(|(r, g)| if *r > 0.0 { *g } else { 0.0 })
                    .collect::<Vec<f32>>())
            })
        })?;
        let g = Tensor::from_vec(g, a.shape(), a.device())?;
        Ok((Some(g.clone()), Some(g)))
    }
}
