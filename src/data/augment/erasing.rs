//! Random erasing (Zhong et al. 2020), in the model domain.

use autograd::Rng;

use super::check_len;
use crate::data::ImageShape;

/// Random erasing (Zhong et al. 2020): with probability `prob`, one rectangle covering a
/// fraction `area` of the image with aspect ratio in `aspect` (sampled log-uniformly) is set to
/// zero in the normalised domain, i.e. to the dataset mean.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomErasing {
    /// Probability that an image is erased at all.
    pub prob: f32,
    /// The range of the erased fraction of the image.
    pub area: (f32, f32),
    /// The range of the box's aspect ratio (height / width).
    pub aspect: (f32, f32),
}

impl Default for RandomErasing {
    /// timm's and torchvision's defaults, with timm's recipe probability 0.25.
    fn default() -> Self {
        RandomErasing { prob: 0.25, area: (0.02, 1.0 / 3.0), aspect: (0.3, 3.3) }
    }
}

/// Applies random erasing in place (normalised domain). Returns the erased box
/// `(y, x, height, width)`, or `None` when the coin said no or no box fitted in 10 tries.
pub fn random_erasing(
    img: &mut [f32],
    shape: ImageShape,
    cfg: &RandomErasing,
    rng: &mut Rng,
) -> Option<(usize, usize, usize, usize)> {
    check_len("random_erasing", img, shape);
    if rng.uniform() >= cfg.prob as f64 {
        return None;
    }
    let area = shape.plane() as f64;
    let (lr0, lr1) = ((cfg.aspect.0 as f64).ln(), (cfg.aspect.1 as f64).ln());
    for _ in 0..10 {
        let target = area * lerp(cfg.area.0 as f64, cfg.area.1 as f64, rng.uniform());
        let aspect = lerp(lr0, lr1, rng.uniform()).exp();
        let eh = (target * aspect).sqrt().round() as usize;
        let ew = (target / aspect).sqrt().round() as usize;
        if eh == 0 || ew == 0 || eh >= shape.h || ew >= shape.w {
            continue;
        }
        let y = rng.below(shape.h - eh + 1);
        let x = rng.below(shape.w - ew + 1);
        for plane in img.chunks_exact_mut(shape.plane()) {
            for row in plane.chunks_exact_mut(shape.w).skip(y).take(eh) {
                row[x..x + ew].fill(0.0);
            }
        }
        return Some((y, x, eh, ew));
    }
    None
}

fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}
