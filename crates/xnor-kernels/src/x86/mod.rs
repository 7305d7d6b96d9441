//! x86-64 SIMD kernels (AVX-512 and AVX2), selected at run time.

pub(crate) mod avx2;
pub(crate) mod avx512;

/// Binary tiles: `$full` selects the tall full-tile shapes (`12 x 1..2`, `8 x 3`, `6 x 4`)
/// with a compile-time segment shape `$shape = (NS, SL)` in {(1, 3), (1, 5)} or
/// `(0, 0)` (run time); otherwise the small shapes of [`dispatch_tile`] with run-time segments.
/// Calls `$f::<MR, NV, NS, SL>($args)`.
macro_rules! dispatch_binary_tile {
    ($f:ident, $full:expr, $shape:expr, $mr:expr, $nv:expr, $($arg:expr),* $(,)?) => {
        if $full {
            match ($nv, $shape) {
                (1, (1, 3)) => $f::<12, 1, 1, 3>($($arg),*),
                (1, (1, 5)) => $f::<12, 1, 1, 5>($($arg),*),
                (2, (1, 3)) => $f::<12, 2, 1, 3>($($arg),*),
                (2, (1, 5)) => $f::<12, 2, 1, 5>($($arg),*),
                (3, (1, 3)) => $f::<8, 3, 1, 3>($($arg),*),
                (3, (1, 5)) => $f::<8, 3, 1, 5>($($arg),*),
                (4, (1, 3)) => $f::<6, 4, 1, 3>($($arg),*),
                (4, (1, 5)) => $f::<6, 4, 1, 5>($($arg),*),
                (1, _) => $f::<12, 1, 0, 0>($($arg),*),
                (2, _) => $f::<12, 2, 0, 0>($($arg),*),
                (3, _) => $f::<8, 3, 0, 0>($($arg),*),
                (4, _) => $f::<6, 4, 0, 0>($($arg),*),
                _ => unreachable!("unsupported tile size"),
            }
        } else {
            match ($mr, $nv) {
                (8, 2) => $f::<8, 2, 0, 0>($($arg),*),
                (8, 1) => $f::<8, 1, 0, 0>($($arg),*),
                (7, 2) => $f::<7, 2, 0, 0>($($arg),*),
                (7, 1) => $f::<7, 1, 0, 0>($($arg),*),
                (6, 2) => $f::<6, 2, 0, 0>($($arg),*),
                (6, 1) => $f::<6, 1, 0, 0>($($arg),*),
                (5, 2) => $f::<5, 2, 0, 0>($($arg),*),
                (5, 1) => $f::<5, 1, 0, 0>($($arg),*),
                (4, 4) => $f::<4, 4, 0, 0>($($arg),*),
                (4, 3) => $f::<4, 3, 0, 0>($($arg),*),
                (4, 2) => $f::<4, 2, 0, 0>($($arg),*),
                (4, 1) => $f::<4, 1, 0, 0>($($arg),*),
                (3, 4) => $f::<3, 4, 0, 0>($($arg),*),
                (3, 3) => $f::<3, 3, 0, 0>($($arg),*),
                (3, 2) => $f::<3, 2, 0, 0>($($arg),*),
                (3, 1) => $f::<3, 1, 0, 0>($($arg),*),
                (2, 4) => $f::<2, 4, 0, 0>($($arg),*),
                (2, 3) => $f::<2, 3, 0, 0>($($arg),*),
                (2, 2) => $f::<2, 2, 0, 0>($($arg),*),
                (2, 1) => $f::<2, 1, 0, 0>($($arg),*),
                (1, 4) => $f::<1, 4, 0, 0>($($arg),*),
                (1, 3) => $f::<1, 3, 0, 0>($($arg),*),
                (1, 2) => $f::<1, 2, 0, 0>($($arg),*),
                (1, 1) => $f::<1, 1, 0, 0>($($arg),*),
                _ => unreachable!("unsupported tile size"),
            }
        }
    };
}
pub(crate) use dispatch_binary_tile;
