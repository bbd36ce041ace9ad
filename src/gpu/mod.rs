//! The GPU layer: adapter and device ([`Context`]), tensors in buffers, the kernel harness and its pipeline cache.
