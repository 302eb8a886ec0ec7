//! The loader: each index once per epoch, per-epoch orders, reproducibility from the seed,
//! parallel = sequential = background-thread assembly, evaluation order, resuming mid-epoch.

use std::collections::HashSet;
use std::sync::Arc;

use vit::data::{AugmentConfig, Batch, Dataset, ImageShape, Loader, LoaderConfig};

/// `n` images of 3 x 8 x 8 where every byte of image i is `i` (n <= 256), label i mod 10.
fn dataset(n: usize) -> Arc<Dataset> {
    let shape = ImageShape::new(3, 8, 8);
    let images: Vec<u8> = (0..n).flat_map(|i| std::iter::repeat_n(i as u8, shape.len())).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let names = (0..10).map(|c| format!("class{c}")).collect();
    Arc::new(Dataset::new(images, labels, shape, names).unwrap())
}

fn all_batches(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).collect()
}

fn indices(batches: &[Batch]) -> Vec<usize> {
    batches.iter().flat_map(|b| b.indices.iter().copied()).collect()
}

#[test]
fn every_index_appears_exactly_once_per_epoch() {
    let ds = dataset(103);
    let cfg = LoaderConfig { drop_last: false, ..LoaderConfig::train(16, 5, AugmentConfig::default()) };
    let loader = Loader::new(ds.clone(), cfg).unwrap();
    assert_eq!(loader.batches_per_epoch(), 7);
    for epoch in 0..3 {
        let batches = all_batches(&loader, epoch);
        assert_eq!(batches.len(), 7);
        assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), vec![16, 16, 16, 16, 16, 16, 7]);
        let mut seen = indices(&batches);
        seen.sort();
        assert_eq!(seen, (0..103).collect::<Vec<_>>(), "epoch {epoch}");
        for b in &batches {
            assert_eq!(b.shape, [b.len(), 3, 8, 8]);
            assert_eq!(b.images.len(), b.len() * 192);
            assert_eq!(b.labels, b.indices.iter().map(|&i| ds.label(i)).collect::<Vec<_>>());
            assert!(b.mix.is_none());
        }
    }
}

#[test]
fn drop_last_drops_only_the_partial_batch() {
    let loader = Loader::new(dataset(103), LoaderConfig::train(16, 5, AugmentConfig::default())).unwrap();
    assert_eq!(loader.batches_per_epoch(), 6);
    let batches = all_batches(&loader, 0);
    assert!(batches.iter().all(|b| b.len() == 16));
    let seen: HashSet<usize> = indices(&batches).into_iter().collect();
    assert_eq!(seen.len(), 96, "no index twice");
}

#[test]
fn epochs_differ_and_the_same_seed_gives_the_same_batches() {
    let cfg = LoaderConfig::train(10, 42, AugmentConfig::strong());
    let a = Loader::new(dataset(50), cfg.clone()).unwrap();
    let b = Loader::new(dataset(50), cfg.clone()).unwrap();
    let (a0, a1) = (all_batches(&a, 0), all_batches(&a, 1));
    assert_ne!(indices(&a0), indices(&a1), "a new order each epoch");
    assert_eq!(a0, all_batches(&b, 0), "same seed, same batches, pixels and mixing included");
    assert_eq!(a1, all_batches(&b, 1));
    assert!(a0.iter().all(|b| b.mix.as_ref().is_some_and(|m| m.labels_b.len() == b.len())));

    let other = Loader::new(dataset(50), LoaderConfig { seed: 43, ..cfg }).unwrap();
    assert_ne!(indices(&a0), indices(&all_batches(&other, 0)), "another seed, another order");
}

#[test]
fn parallel_sequential_and_background_assembly_agree() {
    let ds = dataset(40);
    let loader = Loader::new(ds, LoaderConfig::train(8, 7, AugmentConfig::strong())).unwrap();
    let order = loader.order(3);
    let background = all_batches(&loader, 3);
    for (i, from_thread) in background.iter().enumerate() {
        let par = loader.batch_in(&order, 3, i, true);
        let seq = loader.batch_in(&order, 3, i, false);
        assert_eq!(par, seq, "batch {i}: rayon vs plain loop");
        assert_eq!(&par, from_thread, "batch {i}: direct vs background thread");
        assert_eq!(par, loader.batch(3, i));
    }
}

