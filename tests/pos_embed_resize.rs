//! Position-embedding resize (paper section 3.2) against hand-computed cases of PyTorch's
//! `F.interpolate(align_corners=False)`: bilinear, bicubic (a = -0.75, clamped borders), and their
//! antialiased forms.
//! tests/timm_compat.rs also checks it against values computed by PyTorch itself.

use autograd::{Rng, Tensor};
use vit::checkpoint::{interpolate_grid, resize_pos_embed, Interpolation};
use vit::Error;

const ALL: [Interpolation; 4] = [
    Interpolation::Bilinear,
    Interpolation::Bicubic,
    Interpolation::BilinearAntialias,
    Interpolation::BicubicAntialias,
];

/// Bilinear 2x2 -> 4x4, by hand. Along one axis (scale 1/2, source `s = (o + 0.5) / 2 - 0.5`):
/// o = 0: s = -0.25 -> clamped to 0: x0;   o = 1: s = 0.25: 0.75 x0 + 0.25 x1;
/// o = 2: s = 0.75: 0.25 x0 + 0.75 x1;     o = 3: s = 1.25: x1 (the next index is clamped).
#[test]
fn bilinear_2x2_to_4x4_by_hand() {
    #[rustfmt::skip]
    let want = [
        1.0, 1.25, 1.75, 2.0,
        1.5, 1.75, 2.25, 2.5,
        2.5, 2.75, 3.25, 3.5,
        3.0, 3.25, 3.75, 4.0,
    ];
    // Two channels, the second ten times the first; a class slot in front.
    let pos = Tensor::<f64>::from_f64s(&[-7.0, 70.0, 1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0], &[1, 5, 2]);
    let out = resize_pos_embed(&pos, 1, None, (4, 4), Interpolation::Bilinear).unwrap();
    assert_eq!(out.shape(), [1, 17, 2]);
    assert_eq!(out.data()[..2], [-7.0, 70.0]);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(out.data()[2 + 2 * i], *w, "token {i}");
        assert_eq!(out.data()[3 + 2 * i], 10.0 * w, "token {i}, channel 1");
    }
}

/// Bilinear downsampling 4 -> 2 averages neighbour pairs (no antialiasing, as PyTorch's default):
/// s = (o + 0.5) * 2 - 0.5 = 0.5 and 2.5.
#[test]
fn bilinear_downsampling_by_hand() {
    let out: Vec<f64> = interpolate_grid(&[1.0, 2.0, 4.0, 8.0], (1, 4), 1, (1, 2), Interpolation::Bilinear);
    assert_eq!(out, [1.5, 6.0]);
}

/// Antialiased bilinear 4 -> 2 (PyTorch's `antialias=True`), by hand: the triangle is stretched
/// to half-width 2 around the centres c = 1 and 3, sampled at the input centres j + 0.5:
/// o = 0 takes j = 0, 1, 2 with 0.75, 0.75, 0.25, normalised: (3 x0 + 3 x1 + x2) / 7;
/// o = 1 takes j = 1, 2, 3 with 0.25, 0.75, 0.75: (x1 + 3 x2 + 3 x3) / 7.
#[test]
fn antialiased_bilinear_downsampling_by_hand() {
    let out: Vec<f64> = interpolate_grid(&[1.0, 2.0, 4.0, 8.0], (1, 4), 1, (1, 2), Interpolation::BilinearAntialias);
    assert!((out[0] - 13.0 / 7.0).abs() < 1e-15 && (out[1] - 38.0 / 7.0).abs() < 1e-15, "{out:?}");
    // Upsampling, the antialiased bilinear is the plain one.
    let x = [1.0, -2.0, 0.5];
    let plain: Vec<f64> = interpolate_grid(&x, (1, 3), 1, (1, 7), Interpolation::Bilinear);
    let aa: Vec<f64> = interpolate_grid(&x, (1, 3), 1, (1, 7), Interpolation::BilinearAntialias);
    for (a, b) in plain.iter().zip(&aa) {
        assert!((a - b).abs() < 1e-12, "{plain:?} vs {aa:?}");
    }
}

