//! Items shared by `cubecl-llvm`'s GPU targets that `cubecl-cuda` names.

/// What a device advertises, narrowed to what the LLVM compiler lowers.
pub mod lowered_features {
    use cubecl_core::ir::DeviceProperties;

    /// The GPU target a device's features are narrowed for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum GpuTarget {
        /// NVIDIA PTX.
        Nvptx,
    }

    /// Narrows `props` to what the LLVM compiler can lower. This stand-in lowers nothing, so
    /// it withdraws the matrix (tensor-core) features, the ones kernels choose their algorithm
    /// by. `cubecl-cuda` calls it only when its LLVM compiler is selected, which celldiff's
    /// build never does (the `cpp` feature selects NVRTC).
    pub fn restrict_features(props: &mut DeviceProperties, _target: GpuTarget) {
        let matmul = &mut props.features.matmul;
        matmul.cmma.clear();
        matmul.mma.clear();
        matmul.cube_mma = Default::default();
        matmul.scaled_mma = Default::default();
        matmul.cmma_tensor_addressing = false;
        props.hardware.num_tensor_cores = None;
        props.hardware.min_tensor_cores_dim = None;
    }
}
