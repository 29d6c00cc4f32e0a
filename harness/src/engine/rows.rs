//! Row-parallel passes with results that never depend on the thread count: work is cut
//! into fixed blocks of [`ROWS`] rows, and sums over rows add the blocks' partial sums
//! in block order.

use rayon::prelude::*;

/// Rows per work item.
pub(crate) const ROWS: usize = 16;

/// Runs `f(first_row, out_block, in_block)` over blocks of [`ROWS`] rows of `out` and `input`
/// (`out_width` and `in_width` values per row) in parallel.
pub(crate) fn zip_rows(
    out: &mut [f32],
    out_width: usize,
    input: &[f32],
    in_width: usize,
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync + Send,
) {
    let (ow, iw) = (out_width.max(1), in_width.max(1));
    out.par_chunks_mut(ow * ROWS).zip(input.par_chunks(iw * ROWS)).enumerate().for_each(|(i, (o, x))| f(i * ROWS, o, x));
}

/// Runs `f(first_row, block)` over blocks of [`ROWS`] rows of `out` in parallel.
pub(crate) fn each_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    out.par_chunks_mut(width.max(1) * ROWS).enumerate().for_each(|(i, o)| f(i * ROWS, o));
}

/// Like [`zip_rows`], and each block also returns a partial sum of `width` values; their sum
/// (in block order) is added to `acc`.
pub(crate) fn zip_rows_sum(
    out: &mut [f32],
    out_width: usize,
    input: &[f32],
    in_width: usize,
    acc: &mut [f32],
    f: impl Fn(usize, &mut [f32], &[f32], &mut [f32]) + Sync + Send,
) {
    let width = acc.len();
    let (ow, iw) = (out_width.max(1), in_width.max(1));
    let partials: Vec<Vec<f32>> = out
        .par_chunks_mut(ow * ROWS)
        .zip(input.par_chunks(iw * ROWS))
        .enumerate()
        .map(|(i, (o, x))| {
            let mut partial = vec![0f32; width];
            f(i * ROWS, o, x, &mut partial);
            partial
        })
        .collect();
    add_in_order(acc, &partials);
}

/// Adds the column sums of columns `col..col + acc.len()` of a `[rows, width]` matrix to
/// `acc` (bias gradients).
pub(crate) fn sum_cols_into(acc: &mut [f32], matrix: &[f32], width: usize, col: usize) {
    let n = acc.len();
    let partials: Vec<Vec<f32>> = matrix
        .par_chunks(width.max(1) * ROWS)
        .map(|block| {
            let mut partial = vec![0f32; n];
            for row in block.chunks(width) {
                partial.iter_mut().zip(&row[col..col + n]).for_each(|(p, &v)| *p += v);
            }
            partial
        })
        .collect();
    add_in_order(acc, &partials);
}

fn add_in_order(acc: &mut [f32], partials: &[Vec<f32>]) {
    for p in partials {
        acc.iter_mut().zip(p).for_each(|(a, &v)| *a += v);
    }
}

/// `out = a` in parallel.
pub(crate) fn copy(out: &mut [f32], a: &[f32]) {
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(o, a)| o.copy_from_slice(a));
}

/// `out = a + row` per row, in parallel (a residual plus a bias, before a product adds to it).
pub(crate) fn copy_plus_row(out: &mut [f32], a: &[f32], row: Option<&[f32]>) {
    let Some(row) = row else { return copy(out, a) };
    zip_rows(out, row.len(), a, row.len(), |_, o, a| {
        for (o, a) in o.chunks_mut(row.len()).zip(a.chunks(row.len())) {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(row) {
                *o = a + b;
            }
        }
    });
}
