//! The sample-quality metrics, computed from classifier features and class probabilities.
//!
//! - Frechet distance between Gaussian fits of two feature sets (FID, here in LeNet space);
//! - the classifier Inception Score, exp E[KL(p(y|x) || p(y))], between 1 and 10;
//! - the predicted-class histogram and its KL divergence to uniform (0 = every class equally
//!   often, ln 10 = a single class);
//! - precision and recall (Kynkaanniemi et al. 2019): the share of generated samples inside the
//!   real k-NN manifold, and of real samples inside the generated one;
//! - density and coverage (Naeem et al. 2020);
//! - KID (Binkowski et al. 2018): an unbiased kernel MMD, reliable at small sample counts.
//!
//! Distances are squared Euclidean; comparisons against squared radii give the same answers.

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rayon::prelude::*;

/// k of precision and recall (Kynkaanniemi et al.).
pub const PR_K: usize = 3;
/// k of density and coverage (Naeem et al.).
pub const DC_K: usize = 5;
/// Rows of one block of the distance matrix (bounds memory to block x other-set floats).
const BLOCK: usize = 256;

/// A feature set: one row per sample, kept in both layouts for fast distance blocks.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    /// n x d.
    rows: DMatrix<f32>,
    /// d x n: each sample's features contiguous.
    cols: DMatrix<f32>,
    /// Squared norm of each sample.
    norms: Vec<f32>,
}

impl FeatureSet {
    /// From `n * dim` row-major values.
    pub fn new(values: &[f32], dim: usize) -> Self {
        let cols = DMatrix::from_column_slice(dim, values.len() / dim, values);
        let norms = cols.column_iter().map(|c| c.norm_squared()).collect();
        FeatureSet {
            rows: cols.transpose(),
            cols,
            norms,
        }
    }

    pub fn len(&self) -> usize {
        self.norms.len()
    }

    /// The `len() * dim` values, sample after sample (as [`FeatureSet::new`] takes them).
    pub fn values(&self) -> &[f32] {
        self.cols.as_slice()
    }

    /// Features per sample.
    fn dim(&self) -> usize {
        self.cols.nrows()
    }

