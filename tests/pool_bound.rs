//! The tensor buffer pool over a whole training run: what it retains is bounded by the working
//! set it has seen (`autograd::pool`'s rule), so it stops growing after the first epoch, however
//! many steps, evaluations and odd-sized last batches follow.
//!
//! One test in its own binary: the pool is process-wide, and no other test may use it meanwhile.

use autograd::pool;
use autograd::Rng;
use vit::data::{AugmentConfig, Dataset, ImageShape, Loader, LoaderConfig};
use vit::nn::{ViTConfig, VisionTransformer};
use vit::optim::AdamW;
use vit::train::{evaluate, train_step};

fn dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::seed(seed);
    let shape = ImageShape::new(1, 16, 16);
    let images = (0..n * shape.len()).map(|_| rng.below(256) as u8).collect();
    let labels = (0..n).map(|_| rng.below(4) as u8).collect();
    Dataset::new(images, labels, shape, (0..4).map(|k| k.to_string()).collect()).unwrap()
}

#[test]
fn the_pool_stops_growing_after_the_first_epoch() {
    let c = ViTConfig {
        image_size: 16,
        patch_size: 4,
        in_chans: 1,
        num_classes: 4,
        dim: 32,
        depth: 2,
        heads: 2,
        mlp_dim: 64,
        drop_path: 0.1,
        ..ViTConfig::tiny(4, 16)
    };
    let (model, mut params) = VisionTransformer::init::<f32>(&c, 0).unwrap();
    let mut opt = AdamW::new(&params, 0.9, 0.999, 1e-8, 0.05);
    let batch = 32;
    let aug = AugmentConfig { crop_padding: 2, hflip: true, ..AugmentConfig::none() };
    let loader = Loader::new(dataset(320, 1), LoaderConfig::train(batch, 0, aug)).unwrap();
    // 100 test images: three batches of 32 and a last one of 4, shapes the steps never use.
    let test = Loader::eval(dataset(100, 2), batch).unwrap();
    let batch_bytes = batch * 16 * 16 * 4;
    let mut after = Vec::new();
    let mut step = 0;
    for epoch in 0..5 {
        for b in loader.epoch(epoch) {
            train_step(&model, &mut params, &mut opt, b, 1e-3, 0.1, Some(1.0), &mut Rng::seed(step)).unwrap();
            step += 1;
            let s = pool::stats::<f32>();
            assert!(
                s.retained <= s.bound,
                "step {step}: the pool holds {} bytes, over its bound {}",
                s.retained,
                s.bound
            );
        }
        evaluate(&model, &params, &test);
        after.push(pool::stats::<f32>());
    }
    let (first, last) = (after[0], after[4]);
    assert!(first.retained > 0, "the pool kept nothing: {first:?}");
    // The loader's prefetching thread may have had a batch or two more in flight at some moment
    // of a later epoch; nothing else may grow. (Before the rule, three buffers that no op takes
    // again were kept at every step: 40 steps later, megabytes.)
    let slack = 4 * batch_bytes;
    assert!(
        last.bound <= first.bound + slack && last.retained <= first.retained + slack,
        "the pool grew from {first:?} after epoch 1 to {last:?} after epoch 5"
    );
}
