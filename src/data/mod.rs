//! Datasets, augmentation and the batch loader.
