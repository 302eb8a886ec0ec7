//! The numbers behind the analysis figures, on hand-built inputs: attention rollout, mean
//! attention distance, position-embedding similarity and the PCA of the patch filters.

use autograd::Rng;

use vit::analysis::attention::AttentionMaps;
use vit::analysis::distance::{mean_distance, patch_distances};
use vit::analysis::filters::{principal_components, symmetric_eigen};
use vit::analysis::pos_embed::cosine_similarity;
use vit::analysis::rollout::{image_maps, patch_map, rollout, upsample};

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

/// One image's attention maps: `layers[l][h]` is head `h`'s `N x N` attention in layer `l`.
fn maps(layers: &[Vec<Vec<f32>>], n: usize, prefix: usize) -> AttentionMaps {
    AttentionMaps {
        batch: 1,
        heads: layers[0].len(),
        tokens: n,
        prefix,
        layers: layers.iter().map(|heads| heads.concat()).collect(),
        logits: vec![0.0; 2],
    }
}

#[test]
fn rollout_of_a_hand_built_two_layer_set_equals_the_hand_computed_matrix() {
    // Three tokens (class token first, two patches), two heads per layer. The head means are
    //   A1 = [[.5 .5 0] [0 1 0] [.25 .25 .5]]      A2 = [[0 0 1] [.5 0 .5] [1/3 1/3 1/3]]
    // so Â1 = (A1 + I)/2 and Â2 = (A2 + I)/2 (rows of A sum to 1), and R = Â2 Â1 is, by hand:
    //   row 0 = .5 Â1[0] + .5 Â1[2]             = [7/16, 3/16, 3/8]
    //   row 1 = .25 Â1[0] + .5 Â1[1] + .25 Â1[2] = [7/32, 19/32, 3/16]
    //   row 2 = Â1[0]/6 + Â1[1]/6 + 2/3 Â1[2]     = [5/24, 7/24, 1/2]
    let t = 1.0 / 3.0;
    let layer1 =
        vec![vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.5], vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5]];
    let layer2 = vec![vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, t, t, t], vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0, t, t, t]];
    let m = maps(&[layer1, layer2], 3, 1);
    let means: Vec<Vec<f64>> = (0..2).map(|l| m.head_mean(l, 0)).collect();
    let expected =
        [7.0 / 16.0, 3.0 / 16.0, 3.0 / 8.0, 7.0 / 32.0, 19.0 / 32.0, 3.0 / 16.0, 5.0 / 24.0, 7.0 / 24.0, 0.5];
    let r = rollout(&means, 3);
    assert!(close(&r, &expected, 1e-7), "{r:?}");
    // The figure's map: the class token's row over the two patches.
    let shown = image_maps(&m, 0);
    assert!(close(&shown.rollout, &[3.0 / 16.0, 3.0 / 8.0], 1e-7), "{:?}", shown.rollout);
    assert!(close(&shown.layers[0], &[0.5, 0.0], 1e-7) && close(&shown.layers[1], &[0.0, 1.0], 1e-7));
    // Read as a GAP model (all three tokens are patches), the map is the mean of the rows.
    let gap = patch_map(&r, 3, 0);
    let mean_col = |j: usize| (expected[j] + expected[3 + j] + expected[6 + j]) / 3.0;
    assert!(close(&gap, &[mean_col(0), mean_col(1), mean_col(2)], 1e-7), "{gap:?}");
}

#[test]
fn rollout_of_identity_attentions_is_the_identity_and_of_uniform_ones_is_uniform() {
    let n = 5;
    let mut eye = vec![0.0; n * n];
    (0..n).for_each(|i| eye[i * n + i] = 1.0);
    // Attending only to itself, with the residual added and renormalised, each token stays
    // itself through any depth.
    let r = rollout(&[eye.clone(), eye.clone(), eye.clone()], n);
    assert!(close(&r, &eye, 1e-12), "{r:?}");
    // So the class token drew nothing from the patches, and a GAP model's patch mean draws
    // uniformly on every patch.
    assert!(patch_map(&r, n, 1).iter().all(|&v| v == 0.0));
    assert!(close(&patch_map(&r, n, 0), &[1.0 / n as f64; 5], 1e-12));
    // Uniform attention: every row of the rollout still sums to 1, and the class token draws
    // equally on every patch.
    let uniform = vec![1.0 / n as f64; n * n];
    let r = rollout(&[uniform.clone(), uniform], n);
    for row in r.chunks(n) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
    let map = patch_map(&r, n, 1);
    assert!(map.iter().all(|&v| (v - map[0]).abs() < 1e-12 && v > 0.0), "{map:?}");
}