#[test]
fn an_images_augmentation_does_not_depend_on_the_batch_size() {
    let aug = AugmentConfig { randaugment: Some(Default::default()), ..AugmentConfig::default() };
    let small = Loader::new(dataset(30), LoaderConfig::train(5, 9, aug.clone())).unwrap();
    let large = Loader::new(dataset(30), LoaderConfig::train(15, 9, aug)).unwrap();
    let image_of = |batches: Vec<Batch>, idx: usize| -> Vec<f32> {
        let b = batches.iter().find(|b| b.indices.contains(&idx)).unwrap();
        let k = b.indices.iter().position(|&i| i == idx).unwrap();
        b.images[k * 192..(k + 1) * 192].to_vec()
    };
    for idx in [0, 7, 29] {
        assert_eq!(image_of(all_batches(&small, 2), idx), image_of(all_batches(&large, 2), idx), "image {idx}");
    }
}

#[test]
fn eval_keeps_dataset_order_no_augmentation_and_the_last_partial_batch() {
    let ds = dataset(23);
    let norm = ds.normalization().clone();
    let loader = Loader::eval(ds, 10).unwrap();
    let batches = all_batches(&loader, 0);
    assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), vec![10, 10, 3]);
    assert_eq!(indices(&batches), (0..23).collect::<Vec<_>>());
    for b in &batches {
        assert!(b.mix.is_none());
        for (k, &i) in b.indices.iter().enumerate() {
            for c in 0..3 {
                let expect = (i as f32 / 255.0 - norm.mean[c]) / norm.std[c];
                let plane = &b.images[k * 192 + c * 64..k * 192 + (c + 1) * 64];
                assert!(plane.iter().all(|&v| (v - expect).abs() < 1e-6), "image {i} channel {c}");
            }
        }
    }
    assert_eq!(all_batches(&loader, 5), batches, "eval is the same every epoch");
}

#[test]
fn resuming_mid_epoch_yields_the_remaining_batches() {
    let loader = Loader::new(dataset(60), LoaderConfig::train(8, 1, AugmentConfig::strong())).unwrap();
    let full = all_batches(&loader, 4);
    let rest: Vec<Batch> = loader.epoch_from(4, 3).collect();
    assert_eq!(rest.len(), full.len() - 3);
    assert_eq!(rest, full[3..].to_vec());
    assert_eq!(loader.epoch_from(4, 100).count(), 0);
    assert_eq!(loader.epoch(4).len(), full.len());
}

#[test]
fn dropping_an_epoch_early_stops_its_thread() {
    let loader = Loader::new(dataset(200), LoaderConfig::train(4, 1, AugmentConfig::default())).unwrap();
    for _ in 0..20 {
        let mut it = loader.epoch(0);
        assert!(it.next().is_some());
        drop(it); // joins the producer, which is blocked on a full channel: must not hang
    }
}

#[test]
fn training_batches_are_augmented() {
    let loader = Loader::new(dataset(20), LoaderConfig::train(20, 3, AugmentConfig::default())).unwrap();
    let batch = loader.batch(0, 0);
    // With padding 4 on 8x8 images, crops almost surely shift some image and expose black border
    // (the value of a 0 byte after normalisation).
    let norm = loader.dataset().normalization();
    let black = -norm.mean[0] / norm.std[0];
    let shifted = (0..20).filter(|&k| batch.images[k * 192..k * 192 + 64].iter().any(|&v| (v - black).abs() < 1e-6));
    assert!(shifted.count() >= 10);
}

#[test]
fn a_zero_batch_size_is_rejected() {
    let err = Loader::new(dataset(5), LoaderConfig::eval(0)).unwrap_err().to_string();
    assert!(err.contains("batch size") && err.contains("found 0"), "{err}");
}
