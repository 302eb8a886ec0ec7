//! Augmentation properties: shapes, flips, crops against an explicitly padded image,
//! normalisation round trips, RandAugment determinism and ranges, random erasing, mixup and
//! cutmix algebra.

use proptest::prelude::*;

use autograd::Rng;
use vit::data::augment::{self, AugOp, AugmentConfig, Normalization, RandAugment, RandomErasing, Scratch};
use vit::data::ImageShape;

/// A pixel-domain image with distinct values in (0, 1).
fn ramp(shape: ImageShape) -> Vec<f32> {
    (0..shape.len()).map(|i| (i as f32 + 1.0) / (shape.len() as f32 + 2.0)).collect()
}

/// A random byte-level pixel-domain image.
fn noise(shape: ImageShape, seed: u64) -> Vec<f32> {
    let mut rng = Rng::seed(seed);
    (0..shape.len()).map(|_| rng.below(256) as f32 / 255.0).collect()
}

fn at(img: &[f32], s: ImageShape, c: usize, y: usize, x: usize) -> f32 {
    img[c * s.plane() + y * s.w + x]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hflip_mirrors_and_twice_is_identity(c in 1usize..4, h in 1usize..9, w in 1usize..9) {
        let s = ImageShape::new(c, h, w);
        let img = ramp(s);
        let mut once = img.clone();
        augment::hflip(&mut once, s);
        for ch in 0..c { for y in 0..h { for x in 0..w {
            prop_assert_eq!(at(&once, s, ch, y, x), at(&img, s, ch, y, w - 1 - x));
        }}}
        let mut twice = once.clone();
        augment::hflip(&mut twice, s);
        prop_assert_eq!(twice, img);
    }

    /// The crop equals the same window of an explicitly zero-padded image, and its offset stays
    /// within the padding.
    #[test]
    fn random_crop_is_a_window_of_the_padded_image(
        c in 1usize..4, h in 1usize..10, w in 1usize..10, pad in 0usize..5, seed in any::<u64>()
    ) {
        let s = ImageShape::new(c, h, w);
        let img = ramp(s);
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut padded = vec![0f32; c * ph * pw];
        for ch in 0..c { for y in 0..h { for x in 0..w {
            padded[ch * ph * pw + (y + pad) * pw + x + pad] = at(&img, s, ch, y, x);
        }}}
        let mut out = vec![f32::NAN; s.len()];
        let (dy, dx) = augment::random_crop(&img, s, pad, &mut Rng::seed(seed), &mut out);
        prop_assert!(dy.unsigned_abs() <= pad && dx.unsigned_abs() <= pad);
        let (oy, ox) = ((pad as isize + dy) as usize, (pad as isize + dx) as usize);
        for ch in 0..c { for y in 0..h { for x in 0..w {
            prop_assert_eq!(at(&out, s, ch, y, x), padded[ch * ph * pw + (y + oy) * pw + x + ox]);
        }}}
    }

    #[test]
    fn normalize_then_denormalize_is_identity(c in 1usize..4, h in 1usize..6, w in 1usize..6, seed in any::<u64>()) {
        let s = ImageShape::new(c, h, w);
        let mut rng = Rng::seed(seed);
        let norm = Normalization {
            mean: (0..c).map(|_| rng.uniform() as f32).collect(),
            std: (0..c).map(|_| 0.05 + rng.uniform() as f32).collect(),
        };
        let img = noise(s, seed);
        let mut x = img.clone();
        norm.normalize(&mut x, s);
        for ch in 0..c {
            let v = at(&x, s, ch, 0, 0);
            let expect = (at(&img, s, ch, 0, 0) - norm.mean[ch]) / norm.std[ch];
            prop_assert!((v - expect).abs() < 1e-5, "{} vs {}", v, expect);
        }
        norm.denormalize(&mut x, s);
        for (a, b) in x.iter().zip(&img) {
            prop_assert!((a - b).abs() < 1e-6);
        }
    }

    /// Every op at every level and sign keeps a byte-level image inside [0, 1] and finite.
    #[test]
    fn every_randaugment_op_keeps_values_in_range(
        op in 0usize..14, level in 0.0f32..=1.0, negate in any::<bool>(), c in prop::sample::select(vec![1usize, 3]),
        h in 1usize..12, w in 1usize..12, seed in any::<u64>()
    ) {
        let s = ImageShape::new(c, h, w);
        let mut img = noise(s, seed);
        augment::apply_op(AugOp::ALL[op], level, negate, &mut img, s, &mut Vec::new());
        prop_assert!(img.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)), "{:?}", AugOp::ALL[op]);
    }
}