#[test]
fn upsampling_keeps_a_constant_map_and_the_patch_values_at_their_centres() {
    assert!(upsample(&[0.25; 4], 2, 8).iter().all(|&v| (v - 0.25).abs() < 1e-7));
    // A 2x2 map at 2x: each output pixel covers one patch exactly when the scale is 1 per patch.
    let up = upsample(&[0.0, 1.0, 2.0, 3.0], 2, 2);
    assert!(close(&up, &[0.0, 1.0, 2.0, 3.0], 1e-7), "{up:?}");
    // At 4x, the pixels next to the middle interpolate half-way between the patches.
    let up = upsample(&[0.0, 1.0, 0.0, 1.0], 2, 4);
    assert!(close(&up[..4], &[0.0, 0.25, 0.75, 1.0], 1e-7), "{up:?}");
}

#[test]
fn mean_distance_of_uniform_attention_is_the_mean_pairwise_patch_distance() {
    let (grid, patch) = (3, 4);
    let np = grid * grid;
    let dist = patch_distances(grid, patch);
    // The mean over all ordered pairs of patch centres (self pairs included), from coordinates.
    let centre = |i: usize| (((i / grid) * patch + patch / 2) as f64, ((i % grid) * patch + patch / 2) as f64);
    let mut pairwise = 0.0;
    for i in 0..np {
        for j in 0..np {
            let ((a, b), (c, d)) = (centre(i), centre(j));
            pairwise += ((a - c).powi(2) + (b - d).powi(2)).sqrt() / (np * np) as f64;
        }
    }
    // Uniform over all tokens, class token included: its share is renormalised away.
    let n = np + 1;
    let uniform = vec![1.0 / n as f32; n * n];
    let d = mean_distance(&uniform, n, 1, &dist);
    assert!((d - pairwise).abs() < 1e-5, "{d} vs {pairwise}");
    // The same without a class token, and a 2x2 grid by hand: (0 + 4 + 4 + 4 sqrt 2) / 4.
    let d = mean_distance(&vec![1.0 / np as f32; np * np], np, 0, &dist);
    assert!((d - pairwise).abs() < 1e-5);
    let d = mean_distance(&[0.25f32; 16], 4, 0, &patch_distances(2, 4));
    assert!((d - (2.0 + 2f64.sqrt())).abs() < 1e-6, "{d}");
    // Attending only to itself: distance 0.
    let mut own = vec![0.0f32; n * n];
    (0..n).for_each(|i| own[i * n + i] = 1.0);
    assert_eq!(mean_distance(&own, n, 1, &dist), 0.0);
    // Attending only to the patch to the right (or the left one at the edge): one patch away.
    let mut next = vec![0.0f32; np * np];
    for i in 0..np {
        let j = if i % grid + 1 < grid { i + 1 } else { i - 1 };
        next[i * np + j] = 1.0;
    }
    assert!((mean_distance(&next, np, 0, &dist) - patch as f64).abs() < 1e-9);
}

#[test]
fn position_embedding_similarity_is_symmetric_with_a_unit_diagonal() {
    let mut rng = Rng::seed(7);
    for (n, d) in [(1, 3), (5, 4), (17, 8), (49, 64)] {
        let rows: Vec<f32> = (0..n * d).map(|_| rng.uniform() as f32 - 0.5).collect();
        let s = cosine_similarity(&rows, n, d);
        for i in 0..n {
            assert!((s[i * n + i] - 1.0).abs() < 1e-6, "diagonal {}", s[i * n + i]);
            for j in 0..n {
                assert_eq!(s[i * n + j], s[j * n + i]);
                assert!(s[i * n + j].abs() <= 1.0 + 1e-9);
            }
        }
    }
    // By hand: (1, 0), (0, 1), (2, 2).
    let s = cosine_similarity(&[1.0, 0.0, 0.0, 1.0, 2.0, 2.0], 3, 2);
    let r = 0.5f64.sqrt();
    assert!(close(&s, &[1.0, 0.0, r, 0.0, 1.0, r, r, r, 1.0], 1e-7), "{s:?}");
}

