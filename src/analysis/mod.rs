//! What a trained ViT learned and how training went: the figures of the paper's section 4.5
//! ("Inspecting Vision Transformer") and the training curves.
//!
//! Each file holds one figure: the numbers behind it (plain functions, tested on hand-built
//! inputs) and the drawing, which writes a PNG with the numbers beside it as CSV or JSON.
//!
//! - [`curves`]: train/test loss and accuracy, learning rate, accuracy against time;
//! - [`confusion`]: the confusion matrix of an evaluation.
//!
//! Drawing goes through [`canvas`]: plotters' bitmap backend with a font embedded in the binary.

pub mod canvas;
pub mod confusion;
pub mod curves;
