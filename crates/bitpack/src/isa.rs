//! Instruction-set detection and the once-per-process ISA choice (`XNOR_ISA`).
//!
//! Every SIMD path in `bitpack` and `xnor-kernels` is selected through [`selected_isa`], which
//! is decided once per process and cached, so benchmarks and summaries can print what really
//! ran. The environment variable `XNOR_ISA=scalar|avx2|avx512|neon` forces a path; forcing an
//! ISA the CPU lacks is an error ([`BitpackError::IsaUnavailable`]), never a silent fallback.
//!
//! # What each ISA level requires
//! | [`Isa`] | CPU features (all required) | `#[target_feature]` string |
//! |---|---|---|
//! | `Scalar` | none | none |
//! | `Avx2` | avx2, fma, bmi1, bmi2, popcnt | [`Isa::AVX2_TARGET_FEATURES`] |
//! | `Avx512` | the `Avx2` set, plus avx512f, avx512bw, avx512vl, avx512vpopcntdq | [`Isa::AVX512_TARGET_FEATURES`] |
//! | `Neon` | neon (aarch64 only) | `"neon"` |
//!
//! `Avx2` is the x86-64-v3 core (every AVX2 CPU since Haswell / Excavator has FMA, BMI1/2 and
//! POPCNT), so AVX2 kernels may freely use `_popcnt64`, `_pext_u64` and FMA. `Avx512` includes
//! the whole `Avx2` set, so AVX-512 code may call AVX2 helpers. VNNI is not part of any level:
//! query it with [`has_avx512_vnni`] / [`has_avx_vnni`] for the int8 kernels.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::{BitpackError, Result};

/// An instruction-set level a kernel can be compiled for. Ordered from most to least capable in
/// [`Isa::available`].
///
/// ```
/// use bitpack::isa::Isa;
/// let isa: Isa = "avx2".parse().unwrap();
/// assert_eq!(isa.name(), "avx2");
/// assert!(Isa::Scalar.is_available());
/// assert_eq!(*Isa::available().last().unwrap(), Isa::Scalar);
/// assert!("sse9".parse::<Isa>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, always available; the reference every SIMD path must equal exactly.
    Scalar,
    /// x86-64 AVX2 + FMA + BMI1 + BMI2 + POPCNT.
    Avx2,
    /// x86-64 AVX-512 F + BW + VL + VPOPCNTDQ (plus the whole `Avx2` set).
    Avx512,
    /// aarch64 Advanced SIMD.
    Neon,
}

/// The names accepted by [`Isa::from_str`] and `XNOR_ISA`, in the order of [`Isa::ALL`].
pub const ISA_NAMES: &[&str] = &["scalar", "avx2", "avx512", "neon"];

/// The environment variable that forces an ISA.
pub const ISA_ENV_VAR: &str = "XNOR_ISA";

impl Isa {
    /// Every ISA, best first within each architecture (`Avx512`, `Avx2`, `Neon`, `Scalar`).
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar];

    /// The `#[target_feature(enable = ...)]` string matching [`Isa::Avx2`].
    pub const AVX2_TARGET_FEATURES: &'static str = "avx2,fma,bmi1,bmi2,popcnt";

    /// The `#[target_feature(enable = ...)]` string matching [`Isa::Avx512`].
    pub const AVX512_TARGET_FEATURES: &'static str =
        "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq";

    /// The short name: `"scalar"`, `"avx2"`, `"avx512"` or `"neon"`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU (detected at run time) supports every feature of this level.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_available(),
            Isa::Avx512 => avx512_available(),
            Isa::Neon => neon_available(),
        }
    }

    /// Every ISA usable on this host, best first; always ends with [`Isa::Scalar`].
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The best ISA this host supports (ignores `XNOR_ISA`; see [`selected_isa`]).
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// `Ok(self)` when available, else [`BitpackError::IsaUnavailable`] naming `requested_by`.
    pub fn require(self, requested_by: &'static str) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(BitpackError::IsaUnavailable {
                isa: self,
                requested_by,
                available: Isa::available(),
            })
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = BitpackError;

    /// Parses a short name (ASCII case-insensitive, surrounding whitespace ignored).
    fn from_str(s: &str) -> Result<Isa> {
        let t = s.trim();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| BitpackError::UnknownIsa {
                name: s.to_string(),
                valid: ISA_NAMES,
            })
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("popcnt")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn avx2_available() -> bool {
    false
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn avx512_available() -> bool {
    avx2_available()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn avx512_available() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn neon_available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

#[cfg(not(target_arch = "aarch64"))]
fn neon_available() -> bool {
    false
}

/// Whether the CPU has AVX-512 VNNI (`vpdpbusd` on zmm), on top of [`Isa::Avx512`].
pub fn has_avx512_vnni() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        Isa::Avx512.is_available() && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        false
    }
}

