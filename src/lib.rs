//! # vit
//!
//! The Vision Transformer of "An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR 2021),
//! written from first principles on the [`autograd`] crate.

pub mod analysis;
#[warn(missing_docs)]
pub mod budget;
#[warn(missing_docs)]
pub mod checkpoint;
#[warn(missing_docs)]
pub mod data;
#[warn(missing_docs)]
pub mod dist;
#[warn(missing_docs)]
pub mod error;
#[warn(missing_docs)]
pub mod image;
pub mod nn;
pub mod optim;
#[warn(missing_docs)]
pub mod train;

pub use error::{Error, Result};
