//! Matrix products on strided views, through the gemm crate (candle's own CPU kernels),
//! so that a transposed weight, one head's columns of a fused q|k|v buffer or a gradient
//! read "as its transpose" never needs a contiguous copy.

use gemm::Parallelism;

/// A matrix read in place: element `(i, j)` is `data[offset + i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View::strided(data, 0, rows, cols, cols, 1)
    }

    /// Any strided window of `data`; panics if it reaches past the end (a bug, not input).
    pub fn strided(data: &'a [f32], offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        let view = View { data, offset, rows, cols, rs, cs };
        assert!(view.end() <= data.len(), "matrix view past the end of its buffer");
        view
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        View { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// Rows `start..start + n`.
    pub fn row_range(self, start: usize, n: usize) -> Self {
        assert!(start + n <= self.rows);
        View { offset: self.offset + start * self.rs, rows: n, ..self }
    }

    fn end(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            self.offset
        } else {
            self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }

    fn ptr(&self) -> *const f32 {
        self.data[self.offset..].as_ptr()
    }
}

/// Where a product goes: rows of `cols` values, `rs` apart, starting at `ptr`.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
}

// SAFETY: an `Out` is only a description of a window; every function that writes through
// one documents why no two writers share an element.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// A row-major `[rows, cols]` matrix filling `data`.
    pub fn rows(data: &mut [f32], rows: usize, cols: usize) -> Self {
        Out::strided(data, 0, rows, cols, cols)
    }

    /// Columns `col..col + cols` of rows `rs` apart starting at row `offset / rs` of `data`.
    pub fn strided(data: &mut [f32], offset: usize, rows: usize, cols: usize, rs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || offset + (rows - 1) * rs + cols <= data.len(),
            "output window past the end of its buffer"
        );
        Out { ptr: data[offset..].as_mut_ptr(), rows, cols, rs }
    }
}

/// How many threads a product may use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Threads {
    /// One: the caller already runs products side by side.
    One,
    /// Every thread of the current rayon pool.
    All,
}

/// `out = a·b` (`accumulate = false`) or `out += a·b`.
///
/// # Safety
/// `out` must point into a live buffer for the whole call, and nothing else may read or
/// write its elements meanwhile.
pub(crate) unsafe fn matmul(out: Out, a: View, b: View, accumulate: bool, threads: Threads) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!((out.rows, out.cols), (a.rows, b.cols), "output shape differs");
    if out.rows == 0 || out.cols == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            for i in 0..out.rows {
                // SAFETY: row `i` of the window is in bounds (checked at construction).
                unsafe { std::slice::from_raw_parts_mut(out.ptr.add(i * out.rs), out.cols).fill(0.0) };
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::All if rayon::current_num_threads() > 1 => Parallelism::Rayon(rayon::current_num_threads()),
        _ => Parallelism::None,
    };
    // SAFETY: every view was bounds-checked when it was made, and the caller guarantees
    // exclusive access to `out`. gemm computes dst = alpha·dst + beta·lhs·rhs.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            out.ptr,
            1,
            out.rs as isize,
            accumulate,
            a.ptr(),
            a.cs as isize,
            a.rs as isize,
            b.ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `out = a·b` or `out += a·b` into a whole row-major buffer, on every thread.
pub(crate) fn matmul_into(out: &mut [f32], a: View, b: View, accumulate: bool) {
    let dst = Out::rows(out, a.rows, b.cols);
    // SAFETY: `out` is borrowed mutably for the call.
    unsafe { matmul(dst, a, b, accumulate, Threads::All) }
}