#[test]
fn jacobi_eigenvectors_reconstruct_the_matrix_and_pca_finds_the_spread_direction() {
    let mut rng = Rng::seed(3);
    for n in [1, 2, 5, 16, 48] {
        let b: Vec<f64> = (0..n * n).map(|_| rng.uniform() - 0.5).collect();
        let a: Vec<f64> = (0..n * n).map(|k| (b[k] + b[(k % n) * n + k / n]) / 2.0).collect();
        let (values, vectors) = symmetric_eigen(&a, n);
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "descending: {values:?}");
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| vectors[i][k] * vectors[j][k]).sum();
                assert!((dot - f64::from(i == j)).abs() < 1e-9, "orthonormal {i} {j}: {dot}");
                let rebuilt: f64 = (0..n).map(|k| values[k] * vectors[k][i] * vectors[k][j]).sum();
                assert!((rebuilt - a[i * n + j]).abs() < 1e-9, "V L V^T = A at {i},{j}");
            }
        }
    }
    // Filters spread along (1, 2, 2)/3 plus a little noise: the first component is that
    // direction (up to sign) and carries nearly all the variance.
    let (d, k) = (200, 3);
    let filters: Vec<f32> = (0..d)
        .flat_map(|_| {
            let t = rng.uniform() * 4.0 - 2.0;
            [1.0, 2.0, 2.0].map(|u| (t * u / 3.0 + 0.01 * (rng.uniform() - 0.5) + 0.3) as f32)
        })
        .collect();
    let (values, vectors) = principal_components(&filters, d, k);
    let sign = vectors[0][0].signum();
    assert!(close(&vectors[0].iter().map(|v| v * sign).collect::<Vec<_>>(), &[1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0], 1e-3));
    assert!(values[0] / values.iter().sum::<f64>() > 0.999, "{values:?}");
}

/// The hybrid's filter figure standardises each stem filter as the forward pass does, so a
/// filter scaled and shifted (`a W + b`, which `StdConv` maps to the same effective filter)
/// gives the same components; its JSON names the stem's filter shape.
#[test]
fn stem_filter_pca_sees_the_standardised_filters() {
    use vit::analysis::filters::write_stem_filters;
    let mut rng = Rng::seed(11);
    let (o, c, k) = (12, 2, 3);
    let w: Vec<f32> = (0..o * c * k * k).map(|_| (rng.uniform() - 0.5) as f32).collect();
    // Each filter gets its own scale and shift.
    let moved: Vec<f32> = w
        .chunks(c * k * k)
        .enumerate()
        .flat_map(|(f, filter)| filter.iter().map(move |&v| v * (0.5 + f as f32) - 0.25 * f as f32))
        .collect();
    let dir = std::env::temp_dir().join(format!("vit-stem-pca-{}", std::process::id()));
    let (a, b) = (dir.join("a"), dir.join("b"));
    for (weights, out) in [(&w, &a), (&moved, &b)] {
        std::fs::create_dir_all(out).unwrap();
        let written = write_stem_filters(weights, (o, c, k), 1e-8, out).unwrap();
        assert_eq!(written, vec![out.join("stem_conv_pca.png"), out.join("stem_conv_pca.json")]);
    }
    let read = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("stem_conv_pca.json")).unwrap()).unwrap()
    };
    let (ja, jb) = (read(&a), read(&b));
    assert_eq!(ja["filter_shape"], serde_json::json!([c, k, k]));
    assert_eq!(ja["filters"], o);
    let values = |j: &serde_json::Value| -> Vec<f64> {
        j["eigenvalues"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    assert!(close(&values(&ja), &values(&jb), 1e-5), "{:?} vs {:?}", values(&ja), values(&jb));
    // Standardised filters have unit variance over their 18 values: the covariance's trace (the
    // eigenvalues' sum) is at most the mean squared norm, 18 * (o / (o - 1)).
    let trace: f64 = values(&ja).iter().sum();
    assert!(trace > 0.0 && trace <= 18.0 * o as f64 / (o - 1) as f64 + 1e-6, "{trace}");
    // A weight of the wrong size is a clear error.
    let err = write_stem_filters(&w[1..], (o, c, k), 1e-8, &a).unwrap_err().to_string();
    assert!(err.contains("stem convolution") && err.contains("12 x 2 x 3 x 3"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
