//! Bounds-checked strided views over f32 slices for the `gemm` crate. Custom training ops multiply sub-blocks in
//! place (a column range of a stacked projection, one head of a qkv row) and accumulate into their outputs, which
//! candle's matmul cannot: it always allocates a fresh, contiguous result.
use candle_core::{bail, Layout, Result};
use gemm::Parallelism;

/// A read-only `rows x cols` matrix: element (i, j) at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    rs: usize,
    cs: usize,
}

/// The largest offset a strided view touches, checked against the slice so the unsafe gemm call stays in bounds.
fn check(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<()> {
    if rows > 0 && cols > 0 && (rows - 1) * rs + (cols - 1) * cs >= len {
        bail!("gemm view of {rows} x {cols} (strides {rs}, {cs}) exceeds its buffer of {len}");
    }
    Ok(())
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        check(data.len(), rows, cols, rs, cs)?;
        Ok(Mat { data, rows, cols, rs, cs })
    }

    /// Rows of width `cols`, `rs` apart, starting at `offset`.
    pub fn rows_of(data: &'a [f32], offset: usize, rows: usize, cols: usize, rs: usize) -> Result<Self> {
        match data.get(offset..) {
            Some(d) => Mat::new(d, rows, cols, rs, 1),
            None => bail!("gemm view starts at {offset}, past its buffer of {}", data.len()),
        }
    }

    /// A 2-D tensor's storage seen through its layout (any strides).
    pub fn from_layout(storage: &'a [f32], l: &Layout) -> Result<Self> {
        let (rows, cols) = l.shape().dims2()?;
        let (rs, cs) = (l.stride()[0], l.stride()[1]);
        match storage.get(l.start_offset()..) {
            Some(d) => Mat::new(d, rows, cols, rs, cs),
            None => bail!("tensor layout starts past its storage"),
        }
    }

    /// Rows `first..first + rows`.
    pub fn row_block(self, first: usize, rows: usize) -> Result<Self> {
        if first + rows > self.rows {
            bail!("gemm view: rows {first}..{} of {}", first + rows, self.rows);
        }
        let data = self.data.get(first * self.rs..).unwrap_or(&[]);
        Mat::new(data, rows, self.cols, self.rs, self.cs)
    }

    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// A writable `rows x cols` block.
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
}

impl<'a> MatMut<'a> {
    /// Rows of width `cols`, `rs` apart, starting at `offset`.
    pub fn rows_of(data: &'a mut [f32], offset: usize, rows: usize, cols: usize, rs: usize) -> Result<Self> {
        let len = data.len();
        match data.get_mut(offset..) {
            Some(d) => {
                check(d.len(), rows, cols, rs, 1)?;
                Ok(MatMut { data: d, rows, cols, rs })
            }
            None => bail!("gemm view starts at {offset}, past its buffer of {len}"),
        }
    }

    /// A whole contiguous row-major `rows x cols` buffer.
    pub fn full(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        MatMut::rows_of(data, 0, rows, cols, cols)
    }
}

/// Whether gemm may split the product across rayon's threads (not from inside an already parallel loop).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Par {
    Threads,
    Serial,
}

/// `dst = scale * lhs * rhs`, or `dst += scale * lhs * rhs` when `accumulate`.
pub fn matmul(dst: &mut MatMut, lhs: Mat, rhs: Mat, scale: f32, accumulate: bool, par: Par) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || dst.rows != m || dst.cols != n {
        bail!("gemm shapes: {m} x {k} times {} x {n} into {} x {}", rhs.rows, dst.rows, dst.cols);
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst.data[i * dst.rs..i * dst.rs + n].fill(0.0);
            }
        }
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let parallelism = if par == Par::Threads && threads > 1 && m * n * k >= 1 << 16 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: every view was bounds-checked against its slice when built (`check`), the shapes agree (above), and
    // `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n).map(|ij| (0..k).map(|p| a[ij / n * k + p] * b[p * n + ij % n]).sum()).collect()
    }

    #[test]
    fn blocks_transposes_and_accumulation_match_a_naive_product() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        // Into columns 2..5 of a 5 x 6 buffer, rhs given as its transpose's transposed view, then accumulated twice.
        let bt: Vec<f32> = (0..n * k).map(|i| b[i % k * n + i / k]).collect();
        let mut out = vec![9f32; m * 6];
        let mut d = MatMut::rows_of(&mut out, 2, m, n, 6).unwrap();
        matmul(&mut d, Mat::new(&a, m, k, k, 1).unwrap(), Mat::new(&bt, n, k, k, 1).unwrap().t(), 2.0, false, Par::Threads).unwrap();
        matmul(&mut d, Mat::new(&a, m, k, k, 1).unwrap(), Mat::new(&b, k, n, n, 1).unwrap(), -0.5, true, Par::Serial).unwrap();
        for i in 0..m {
            assert_eq!(&out[i * 6..i * 6 + 2], &[9.0, 9.0]);
            assert_eq!(out[i * 6 + 5], 9.0);
            for j in 0..n {
                assert!((out[i * 6 + 2 + j] - 1.5 * want[i * n + j]).abs() < 1e-5);
            }
        }
        assert!(MatMut::rows_of(&mut out, 4, m, n, 6).is_err(), "a view past the end is refused");
    }
}
