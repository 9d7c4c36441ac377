//! Seeded random streams. Every random draw of a run comes from a generator derived from
//! (seed, stream, index), so step N draws the same numbers whether or not the run was resumed.

use rand::SeedableRng;
use rand::rngs::StdRng;

/// Independent purposes that draw random numbers.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// Weight initialisation (index 0; 1: spectral normalization's vectors).
    Init = 1,
    /// One training step's noise and dropout masks (index = step).
    Step = 2,
    /// The order of the training set (index = epoch).
    Shuffle = 3,
    /// The fixed noise of the sample grids (index 0: latents, 1: dropout; `generate`'s walk r
    /// draws its one dropout mask from index 2 + r).
    Samples = 4,
    /// The samples an evaluation scores (index 0: latents, 1: dropout).
    Eval = 5,
    /// The batches that settle the BatchNorm statistics of G's moving average (index = batch).
    Statistics = 6,
}

/// The generator of `stream` at `index` for `seed`.
pub fn rng_for(seed: u64, stream: Stream, index: u64) -> StdRng {
    // SplitMix64 finalisers decorrelate neighbouring seeds, streams and indices.
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    let key = mix(mix(mix(seed) ^ stream as u64) ^ index.wrapping_mul(0x9e3779b97f4a7c15));
    StdRng::seed_from_u64(key)
}
