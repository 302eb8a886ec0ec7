//! # vit
//!
//! The Vision Transformer of "An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR 2021),
//! written from first principles on the [`autograd`] crate.

#![deny(missing_docs)]

pub mod analysis;
pub mod budget;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
pub mod fewshot;
pub mod image;
pub mod nn;
pub mod optim;
pub mod train;

pub use error::{Error, Result};
