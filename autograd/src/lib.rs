//! # autograd
//!
//! A small, readable reverse-mode automatic differentiation library: tensors ([`Tensor`]), an
//! explicit per-step tape ([`Graph`]) addressed by `Copy` handles ([`Var`]), ops whose backward is
//! written by hand next to their forward ([`ops`]), the kernels they run on ([`kernels`]), and a
//! finite-difference checker ([`gradcheck()`]) that every op is tested with.
//!
//! ```
//! use autograd::{Graph, Tensor};
//! let mut g = Graph::<f64>::new();
//! let x = g.param(&Tensor::from_f64s(&[1.0, 2.0, 3.0], &[3]));
//! let y = g.mul(x, x);              // y_i = x_i^2
//! let loss = g.sum_all(y);          // L = sum_i x_i^2
//! g.backward(loss);
//! assert_eq!(g.grad(x).unwrap().data(), &[2.0, 4.0, 6.0]); // dL/dx = 2x
//! ```

#![deny(missing_docs)]

pub mod device;
pub mod dtype;
pub mod gradcheck;
pub mod graph;
pub mod kernels;
pub mod memory;
pub mod ops;
pub mod pool;
pub mod rng;
pub mod tensor;

#[cfg(feature = "cuda")]
pub mod cuda;

pub use device::{DeviceError, DeviceRequest};
pub use dtype::{DType, Float};
pub use gradcheck::{gradcheck, GradcheckError, GradcheckOptions, GradcheckReport};
pub use graph::{BackwardCtx, Graph, Op, Var};
pub use memory::{OutputPolicy, Recomputed, Saves};
pub use rng::Rng;
pub use tensor::{Device, Tensor};
