//! Run-time choice of the CPU kernels' instruction set.
//!
//! The binary is built for the baseline of its architecture (x86-64 or aarch64) and picks the best path this CPU
//! can execute at start-up: AVX-512 (F + VL), AVX2 + FMA, NEON, or
//! the portable path (plain Rust over 8-lane arrays that the compiler vectorizes for whatever the target has).
//! `AUTODIDACT_SIMD=avx512|avx2|neon|scalar` forces a lower path, so every path can be exercised on one machine.
//!
//! Each kernel is written once over [`lanes::Lanes`] and instantiated per path inside a function compiled with
//! that path's target features (see [`kernels`]). Within a path every output is computed by the same sequence of
//! operations whatever the batch, so batched, incremental and single-sequence results are bit-identical; across
//! paths results differ by summation order and by fused versus separate multiply-add (the tests bound it).
use std::fmt;
use std::sync::OnceLock;

pub mod attention;
pub mod dequant;
pub mod exp;
pub mod gelu;
pub mod kernels;
pub mod lanes;
pub mod matmul;
pub mod peak;

/// An instruction-set path that this CPU can execute. Values exist only for such paths, which is what makes
/// the kernels' `unsafe` target-feature calls sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Simd(Level);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Level {
    Scalar,
    Neon,
    Avx2,
    Avx512,
}

/// Environment variable that forces a lower path.
pub const ENV: &str = "AUTODIDACT_SIMD";

#[derive(Debug, thiserror::Error)]
pub enum SimdError {
    #[error("{ENV}={0}: unknown path (expected one of avx512, avx2, neon, scalar)")]
    Unknown(String),
    #[error("{ENV}={0}: this CPU cannot execute that path (available: {1})")]
    Unavailable(String, String),
}

impl Simd {
    /// The portable path: available everywhere.
    pub const SCALAR: Simd = Simd(Level::Scalar);

    /// Every path this CPU can execute, best first.
    pub fn available() -> Vec<Simd> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                v.push(Simd(Level::Avx512));
            }
            if avx2 {
                v.push(Simd(Level::Avx2));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(Simd(Level::Neon));
        v.push(Simd::SCALAR);
        v
    }

    /// The best path this CPU can execute.
    pub fn best() -> Simd {
        Self::available()[0]
    }

    /// A path by name, if this CPU can execute it.
    pub fn parse(name: &str) -> Result<Simd, SimdError> {
        let level = match name.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx-512" => Level::Avx512,
            "avx2" => Level::Avx2,
            "neon" => Level::Neon,
            "scalar" | "portable" => Level::Scalar,
            _ => return Err(SimdError::Unknown(name.to_string())),
        };
        let avail = Self::available();
        avail
            .iter()
            .copied()
            .find(|s| s.0 == level)
            .ok_or_else(|| SimdError::Unavailable(name.to_string(), avail.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")))
    }

    /// The path this process uses: `AUTODIDACT_SIMD` if set, else the best one. Fixed at the first call.
    pub fn active() -> Simd {
        static ACTIVE: OnceLock<Simd> = OnceLock::new();
        *ACTIVE.get_or_init(|| match Self::from_env() {
            Ok(s) => s,
            Err(e) => {
                // Library users get a warning; the command line checks `from_env` first and refuses to start.
                eprintln!("warning: {e}; using {}", Self::best());
                Self::best()
            }
        })
    }

    /// The path `AUTODIDACT_SIMD` asks for (the best one when it is unset or empty).
    pub fn from_env() -> Result<Simd, SimdError> {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v),
            _ => Ok(Self::best()),
        }
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Neon => "neon",
            Level::Scalar => "scalar",
        }
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn is_avx512(self) -> bool {
        self.0 == Level::Avx512
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn uses_avx2(self) -> bool {
        matches!(self.0, Level::Avx2 | Level::Avx512)
    }

    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(crate) fn uses_neon(self) -> bool {
        self.0 == Level::Neon
    }
}

impl fmt::Display for Simd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// CPU features relevant to the kernels, for `info` and `bench` (e.g. "avx512f avx512vl avx2 fma f16c").
pub fn cpu_features() -> String {
    let mut v: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512vl", is_x86_feature_detected!("avx512vl")),
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
        ] {
            if on {
                v.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    v.push("neon");
    if v.is_empty() {
        v.push("baseline");
    }
    v.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for s in Simd::available() {
            assert_eq!(Simd::parse(s.name()).unwrap(), s);
        }
        assert_eq!(Simd::parse("scalar").unwrap(), Simd::SCALAR);
        assert!(matches!(Simd::parse("sse9"), Err(SimdError::Unknown(_))));
        assert_eq!(*Simd::available().last().unwrap(), Simd::SCALAR);
        #[cfg(target_arch = "x86_64")]
        assert!(matches!(Simd::parse("neon"), Err(SimdError::Unavailable(..))));
    }
}