/// Whether the CPU has AVX-VNNI (the VEX-encoded `vpdpbusd` on ymm), on top of [`Isa::Avx2`].
pub fn has_avx_vnni() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        Isa::Avx2.is_available() && std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        false
    }
}

/// Decides the ISA from an (injected) value of `XNOR_ISA`: `None` or an empty value picks
/// [`Isa::best`]; a name picks that ISA if the CPU has it, else
/// [`BitpackError::IsaUnavailable`]; an unknown name is [`BitpackError::UnknownIsa`].
///
/// [`selected_isa`] calls this once with the real environment; tests call it directly.
///
/// ```
/// use bitpack::isa::{decide_isa, Isa};
/// assert_eq!(decide_isa(None).unwrap(), Isa::best());
/// assert_eq!(decide_isa(Some("scalar")).unwrap(), Isa::Scalar);
/// assert!(decide_isa(Some("mmx")).is_err());
/// ```
pub fn decide_isa(env: Option<&str>) -> Result<Isa> {
    match env.map(str::trim) {
        None | Some("") => Ok(Isa::best()),
        Some(name) => name.parse::<Isa>()?.require(ISA_ENV_VAR),
    }
}

/// The ISA every dispatching function in this process uses: decided on the first call from
/// `XNOR_ISA` (see [`decide_isa`]) and cached; every later call returns the same result, even if
/// the environment changes.
///
/// # Errors
/// [`BitpackError::UnknownIsa`] or [`BitpackError::IsaUnavailable`] when `XNOR_ISA` is set to
/// something unusable; the error is cached too.
///
/// ```
/// let isa = bitpack::isa::selected_isa();
/// // Fails only when XNOR_ISA names an unknown or unsupported ISA.
/// if let Ok(isa) = isa {
///     assert!(isa.is_available());
/// }
/// ```
pub fn selected_isa() -> Result<Isa> {
    static CHOICE: OnceLock<Result<Isa>> = OnceLock::new();
    CHOICE
        .get_or_init(|| match std::env::var(ISA_ENV_VAR) {
            Ok(v) => decide_isa(Some(&v)),
            Err(std::env::VarError::NotPresent) => decide_isa(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(BitpackError::UnknownIsa {
                name: v.to_string_lossy().into_owned(),
                valid: ISA_NAMES,
            }),
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
            assert_eq!(isa.to_string(), isa.name());
        }
        assert_eq!(" AVX512 ".parse::<Isa>().unwrap(), Isa::Avx512);
    }

    #[test]
    fn unknown_name_lists_valid_names() {
        let err = "sse4".parse::<Isa>().unwrap_err();
        assert!(matches!(&err, BitpackError::UnknownIsa { name, .. } if name == "sse4"));
        let msg = err.to_string();
        for n in ISA_NAMES {
            assert!(msg.contains(n), "{msg}");
        }
    }

    #[test]
    fn available_is_best_first_and_ends_with_scalar() {
        let av = Isa::available();
        assert_eq!(av.last(), Some(&Isa::Scalar));
        assert_eq!(av[0], Isa::best());
        assert!(av.iter().all(|i| i.is_available()));
        if Isa::Avx512.is_available() {
            assert!(Isa::Avx2.is_available(), "Avx512 level includes Avx2");
        }
    }

    #[test]
    fn decide_honours_env_and_rejects_unavailable() {
        assert_eq!(decide_isa(None).unwrap(), Isa::best());
        assert_eq!(decide_isa(Some("  ")).unwrap(), Isa::best());
        for isa in Isa::ALL {
            let got = decide_isa(Some(isa.name()));
            if isa.is_available() {
                assert_eq!(got.unwrap(), isa);
            } else {
                assert!(matches!(
                    got,
                    Err(BitpackError::IsaUnavailable { isa: i, requested_by: "XNOR_ISA", .. }) if i == isa
                ));
            }
        }
        assert!(matches!(
            decide_isa(Some("avx1024")),
            Err(BitpackError::UnknownIsa { .. })
        ));
    }

    #[test]
    fn some_isa_is_unavailable_on_every_host() {
        // Neon and the x86 levels are mutually exclusive, so forcing one must fail somewhere.
        let unavailable: Vec<Isa> = Isa::ALL.into_iter().filter(|i| !i.is_available()).collect();
        assert!(!unavailable.is_empty());
        for isa in unavailable {
            assert!(decide_isa(Some(isa.name())).is_err());
        }
    }

    #[test]
    fn selected_isa_is_cached() {
        let a = selected_isa().map_err(|e| e.to_string());
        let b = selected_isa().map_err(|e| e.to_string());
        assert_eq!(a, b);
    }
}