#[test]
fn every_crop_offset_occurs() {
    let s = ImageShape::new(1, 4, 4);
    let img = ramp(s);
    let mut seen = std::collections::HashSet::new();
    let mut rng = Rng::seed(3);
    let mut out = vec![0f32; s.len()];
    for _ in 0..2000 {
        seen.insert(augment::random_crop(&img, s, 2, &mut rng, &mut out));
    }
    assert_eq!(seen.len(), 25, "offsets in -2..=2 squared");
}

#[test]
fn shift_moves_content_and_fills_zeros() {
    let s = ImageShape::new(1, 3, 4);
    let img: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    let mut out = vec![0f32; 12];
    augment::shift(&img, s, 1, -1, &mut out);
    #[rustfmt::skip]
    let expect = [0.0, 5.0, 6.0, 7.0,
                  0.0, 9.0, 10.0, 11.0,
                  0.0, 0.0, 0.0, 0.0];
    assert_eq!(out, expect);
    augment::shift(&img, s, 0, 9, &mut out);
    assert!(out.iter().all(|&v| v == 0.0));
}

#[test]
fn geometric_and_colour_ops_at_level_zero_are_identity() {
    let s = ImageShape::new(3, 8, 8);
    let img = noise(s, 1);
    for op in [
        AugOp::Identity,
        AugOp::Rotate,
        AugOp::ShearX,
        AugOp::ShearY,
        AugOp::TranslateX,
        AugOp::TranslateY,
        AugOp::Brightness,
        AugOp::Color,
        AugOp::Contrast,
        AugOp::Sharpness,
        AugOp::Posterize,
    ] {
        for negate in [false, true] {
            let mut x = img.clone();
            augment::apply_op(op, 0.0, negate, &mut x, s, &mut Vec::new());
            let diff = x.iter().zip(&img).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-6, "{op:?} at level 0 changed the image by {diff}");
        }
    }
}