    /// The dot products of every sample of this set with each of the `n` samples whose
    /// features follow each other in `samples`: `n` runs of `len()` values. (The `gemm` crate
    /// the convolutions use: about twice nalgebra's product here.)
    fn dots(&self, samples: &[f32], n: usize) -> Vec<f32> {
        let (m, d) = (self.len(), self.dim());
        let mut dots = vec![0.0f32; m * n];
        assert!(samples.len() >= n * d && self.cols.len() == m * d);
        // SAFETY: dst is m x n (entry (i, j) at i + j m), lhs m x d (this set's samples, each
        // contiguous: (i, c) at i d + c), rhs d x n ((c, j) at j d + c): all inside their
        // slices (asserted above), and dst aliases neither.
        unsafe {
            gemm::gemm(
                m,
                n,
                d,
                dots.as_mut_ptr(),
                m as isize,
                1,
                false,
                self.cols.as_slice().as_ptr(),
                1,
                d as isize,
                samples.as_ptr(),
                d as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        dots
    }

    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }

    /// Calls `f(i, distances)` for every sample i of `self` with its squared distances to
    /// every sample of `other`, in parallel blocks; returns the results in order.
    fn map_distances<R: Send>(
        &self,
        other: &FeatureSet,
        f: impl Fn(usize, &[f32]) -> R + Sync,
    ) -> Vec<R> {
        let blocks = self.fold_distances(other, Vec::new, |out, i, distances| {
            out.push(f(i, distances))
        });
        blocks.into_iter().flatten().collect()
    }

    /// Calls `visit(block's state, i, distances)` for every sample i of `self` with its
    /// squared distances to every sample of `other`, in parallel blocks of [`BLOCK`] samples,
    /// each with its own state from `start`; returns the blocks' states in order.
    fn fold_distances<A: Send>(
        &self,
        other: &FeatureSet,
        start: impl Fn() -> A + Sync,
        visit: impl Fn(&mut A, usize, &[f32]) + Sync,
    ) -> Vec<A> {
        let n = self.len();
        (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|block| {
                let first = block * BLOCK;
                let len = BLOCK.min(n - first);
                let dots = other.dots(&self.cols.as_slice()[first * self.dim()..], len);
                let mut distances = vec![0.0f32; other.len()];
                let mut state = start();
                for j in 0..len {
                    let i = first + j;
                    let dots = &dots[j * other.len()..(j + 1) * other.len()];
                    for ((d, &dot), &norm) in distances.iter_mut().zip(dots).zip(&other.norms) {
                        *d = (self.norms[i] + norm - 2.0 * dot).max(0.0);
                    }
                    visit(&mut state, i, &distances);
                }
                state
            })
            .collect()
    }

    /// Each sample's `k` nearest neighbours in `other`: their indices and (Euclidean)
    /// distances, nearest first.
    pub fn nearest(&self, other: &FeatureSet, k: usize) -> Vec<Vec<(usize, f32)>> {
        self.map_distances(other, |_, distances| {
            (smallest(distances, k).into_iter())
                .map(|(j, d)| (j, d.sqrt()))
                .collect()
        })
    }

    /// Each sample's squared distance to its k-th nearest neighbour in the set, for each k
    /// of `ks` (the sample itself, at distance 0, is not counted).
    pub fn knn_radii(&self, ks: &[usize]) -> Vec<Vec<f32>> {
        let most = ks.iter().max().map_or(0, |k| k + 1);
        let per_sample = self.map_distances(self, |_, distances| {
            let nearest = smallest(distances, most);
            ks.iter()
                .map(|&k| nearest[k.min(nearest.len().saturating_sub(1))].1)
                .collect::<Vec<_>>()
        });
        (0..ks.len())
            .map(|j| per_sample.iter().map(|r| r[j]).collect())
            .collect()
    }
}

/// The `k` smallest of `distances` with their indices, smallest first (ties in index
/// order, NaN never): one pass that keeps a short sorted list, where selecting in a copy of
/// the 10 000 distances cost a fifth of an evaluation.
fn smallest(distances: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (j, &d) in distances.iter().enumerate() {
        if best.len() < k && !d.is_nan() || best.last().is_some_and(|&(_, worst)| d < worst) {
            let at = best.partition_point(|&(_, b)| b <= d);
            best.insert(at, (j, d));
            best.truncate(k);
        }
    }
    best
}

/// Mean and covariance of a feature set.
#[derive(Debug, Clone)]
pub struct Gaussian {
    mean: DVector<f64>,
    cov: DMatrix<f64>,
}

impl Gaussian {
    pub fn fit(features: &FeatureSet) -> Self {
        let x = features.rows.map(f64::from);
        let n = x.nrows();
        let mean = x.row_mean().transpose();
        let mut centered = x;
        for mut row in centered.row_iter_mut() {
            row -= mean.transpose();
        }
        let cov = centered.transpose() * &centered / (n.max(2) - 1) as f64;
        Gaussian { mean, cov }
    }
}

/// The square root of a symmetric positive semi-definite matrix (negative rounding noise in
/// its eigenvalues is clamped to 0).
fn psd_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(m.clone());
    let roots = eigen.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// ||mu_a - mu_b||^2 + Tr(A) + Tr(B) - 2 Tr((A B)^1/2), with Tr((A B)^1/2) computed as the
/// trace of the square root of the symmetric A^1/2 B A^1/2 (same eigenvalues).
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    let root_a = psd_sqrt(&a.cov);
    let middle = &root_a * &b.cov * &root_a;
    let middle = (&middle + middle.transpose()) / 2.0;
    let trace_sqrt: f64 = SymmetricEigen::new(middle)
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum();
    let distance =
        (&a.mean - &b.mean).norm_squared() + a.cov.trace() + b.cov.trace() - 2.0 * trace_sqrt;
    distance.max(0.0)
}

/// exp of the mean KL divergence of each row of `probs` (n x 10) from their mean.
pub fn inception_score(probs: &[f32]) -> f64 {
    let n = probs.len() / 10;
    let mut marginal = [0.0f64; 10];
    for p in probs.chunks(10) {
        for (m, &v) in marginal.iter_mut().zip(p) {
            *m += v as f64 / n as f64;
        }
    }
    let mean_kl = probs
        .chunks(10)
        .map(|p| kl(p.iter().map(|&v| v as f64), &marginal))
        .sum::<f64>()
        / n.max(1) as f64;
    mean_kl.exp()
}

