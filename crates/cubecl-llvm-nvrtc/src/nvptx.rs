//! NVIDIA PTX items `cubecl-cuda` names.

/// The PTX ISA version of a CUDA driver.
pub mod ptx_version {
    use core::fmt;

    /// A PTX ISA version as `major * 10 + minor` (PTX ISA 9.0 is `90`), the spelling of the
    /// `+ptxNN` target feature and of `cubecl-cuda`'s cache namespaces.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct PtxVersion(u32);

    impl PtxVersion {
        /// The newest PTX ISA version that the driver of CUDA version `driver` loads, where
        /// `driver` is `cuDriverGetVersion`'s `1000 * major + 10 * minor` (CUDA 12.8 is
        /// `12080`). `None` before CUDA 10.0.
        ///
        /// Source: NVIDIA, *PTX ISA* release notes (the CUDA release that introduced each PTX
        /// ISA version): CUDA 10.0–10.2 → 6.3–6.5, 11.0–11.8 → 7.0–7.8, 12.0–12.5 →
        /// 8.0–8.5 (12.6 adds none), 12.8 → 8.7, 12.9 → 8.8, 13.0 → 9.0, 13.1 → 9.1 and so on.
        pub fn for_driver(driver: i32) -> Option<Self> {
            if driver < 10_000 {
                return None;
            }
            let major = driver / 1000;
            let minor = (driver % 1000) / 10;
            let ptx = match major {
                10 => 63 + minor.min(2),
                11 => 70 + minor.min(8),
                12 => match minor {
                    0..=5 => 80 + minor,
                    6 | 7 => 85,
                    8 => 87,
                    _ => 88,
                },
                // CUDA 13.x: 9.x, one PTX version per minor release so far.
                13 => 90 + minor.min(9),
                // A newer driver loads everything 13.x emits.
                _ => 99,
            };
            Some(Self(ptx as u32))
        }

        /// The `+ptxNN` target feature naming this version.
        pub fn target_feature(self) -> std::ffi::CString {
            std::ffi::CString::new(format!("+{self}")).unwrap_or_default()
        }
    }

    impl fmt::Display for PtxVersion {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "ptx{}", self.0)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::PtxVersion;

        #[test]
        fn drivers_map_to_the_ptx_release_notes() {
            // (driver version, PTX ISA) from NVIDIA's PTX ISA release notes.
            for (driver, ptx) in [
                (10_000, "ptx63"),
                (10_020, "ptx65"),
                (11_000, "ptx70"),
                (11_080, "ptx78"),
                (12_000, "ptx80"),
                (12_040, "ptx84"),
                (12_060, "ptx85"),
                (12_080, "ptx87"),
                (12_090, "ptx88"),
                (13_000, "ptx90"),
                (13_010, "ptx91"),
            ] {
                let v = PtxVersion::for_driver(driver).expect("CUDA ≥ 10");
                assert_eq!(v.to_string(), ptx, "driver {driver}");
            }
            assert_eq!(PtxVersion::for_driver(9_020), None);
            assert!(PtxVersion::for_driver(13_000) > PtxVersion::for_driver(12_090));
            assert_eq!(
                PtxVersion::for_driver(13_000)
                    .unwrap()
                    .target_feature()
                    .to_str(),
                Ok("+ptx90")
            );
        }
    }
}