#[test]
fn individual_ops_do_what_their_names_say() {
    let s = ImageShape::new(1, 4, 4);
    let mut scratch = Vec::new();
    let dim: Vec<f32> = (0..16).map(|i| 0.2 + 0.4 * i as f32 / 15.0).collect();

    let mut x = dim.clone();
    augment::apply_op(AugOp::AutoContrast, 1.0, false, &mut x, s, &mut scratch);
    assert_eq!((x[0], x[15]), (0.0, 1.0));

    let mut x = dim.clone();
    augment::apply_op(AugOp::Brightness, 0.5, false, &mut x, s, &mut scratch);
    assert!((x[3] - dim[3] * 1.45).abs() < 1e-6);

    let mut x = dim.clone();
    augment::apply_op(AugOp::Posterize, 1.0, false, &mut x, s, &mut scratch);
    assert!(x.iter().all(|v| ((v * 255.0).round() as u32).is_multiple_of(16)), "4 bits left: {x:?}");

    let mut x = vec![0.1, 0.5, 0.9, 1.0];
    augment::apply_op(AugOp::Solarize, 0.5, false, &mut x, ImageShape::new(1, 1, 4), &mut scratch);
    assert_eq!(x, vec![0.1, 0.5, 1.0 - 0.9, 0.0]);

    // Equalize spreads a narrow histogram over the full range.
    // (PIL leaves images with fewer than 256 pixels outside the top level unchanged: use 32x32.)
    let s32 = ImageShape::new(1, 32, 32);
    let mut x: Vec<f32> = (0..1024).map(|i| (51 + (i * 37) % 100) as f32 / 255.0).collect();
    augment::apply_op(AugOp::Equalize, 1.0, false, &mut x, s32, &mut scratch);
    let (lo, hi) = x.iter().fold((1f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(lo < 0.1 && hi > 0.85, "{x:?}");

    // Translate by the full magnitude: 150/331 of 32 columns is 15 columns of black.
    let mut x = vec![1.0; s32.len()];
    augment::apply_op(AugOp::TranslateX, 1.0, false, &mut x, s32, &mut scratch);
    let black = (0..32).filter(|&c| x[c] == 0.0).count();
    assert_eq!(black, 15);

    // Rotation about the centre keeps the centre and blackens the corners of a white image.
    let s9 = ImageShape::new(1, 9, 9);
    let mut x = vec![1.0; s9.len()];
    augment::apply_op(AugOp::Rotate, 1.0, false, &mut x, s9, &mut scratch);
    assert_eq!(x[4 * 9 + 4], 1.0);
    assert!(x[0] < 0.5 && x[80] < 0.5, "corners {} {}", x[0], x[80]);

    // Colour at factor 1 - 0.9 moves RGB towards grey; a grey image is a fixed point.
    let s3 = ImageShape::new(3, 1, 1);
    let mut grey = vec![0.4, 0.4, 0.4];
    augment::apply_op(AugOp::Color, 1.0, true, &mut grey, s3, &mut scratch);
    assert!(grey.iter().all(|v| (v - 0.4).abs() < 1e-6));
    let mut red = vec![1.0, 0.0, 0.0];
    augment::apply_op(AugOp::Color, 1.0, true, &mut red, s3, &mut scratch);
    assert!(red[0] < 0.5 && red[1] > 0.2, "{red:?}");
}

#[test]
fn randaugment_is_deterministic_per_seed() {
    let s = ImageShape::new(3, 16, 16);
    let img = noise(s, 5);
    let ra = RandAugment { ops: 3, magnitude: 15.0 };
    let run = |seed| {
        let mut x = img.clone();
        ra.apply(&mut x, s, &mut Rng::seed(seed), &mut Vec::new());
        x
    };
    assert_eq!(run(11), run(11));
    let distinct: std::collections::HashSet<Vec<u32>> =
        (0..20).map(|seed| run(seed).iter().map(|v| v.to_bits()).collect()).collect();
    assert!(distinct.len() > 10, "only {} distinct results over 20 seeds", distinct.len());
}

#[test]
fn random_erasing_zeroes_one_box_in_every_channel() {
    let s = ImageShape::new(3, 32, 32);
    let cfg = RandomErasing { prob: 1.0, ..Default::default() };
    let mut erased_any = false;
    for seed in 0..50 {
        let img: Vec<f32> = ramp(s);
        let mut x = img.clone();
        let Some((y, xx, h, w)) = augment::random_erasing(&mut x, s, &cfg, &mut Rng::seed(seed)) else { continue };
        erased_any = true;
        let frac = (h * w) as f32 / s.plane() as f32;
        assert!((0.01..=0.4).contains(&frac), "erased fraction {frac}");
        for c in 0..3 {
            for yy in 0..32 {
                for xi in 0..32 {
                    let inside = (y..y + h).contains(&yy) && (xx..xx + w).contains(&xi);
                    let v = at(&x, s, c, yy, xi);
                    assert_eq!(v, if inside { 0.0 } else { at(&img, s, c, yy, xi) });
                }
            }
        }
    }
    assert!(erased_any);
    let mut x = ramp(s);
    let never = RandomErasing { prob: 0.0, ..Default::default() };
    assert!(augment::random_erasing(&mut x, s, &never, &mut Rng::seed(1)).is_none());
    assert_eq!(x, ramp(s));
}

/// A batch of `b` images where image i is constant `i + 1`.
fn constant_batch(b: usize, s: ImageShape) -> Vec<f32> {
    (0..b).flat_map(|i| std::iter::repeat_n(i as f32 + 1.0, s.len())).collect()
}

#[test]
fn mixup_is_a_convex_combination_with_the_returned_partners() {
    let s = ImageShape::new(2, 3, 3);
    let b = 6;
    let labels: Vec<usize> = (0..b).collect();
    for seed in 0..30 {
        let orig: Vec<f32> = (0..b * s.len()).map(|i| (i * 7 % 13) as f32).collect();
        let mut x = orig.clone();
        let mix = augment::mixup(&mut x, s, &labels, 0.4, &mut Rng::seed(seed));
        assert!((0.0..=1.0).contains(&mix.lambda), "lambda {}", mix.lambda);
        let mut partners = mix.labels_b.clone();
        partners.sort();
        assert_eq!(partners, labels, "the partners are a permutation");
        for i in 0..b {
            let j = mix.labels_b[i]; // labels are the indices here
            for p in 0..s.len() {
                let expect = mix.lambda * orig[i * s.len() + p] + (1.0 - mix.lambda) * orig[j * s.len() + p];
                assert!((x[i * s.len() + p] - expect).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn cutmix_lambda_matches_the_pasted_box_area() {
    let s = ImageShape::new(3, 10, 12);
    let b = 5;
    let labels: Vec<usize> = (0..b).collect();
    let mut lambdas = Vec::new();
    for seed in 0..200 {
        let mut x = constant_batch(b, s);
        let (mix, bx) = augment::cutmix(&mut x, s, &labels, 1.0, &mut Rng::seed(seed));
        assert!((0.0..=1.0).contains(&mix.lambda));
        assert!((mix.lambda - (1.0 - bx.area() as f32 / s.plane() as f32)).abs() < 1e-6);
        for i in 0..b {
            let (own, other) = (i as f32 + 1.0, mix.labels_b[i] as f32 + 1.0);
            let img = &x[i * s.len()..(i + 1) * s.len()];
            let from_other = img.iter().filter(|&&v| v == other).count();
            let own_left = img.iter().filter(|&&v| v == own).count();
            if own != other {
                // The partner's pixels fill exactly the box, in every channel.
                assert_eq!(from_other, 3 * bx.area());
                assert!((own_left as f32 / s.len() as f32 - mix.lambda).abs() < 1e-6);
            } else {
                assert_eq!(own_left, s.len());
            }
        }
        lambdas.push(mix.lambda);
    }
    // Beta(1, 1) draws, raised by clipping at the borders: still spread over most of the range.
    let (lo, hi) = lambdas.iter().fold((1f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(lo < 0.5 && hi > 0.95, "lambda range {lo}..{hi}");
}

#[test]
fn mix_batch_follows_the_config() {
    let s = ImageShape::new(1, 4, 4);
    let labels = vec![0, 1, 2, 3];
    let mut x = constant_batch(4, s);
    let none = AugmentConfig::default();
    assert!(augment::mix_batch(&mut x, s, &labels, &none, &mut Rng::seed(1)).is_none());
    assert_eq!(x, constant_batch(4, s));
    let off = AugmentConfig { mixup_alpha: 1.0, mix_prob: 0.0, ..Default::default() };
    assert!(augment::mix_batch(&mut x, s, &labels, &off, &mut Rng::seed(1)).is_none());
    let on = AugmentConfig { mixup_alpha: 1.0, cutmix_alpha: 1.0, ..Default::default() };
    let mixed = (0..20).filter(|&seed| augment::mix_batch(&mut x, s, &labels, &on, &mut Rng::seed(seed)).is_some());
    assert_eq!(mixed.count(), 20);
}

/// The light pipeline step by step, as `augment_image` ran it before the one-pass path:
/// bytes -> [0, 1] -> random crop -> flip -> normalise -> erase, drawing from `rng` in that order.
fn light_step_by_step(src: &[u8], s: ImageShape, cfg: &AugmentConfig, norm: &Normalization, rng: &mut Rng) -> Vec<f32> {
    let mut img = vec![0f32; s.len()];
    augment::to_unit(src, &mut img);
    if cfg.crop_padding > 0 {
        let mut cropped = vec![0f32; s.len()];
        augment::random_crop(&img, s, cfg.crop_padding, rng, &mut cropped);
        img = cropped;
    }
    if cfg.hflip && rng.below(2) == 1 {
        augment::hflip(&mut img, s);
    }
    norm.normalize(&mut img, s);
    if let Some(e) = &cfg.erasing {
        augment::random_erasing(&mut img, s, e, rng);
    }
    img
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Crop, flip and normalisation in one pass from bytes give the very bits of the steps one
    /// after the other, and leave the RNG where they would (erasing draws after them).
    #[test]
    fn the_one_pass_light_pipeline_equals_the_steps(
        c in 1usize..4, h in 1usize..12, w in 1usize..12, pad in 0usize..5, hflip: bool, erase: bool, seed in 0u64..1000,
    ) {
        let s = ImageShape::new(c, h, w);
        let mut r = Rng::seed(seed);
        let src: Vec<u8> = (0..s.len()).map(|_| r.below(256) as u8).collect();
        let norm = Normalization { mean: (0..c).map(|i| 0.2 + 0.1 * i as f32).collect(), std: vec![0.3; c] };
        let erasing = erase.then(|| RandomErasing { prob: 1.0, ..Default::default() });
        let cfg = AugmentConfig { crop_padding: pad.min(h.max(w)), hflip, erasing, ..AugmentConfig::none() };
        let mut out = vec![f32::NAN; s.len()];
        let (mut r1, mut r2) = (Rng::seed(seed), Rng::seed(seed));
        augment::augment_image(&src, s, &cfg, &norm, &mut r1, &mut out, &mut Scratch::default());
        let expected = light_step_by_step(&src, s, &cfg, &norm, &mut r2);
        prop_assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(r1.below(1 << 30), r2.below(1 << 30));
    }
}

#[test]
fn augment_image_shapes_and_eval_path() {
    let s = ImageShape::new(3, 32, 32);
    let src: Vec<u8> = (0..s.len()).map(|i| (i % 256) as u8).collect();
    let norm = vit::data::DatasetKind::Cifar10.normalization();
    let mut scratch = Scratch::default();

    let mut plain = vec![0f32; s.len()];
    augment::prepare_image(&src, s, &norm, &mut plain);
    let mut none = vec![0f32; s.len()];
    augment::augment_image(&src, s, &AugmentConfig::none(), &norm, &mut Rng::seed(1), &mut none, &mut scratch);
    assert_eq!(plain, none, "no augmentation = the eval pipeline");
    assert!((plain[1] - (1.0 / 255.0 - norm.mean[0]) / norm.std[0]).abs() < 1e-6);

    let strong = AugmentConfig::strong();
    let mut a = vec![0f32; s.len()];
    let mut b = vec![0f32; s.len()];
    augment::augment_image(&src, s, &strong, &norm, &mut Rng::seed(9), &mut a, &mut scratch);
    augment::augment_image(&src, s, &strong, &norm, &mut Rng::seed(9), &mut b, &mut scratch);
    assert_eq!(a, b, "same RNG state, same image");
    assert!(a.iter().all(|v| v.is_finite()));
    // Normalised values of pixels in [0, 1] lie in [-mean/std, (1-mean)/std].
    let lo = (0..3).map(|c| -norm.mean[c] / norm.std[c]).fold(f32::INFINITY, f32::min);
    let hi = (0..3).map(|c| (1.0 - norm.mean[c]) / norm.std[c]).fold(f32::NEG_INFINITY, f32::max);
    assert!(a.iter().all(|&v| v >= lo - 1e-5 && v <= hi + 1e-5));
}

#[test]
fn augment_config_defaults_and_checks() {
    let d = AugmentConfig::default();
    assert_eq!((d.crop_padding, d.hflip), (4, true));
    assert!(d.randaugment.is_none() && d.erasing.is_none() && !d.mixes());
    let s = ImageShape::new(3, 32, 32);
    assert!(d.check(s).is_ok() && AugmentConfig::strong().check(s).is_ok());
    let bad = [
        AugmentConfig { mixup_alpha: -1.0, ..d.clone() },
        AugmentConfig { mix_prob: 1.5, ..d.clone() },
        AugmentConfig { crop_padding: 40, ..d.clone() },
        AugmentConfig { randaugment: Some(RandAugment { ops: 2, magnitude: 31.0 }), ..d.clone() },
        AugmentConfig { erasing: Some(RandomErasing { area: (0.5, 0.1), ..Default::default() }), ..d.clone() },
    ];
    for cfg in bad {
        let err = cfg.check(s).unwrap_err().to_string();
        assert!(err.contains("found"), "{err}");
    }
    assert!(Normalization { mean: vec![0.5], std: vec![0.0] }.check(1).is_err());
    assert!(Normalization { mean: vec![0.5], std: vec![0.5] }.check(3).is_err());
}
