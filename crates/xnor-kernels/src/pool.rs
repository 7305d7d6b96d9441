//! 2x2 stride-2 max-pooling on packed signs and on `i32` accumulators (NHWC).
//!
//! On packed signs (bit = 1 means -1) the max over `+-1` values is the AND of the bits. In the
//! model the pool sits between the conv and BatchNorm + sign (`conv -> maxpool -> BN -> sign`),
//! so pooling the already-thresholded bits is exact when, per channel, the threshold is
//! monotone: for a non-decreasing channel `sign(BN(max acc)) = max sign(BN(acc))` (AND of the
//! bits), for a decreasing one it is the min (OR of the bits).
//! [`crate::Thresholds::pool_and_mask`] gives the per-channel mask. Odd trailing rows/columns
//! are dropped (floor), as in the training layers.

use crate::error::{Result, check_len, mul};

/// 2x2 stride-2 max-pool of packed NHWC signs: channel bits with `and_mask` set are ANDed,
/// the others ORed. `input` is `batch * h * w * ceil(c / 64)` words; `out` is
/// `batch * (h / 2) * (w / 2) * ceil(c / 64)` words.
///
/// # Errors
/// Wrong buffer lengths.
///
/// ```
/// use xnor_kernels::maxpool2x2_packed;
/// // 2x2 image, 2 channels: channel 0 pooled with AND, channel 1 with OR.
/// let input = [0b01u64, 0b01, 0b11, 0b00];
/// let mut out = [0u64; 1];
/// maxpool2x2_packed(&input, 1, 2, 2, 2, &[0b01], &mut out).unwrap();
/// assert_eq!(out, [0b10]);
/// ```
pub fn maxpool2x2_packed(
    input: &[u64],
    batch: usize,
    h: usize,
    w: usize,
    c: usize,
    and_mask: &[u64],
    out: &mut [u64],
) -> Result<()> {
    const OP: &str = "maxpool2x2_packed";
    let cw = c.div_ceil(64);
    check_len(
        OP,
        "input",
        input.len(),
        mul(OP, mul(OP, batch * h, w)?, cw)?,
    )?;
    check_len(OP, "and_mask", and_mask.len(), cw)?;
    let (ho, wo) = (h / 2, w / 2);
    check_len(OP, "out", out.len(), batch * ho * wo * cw)?;
    for b in 0..batch {
        for y in 0..ho {
            for x in 0..wo {
                let p = |dy: usize, dx: usize| ((b * h + 2 * y + dy) * w + 2 * x + dx) * cw;
                let (p00, p01, p10, p11) = (p(0, 0), p(0, 1), p(1, 0), p(1, 1));
                let o = ((b * ho + y) * wo + x) * cw;
                for i in 0..cw {
                    let (v0, v1, v2, v3) = (
                        input[p00 + i],
                        input[p01 + i],
                        input[p10 + i],
                        input[p11 + i],
                    );
                    let m = and_mask[i];
                    out[o + i] = (v0 & v1 & v2 & v3 & m) | ((v0 | v1 | v2 | v3) & !m);
                }
            }
        }
    }
    Ok(())
}

/// 2x2 stride-2 max-pool of `i32` NHWC values (`batch * h * w * c` in,
/// `batch * (h / 2) * (w / 2) * c` out).
///
/// # Errors
/// Wrong buffer lengths.
///
/// ```
/// use xnor_kernels::maxpool2x2_i32;
/// let mut out = [0i32; 1];
/// maxpool2x2_i32(&[1, -5, 7, 3], 1, 2, 2, 1, &mut out).unwrap();
/// assert_eq!(out, [7]);
/// ```
pub fn maxpool2x2_i32(
    input: &[i32],
    batch: usize,
    h: usize,
    w: usize,
    c: usize,
    out: &mut [i32],
) -> Result<()> {
    const OP: &str = "maxpool2x2_i32";
    check_len(
        OP,
        "input",
        input.len(),
        mul(OP, mul(OP, batch * h, w)?, c)?,
    )?;
    let (ho, wo) = (h / 2, w / 2);
    check_len(OP, "out", out.len(), batch * ho * wo * c)?;
    for b in 0..batch {
        for y in 0..ho {
            for x in 0..wo {
                let p = |dy: usize, dx: usize| ((b * h + 2 * y + dy) * w + 2 * x + dx) * c;
                let o = ((b * ho + y) * wo + x) * c;
                for i in 0..c {
                    out[o + i] = input[p(0, 0) + i]
                        .max(input[p(0, 1) + i])
                        .max(input[p(1, 0) + i])
                        .max(input[p(1, 1) + i]);
                }
            }
        }
    }
    Ok(())
}