/// KL(p || q) with 0 ln 0 = 0.
fn kl(p: impl Iterator<Item = f64>, q: &[f64]) -> f64 {
    p.zip(q)
        .filter(|(p, _)| *p > 0.0)
        .map(|(p, q)| p * (p / q.max(1e-30)).ln())
        .sum()
}

/// The share of each predicted class.
pub fn class_histogram(predictions: &[u8]) -> [f64; 10] {
    let mut hist = [0.0; 10];
    for &c in predictions {
        hist[c as usize] += 1.0 / predictions.len() as f64;
    }
    hist
}

/// KL(histogram || uniform over 10 classes): 0 for balanced classes, ln 10 for one class.
pub fn class_kl(histogram: &[f64; 10]) -> f64 {
    kl(histogram.iter().copied(), &[0.1; 10])
}

/// The k-NN manifold of a real feature set, computed once and reused for every evaluation.
#[derive(Debug, Clone)]
pub struct RealManifold {
    pub features: FeatureSet,
    pub gaussian: Gaussian,
    /// Squared k-th neighbour radii for k = [`PR_K`] and k = [`DC_K`].
    pr_radii: Vec<f32>,
    dc_radii: Vec<f32>,
}

impl RealManifold {
    pub fn new(features: FeatureSet) -> Self {
        let mut radii = features.knn_radii(&[PR_K, DC_K]);
        let dc_radii = radii.pop().expect("two radii");
        let pr_radii = radii.pop().expect("two radii");
        RealManifold::with_radii(features, pr_radii, dc_radii)
    }

    /// The manifold of `features` with radii computed before (by [`RealManifold::new`]: see
    /// [`RealManifold::radii`]), one of each per sample.
    pub fn with_radii(features: FeatureSet, pr_radii: Vec<f32>, dc_radii: Vec<f32>) -> Self {
        assert!(pr_radii.len() == features.len() && dc_radii.len() == features.len());
        RealManifold {
            gaussian: Gaussian::fit(&features),
            features,
            pr_radii,
            dc_radii,
        }
    }

    /// The squared k-th neighbour radii for k = [`PR_K`] and for k = [`DC_K`].
    pub fn radii(&self) -> (&[f32], &[f32]) {
        (&self.pr_radii, &self.dc_radii)
    }
}

/// Subsets KID averages over, and their largest size (capped by the sample counts).
pub const KID_SUBSETS: usize = 10;
pub const KID_SUBSET_SIZE: usize = 1000;

/// The kernel distance (KID) of two feature sets: the unbiased estimate of the squared MMD
/// with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, over [`KID_SUBSETS`] random
/// subsets of each set; returns its mean and standard deviation over the subsets. The subsets
/// are drawn with fixed seeds: the same sets give the same KID. Unbiased, so it can be slightly
/// negative for sets from one distribution.
pub fn kernel_distance(real: &FeatureSet, fake: &FeatureSet) -> (f64, f64) {
    use rand::SeedableRng;
    let m = KID_SUBSET_SIZE.min(real.len()).min(fake.len());
    if m < 2 {
        return (f64::NAN, f64::NAN);
    }
    let dim = real.rows.ncols() as f64;
    let subset = |set: &FeatureSet, seed: u64| -> DMatrix<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let picked = rand::seq::index::sample(&mut rng, set.len(), m);
        DMatrix::from_fn(m, set.rows.ncols(), |i, j| {
            set.rows[(picked.index(i), j)] as f64
        })
    };
    let kernel_sum = |a: &DMatrix<f64>, b: &DMatrix<f64>, skip_diagonal: bool| -> f64 {
        let gram = a * b.transpose();
        let mut sum = 0.0;
        for j in 0..m {
            for i in 0..m {
                if !(skip_diagonal && i == j) {
                    sum += (gram[(i, j)] / dim + 1.0).powi(3);
                }
            }
        }
        sum
    };
    let estimates: Vec<f64> = (0..KID_SUBSETS as u64)
        .into_par_iter()
        .map(|s| {
            let (x, y) = (subset(real, 2 * s), subset(fake, 2 * s + 1));
            let pairs = (m * (m - 1)) as f64;
            kernel_sum(&x, &x, true) / pairs + kernel_sum(&y, &y, true) / pairs
                - 2.0 * kernel_sum(&x, &y, false) / (m * m) as f64
        })
        .collect();
    let n = estimates.len() as f64;
    let mean = estimates.iter().sum::<f64>() / n;
    let var = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Precision, recall, density and coverage of `fake` against `real`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fidelity {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
}

