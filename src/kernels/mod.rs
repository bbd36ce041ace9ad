//! One typed wrapper per WGSL shader family, named like its shader file in `shaders/`.
