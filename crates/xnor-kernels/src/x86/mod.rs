//! x86-64 SIMD kernels (AVX-512 and AVX2), selected at run time.

pub(crate) mod avx2;
pub(crate) mod avx512;

/// Calls `$f::<MR, NV>($args)` for run-time `mr` in 1..=4 and `nv` in 1..=4, or `mr` in
/// 5..=8 with `nv` in 1..=2.
macro_rules! dispatch_tile {
    ($f:ident, $mr:expr, $nv:expr, $($arg:expr),* $(,)?) => {
        match ($mr, $nv) {
            (8, 2) => $f::<8, 2>($($arg),*),
            (8, 1) => $f::<8, 1>($($arg),*),
            (7, 2) => $f::<7, 2>($($arg),*),
            (7, 1) => $f::<7, 1>($($arg),*),
            (6, 2) => $f::<6, 2>($($arg),*),
            (6, 1) => $f::<6, 1>($($arg),*),
            (5, 2) => $f::<5, 2>($($arg),*),
            (5, 1) => $f::<5, 1>($($arg),*),
            (4, 4) => $f::<4, 4>($($arg),*),
            (4, 3) => $f::<4, 3>($($arg),*),
            (4, 2) => $f::<4, 2>($($arg),*),
            (4, 1) => $f::<4, 1>($($arg),*),
            (3, 4) => $f::<3, 4>($($arg),*),
            (3, 3) => $f::<3, 3>($($arg),*),
            (3, 2) => $f::<3, 2>($($arg),*),
            (3, 1) => $f::<3, 1>($($arg),*),
            (2, 4) => $f::<2, 4>($($arg),*),
            (2, 3) => $f::<2, 3>($($arg),*),
            (2, 2) => $f::<2, 2>($($arg),*),
            (2, 1) => $f::<2, 1>($($arg),*),
            (1, 4) => $f::<1, 4>($($arg),*),
            (1, 3) => $f::<1, 3>($($arg),*),
            (1, 2) => $f::<1, 2>($($arg),*),
            (1, 1) => $f::<1, 1>($($arg),*),
            _ => unreachable!("unsupported tile size"),
        }
    };
}
pub(crate) use dispatch_tile;

/// Binary tiles: `$full` selects the tall full-tile shapes (`12 x 1..2`, `8 x 3`, `6 x 4`)
/// with a compile-time word count `$kw` in {0 (run time), 3, 5}; otherwise the small shapes of
/// [`dispatch_tile`] with a run-time word count. Calls `$f::<MR, NV, KW>($args)`.
macro_rules! dispatch_binary_tile {
    ($f:ident, $full:expr, $kw:expr, $mr:expr, $nv:expr, $($arg:expr),* $(,)?) => {
        if $full {
            match ($nv, $kw) {
                (1, 3) => $f::<12, 1, 3>($($arg),*),
                (2, 3) => $f::<12, 2, 3>($($arg),*),
                (3, 3) => $f::<8, 3, 3>($($arg),*),
                (4, 3) => $f::<6, 4, 3>($($arg),*),
                (1, 5) => $f::<12, 1, 5>($($arg),*),
                (2, 5) => $f::<12, 2, 5>($($arg),*),
                (3, 5) => $f::<8, 3, 5>($($arg),*),
                (4, 5) => $f::<6, 4, 5>($($arg),*),
                (1, _) => $f::<12, 1, 0>($($arg),*),
                (2, _) => $f::<12, 2, 0>($($arg),*),
                (3, _) => $f::<8, 3, 0>($($arg),*),
                (4, _) => $f::<6, 4, 0>($($arg),*),
                _ => unreachable!("unsupported tile size"),
            }
        } else {
            match ($mr, $nv) {
                (8, 2) => $f::<8, 2, 0>($($arg),*),
                (8, 1) => $f::<8, 1, 0>($($arg),*),
                (7, 2) => $f::<7, 2, 0>($($arg),*),
                (7, 1) => $f::<7, 1, 0>($($arg),*),
                (6, 2) => $f::<6, 2, 0>($($arg),*),
                (6, 1) => $f::<6, 1, 0>($($arg),*),
                (5, 2) => $f::<5, 2, 0>($($arg),*),
                (5, 1) => $f::<5, 1, 0>($($arg),*),
                (4, 4) => $f::<4, 4, 0>($($arg),*),
                (4, 3) => $f::<4, 3, 0>($($arg),*),
                (4, 2) => $f::<4, 2, 0>($($arg),*),
                (4, 1) => $f::<4, 1, 0>($($arg),*),
                (3, 4) => $f::<3, 4, 0>($($arg),*),
                (3, 3) => $f::<3, 3, 0>($($arg),*),
                (3, 2) => $f::<3, 2, 0>($($arg),*),
                (3, 1) => $f::<3, 1, 0>($($arg),*),
                (2, 4) => $f::<2, 4, 0>($($arg),*),
                (2, 3) => $f::<2, 3, 0>($($arg),*),
                (2, 2) => $f::<2, 2, 0>($($arg),*),
                (2, 1) => $f::<2, 1, 0>($($arg),*),
                (1, 4) => $f::<1, 4, 0>($($arg),*),
                (1, 3) => $f::<1, 3, 0>($($arg),*),
                (1, 2) => $f::<1, 2, 0>($($arg),*),
                (1, 1) => $f::<1, 1, 0>($($arg),*),
                _ => unreachable!("unsupported tile size"),
            }
        }
    };
}
pub(crate) use dispatch_binary_tile;