pub fn fidelity(real: &RealManifold, fake: &FeatureSet) -> Fidelity {
    let fake_radii = fake.knn_radii(&[PR_K]).pop().expect("one radius");
    let n = real.features.len();
    // One pass over the generated x real distances serves both directions: per generated
    // sample, is it in the real manifold and in how many real balls; per real sample
    // (gathered over the blocks), is it in some generated ball and how near is the nearest.
    let blocks = fake.fold_distances(
        &real.features,
        || Tally::new(n),
        |tally, j, d| {
            let (mut in_pr, mut in_dc, radius) = (false, 0, fake_radii[j]);
            let real_radii = real.pr_radii.iter().zip(&real.dc_radii);
            let per_real = tally.recalled.iter_mut().zip(tally.nearest.iter_mut());
            for ((&d, (&pr, &dc)), (recalled, nearest)) in d.iter().zip(real_radii).zip(per_real) {
                in_pr |= d <= pr;
                in_dc += usize::from(d <= dc);
                *recalled |= d <= radius;
                *nearest = nearest.min(d);
            }
            tally.precise += usize::from(in_pr);
            tally.in_balls += in_dc;
        },
    );
    let total = blocks.into_iter().fold(Tally::new(n), Tally::merge);
    let covered = (total.nearest.iter())
        .zip(&real.dc_radii)
        .filter(|(d, r)| d <= r);
    let (m, n) = (fake.len().max(1) as f64, n.max(1) as f64);
    Fidelity {
        precision: total.precise as f64 / m,
        density: total.in_balls as f64 / (DC_K as f64 * m),
        recall: total.recalled.iter().filter(|&&r| r).count() as f64 / n,
        coverage: covered.count() as f64 / n,
    }
}

/// What [`fidelity`] counts over one block of generated samples (or, merged, over all).
struct Tally {
    /// Generated samples inside the real manifold.
    precise: usize,
    /// Real balls (k = [`DC_K`]) holding a generated sample, summed over the samples.
    in_balls: usize,
    /// Per real sample: inside some generated sample's ball.
    recalled: Vec<bool>,
    /// Per real sample: the squared distance to its nearest generated sample.
    nearest: Vec<f32>,
}

impl Tally {
    /// Nothing counted yet, for `n` real samples.
    fn new(n: usize) -> Tally {
        Tally {
            precise: 0,
            in_balls: 0,
            recalled: vec![false; n],
            nearest: vec![f32::INFINITY; n],
        }
    }