/// Keys' kernel with a = -0.75, written as the textbook piecewise function of |x|.
fn keys(x: f64) -> f64 {
    let (a, x) = (-0.75, x.abs());
    if x <= 1.0 {
        (a + 2.0) * x.powi(3) - (a + 3.0) * x.powi(2) + 1.0
    } else if x < 2.0 {
        a * x.powi(3) - 5.0 * a * x.powi(2) + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// 1-D bicubic as a direct sum over the 4 neighbours with clamped indices.
fn bicubic_1d(x: &[f64], out_len: usize) -> Vec<f64> {
    let n = x.len() as i64;
    (0..out_len)
        .map(|o| {
            let s = (o as f64 + 0.5) * x.len() as f64 / out_len as f64 - 0.5;
            let f = s.floor();
            (-1..=2).map(|k| keys(s - (f + k as f64)) * x[(f as i64 + k).clamp(0, n - 1) as usize]).sum()
        })
        .collect()
}

/// Bicubic [1, 2] -> 4, by hand: at o = 0, s = -0.25, t = 0.75, the taps -2, -1, 0, 1 clamp to
/// 0, 0, 0, 1 with weights W(1.75) = -0.03515625, W(0.75) = 0.26171875, W(0.25) = 0.87890625,
/// W(1.25) = -0.10546875, so y0 = 1.10546875 x0 - 0.10546875 x1 = 0.89453125; and so on
/// (the values PyTorch gives).
#[test]
fn bicubic_1d_by_hand() {
    let out: Vec<f64> = interpolate_grid(&[1.0, 2.0], (1, 2), 1, (1, 4), Interpolation::Bicubic);
    assert_eq!(out, [0.89453125, 1.2265625, 1.7734375, 2.10546875]);
    assert_eq!(bicubic_1d(&[1.0, 2.0], 4), out);
    // Downsampling 5 -> 3 lands on input 2 exactly in the middle.
    let x = [1.0, 2.0, 4.0, 8.0, 3.0];
    let out: Vec<f64> = interpolate_grid(&x, (1, 5), 1, (1, 3), Interpolation::Bicubic);
    assert_eq!(out[1], 4.0);
    for (a, b) in out.iter().zip(bicubic_1d(&x, 3)) {
        assert!((a - b).abs() < 1e-12, "{out:?}");
    }
    // Random lengths, up and down, against the direct sum.
    let mut rng = Rng::seed(1);
    for _ in 0..50 {
        let (n, m) = (1 + rng.below(9), 1 + rng.below(9));
        let x: Vec<f64> = (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        let got: Vec<f64> = interpolate_grid(&x, (1, n), 1, (1, m), Interpolation::Bicubic);
        for (a, b) in got.iter().zip(bicubic_1d(&x, m)) {
            assert!((a - b).abs() < 1e-12, "{n} -> {m}: {got:?}");
        }
        // Along the other axis too.
        let got: Vec<f64> = interpolate_grid(&x, (n, 1), 1, (m, 1), Interpolation::Bicubic);
        for (a, b) in got.iter().zip(bicubic_1d(&x, m)) {
            assert!((a - b).abs() < 1e-12, "{n} -> {m} (rows): {got:?}");
        }
    }
}

/// Both kernels are separable: an outer product `u_y v_x` maps to the outer product of the 1-D
/// interpolations of `u` and `v`.
#[test]
fn separable_in_two_dimensions() {
    let mut rng = Rng::seed(2);
    for mode in ALL {
        for _ in 0..20 {
            let (h, w, nh, nw) = (1 + rng.below(6), 1 + rng.below(6), 1 + rng.below(8), 1 + rng.below(8));
            let u: Vec<f64> = (0..h).map(|_| rng.uniform()).collect();
            let v: Vec<f64> = (0..w).map(|_| rng.uniform()).collect();
            let grid: Vec<f64> = u.iter().flat_map(|a| v.iter().map(move |b| a * b)).collect();
            let out: Vec<f64> = interpolate_grid(&grid, (h, w), 1, (nh, nw), mode);
            let u2: Vec<f64> = interpolate_grid(&u, (h, 1), 1, (nh, 1), mode);
            let v2: Vec<f64> = interpolate_grid(&v, (1, w), 1, (1, nw), mode);
            for y in 0..nh {
                for x in 0..nw {
                    assert!((out[y * nw + x] - u2[y] * v2[x]).abs() < 1e-12, "{mode:?} {h}x{w} -> {nh}x{nw}");
                }
            }
        }
    }
}

#[test]
fn same_size_is_the_identity() {
    let mut rng = Rng::seed(3);
    for mode in ALL {
        let grid: Vec<f32> = (0..3 * 5 * 4).map(|_| rng.uniform() as f32 - 0.5).collect();
        assert_eq!(interpolate_grid(&grid, (3, 5), 4, (3, 5), mode), grid);
        let pos = Tensor::<f32>::randn(&[1, 1 + 14 * 14, 8], 0.0, 0.02, &mut rng);
        let out = resize_pos_embed(&pos, 1, None, (14, 14), mode).unwrap();
        assert_eq!(out.shape(), pos.shape());
        assert_eq!(out.data(), pos.data());
    }
}

#[test]
fn constants_stay_constant() {
    for mode in ALL {
        for (h, w, nh, nw) in [(2, 2, 7, 7), (14, 14, 24, 24), (24, 24, 14, 14), (3, 5, 1, 2)] {
            let out: Vec<f64> = interpolate_grid(&vec![0.75; h * w * 3], (h, w), 3, (nh, nw), mode);
            assert!(out.iter().all(|v| (v - 0.75).abs() < 1e-12), "{mode:?} {h}x{w} -> {nh}x{nw}");
        }
    }
}

#[test]
fn class_slots_are_kept() {
    let mut rng = Rng::seed(4);
    for prefix in [0, 1, 2] {
        let pos = Tensor::<f32>::randn(&[1, prefix + 9, 5], 0.0, 1.0, &mut rng);
        let out = resize_pos_embed(&pos, prefix, None, (4, 4), Interpolation::Bicubic).unwrap();
        assert_eq!(out.shape(), [1, prefix + 16, 5]);
        assert_eq!(out.data()[..prefix * 5], pos.data()[..prefix * 5]);
        let grid: Vec<f32> = interpolate_grid(&pos.data()[prefix * 5..], (3, 3), 5, (4, 4), Interpolation::Bicubic);
        assert_eq!(out.data()[prefix * 5..], grid[..]);
    }
}

fn message<T: std::fmt::Debug>(r: vit::Result<T>) -> String {
    match r {
        Err(Error::Checkpoint(msg)) => msg,
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn non_square_grids_need_the_grid() {
    let pos = Tensor::<f32>::from_fn(&[1, 1 + 6, 2], |i| i as f32);
    let msg = message(resize_pos_embed(&pos, 1, None, (4, 4), Interpolation::Bilinear));
    assert!(msg.contains("pos_embed: 6 patch tokens (shape [1, 7, 2]) are not a square grid"), "{msg}");
    let out = resize_pos_embed(&pos, 1, Some((2, 3)), (4, 4), Interpolation::Bilinear).unwrap();
    assert_eq!(out.shape(), [1, 17, 2]);
    let grid: Vec<f32> = interpolate_grid(&pos.data()[2..], (2, 3), 2, (4, 4), Interpolation::Bilinear);
    assert_eq!(out.data()[2..], grid[..]);
    let msg = message(resize_pos_embed(&pos, 1, Some((3, 3)), (4, 4), Interpolation::Bilinear));
    assert!(msg.contains("the given grid 3x3 does not match the 6 patch tokens"), "{msg}");
    let msg = message(resize_pos_embed(&Tensor::<f32>::zeros(&[7, 2]), 1, None, (4, 4), Interpolation::Bilinear));
    assert!(msg.contains("expected shape [1, tokens, D]"), "{msg}");
}