    /// The counts over both tallies' generated samples.
    fn merge(mut self, other: Tally) -> Tally {
        self.precise += other.precise;
        self.in_balls += other.in_balls;
        (self.recalled.iter_mut())
            .zip(&other.recalled)
            .for_each(|(r, &o)| *r |= o);
        (self.nearest.iter_mut())
            .zip(&other.nearest)
            .for_each(|(m, &o)| *m = m.min(o));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(points: &[[f32; 2]]) -> FeatureSet {
        FeatureSet::new(&points.concat(), 2)
    }

    #[test]
    fn frechet_distance_of_shifted_gaussians_is_the_squared_shift() {
        let a: Vec<[f32; 2]> = (0..200)
            .map(|i| [(i % 10) as f32, (i / 10 % 7) as f32])
            .collect();
        let b: Vec<[f32; 2]> = a.iter().map(|p| [p[0] + 3.0, p[1]]).collect();
        let (ga, gb) = (Gaussian::fit(&set(&a)), Gaussian::fit(&set(&b)));
        assert!(frechet_distance(&ga, &ga).abs() < 1e-6);
        assert!((frechet_distance(&ga, &gb) - 9.0).abs() < 1e-6);
    }

    #[test]
    fn frechet_distance_matches_the_closed_form_for_diagonal_covariances() {
        // Variances 1 and 4 in each dimension: (1 - 2)^2 per dimension.
        let a: Vec<[f32; 2]> = [[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]].to_vec();
        let b: Vec<[f32; 2]> = a.iter().map(|p| [p[0] * 2.0, p[1] * 2.0]).collect();
        let d = frechet_distance(&Gaussian::fit(&set(&a)), &Gaussian::fit(&set(&b)));
        // Sample covariance (n - 1): variances 4/3 and 16/3.
        let expected = 2.0 * ((4.0f64 / 3.0).sqrt() - (16.0f64 / 3.0).sqrt()).powi(2);
        assert!((d - expected).abs() < 1e-9, "{d} vs {expected}");
    }

    #[test]
    fn kid_matches_the_closed_form_on_whole_sets_and_grows_with_a_shift() {
        // Sets smaller than a subset are used whole (in some order): the closed form applies.
        let a = [[0.0f32, 1.0], [1.0, 0.0], [1.0, 1.0]];
        let b = [[0.0f32, 0.0], [2.0, 1.0], [0.5, 0.5]];
        let k = |x: [f32; 2], y: [f32; 2]| ((x[0] * y[0] + x[1] * y[1]) as f64 / 2.0 + 1.0).powi(3);
        let within = |s: &[[f32; 2]; 3]| {
            let mut sum = 0.0;
            for i in 0..3 {
                for j in 0..3 {
                    if i != j {
                        sum += k(s[i], s[j]);
                    }
                }
            }
            sum / 6.0
        };
        let across: f64 = a
            .iter()
            .flat_map(|x| b.iter().map(|y| k(*x, *y)))
            .sum::<f64>()
            / 9.0;
        let expected = within(&a) + within(&b) - 2.0 * across;
        let (kid, std) = kernel_distance(&set(&a), &set(&b));
        assert!((kid - expected).abs() < 1e-9, "{kid} vs {expected}");
        assert!(std < 1e-9, "every subset is the whole set");
        // Draws of one distribution: near 0; a shifted copy: clearly positive.
        let grid: Vec<[f32; 2]> = (0..400)
            .map(|i| [(i % 20) as f32 / 10.0, (i / 20) as f32 / 10.0])
            .collect();
        let shifted: Vec<[f32; 2]> = grid.iter().map(|p| [p[0] + 1.0, p[1]]).collect();
        let (same, _) = kernel_distance(&set(&grid), &set(&grid));
        let (apart, spread) = kernel_distance(&set(&grid), &set(&shifted));
        assert!(same.abs() < 0.05, "{same}");
        assert!(apart > 1.0 && spread >= 0.0, "{apart}");
        assert_eq!(
            kernel_distance(&set(&grid), &set(&shifted)).0,
            apart,
            "reproducible"
        );
    }

    #[test]
    fn nearest_finds_the_closest_points_in_order() {
        let reference = set(&[[0.0, 0.0], [3.0, 0.0], [1.0, 0.0], [10.0, 10.0]]);
        let queries = set(&[[0.9, 0.0], [9.0, 10.0]]);
        let found = queries.nearest(&reference, 2);
        assert_eq!(found[0].iter().map(|p| p.0).collect::<Vec<_>>(), [2, 0]);
        assert!((found[0][0].1 - 0.1).abs() < 1e-5 && (found[0][1].1 - 0.9).abs() < 1e-5);
        assert_eq!(found[1][0], (3, 1.0));
        assert_eq!(
            queries.nearest(&reference, 9)[0].len(),
            4,
            "at most the whole set"
        );
    }

    #[test]
    fn knn_radii_skip_the_sample_itself() {
        let s = set(&[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [6.0, 0.0]]);
        let radii = s.knn_radii(&[1, 2]);
        assert_eq!(radii[0], [1.0, 1.0, 4.0, 9.0]);
        assert_eq!(radii[1], [9.0, 4.0, 9.0, 25.0]);
    }

    #[test]
    fn inception_score_and_class_kl_bounds() {
        let confident: Vec<f32> = (0..100)
            .flat_map(|i| (0..10).map(move |c| if c == i % 10 { 1.0 } else { 0.0 }))
            .collect();
        assert!((inception_score(&confident) - 10.0).abs() < 1e-9);
        let one_class: Vec<f32> = (0..100)
            .flat_map(|_| (0..10).map(|c| if c == 3 { 1.0 } else { 0.0 }))
            .collect();
        assert!((inception_score(&one_class) - 1.0).abs() < 1e-9);
        let hist = class_histogram(&[3; 50]);
        assert!((class_kl(&hist) - 10f64.ln()).abs() < 1e-12);
        let balanced: Vec<u8> = (0..100).map(|i| (i % 10) as u8).collect();
        assert!(class_kl(&class_histogram(&balanced)).abs() < 1e-12);
    }
}
