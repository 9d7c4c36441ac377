//! A training step captured once as a device graph and replayed (`runner bench --graph`): what
//! a step costs the GPU when the host does nothing a step but launch the graph.
//!
//! Why: at batch 64 a GPU step is bound by the host's work (autodiff's recording, burn's fusion,
//! some 260 kernel launches: docs/gpu.md), which a captured graph does once (CUDA graphs; wgpu
//! replays the recorded command buffers). Training cannot replay yet: a graph re-reads the
//! buffers it recorded, and burn writes each step's weights to new ones. So this measures what
//! it would be worth: each replay computes the captured step again, from the same weights and
//! the same inputs ([`Frozen`]), and its losses are read after it as a step's are. The first
//! replay's losses must be the step's own (a graph missing an operation would differ).

use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use burn::backend::{Backend, Dispatch, DispatchGraph};
use burn::tensor::Device;

use crate::model::uploads::Frozen;
use crate::spec::RunConfig;

/// Milliseconds per step of `config`'s step after `warmup` steps (on synthetic digits, as
/// [`super::step_times_ms`]), captured as a graph and replayed `steps` times (at least once),
/// each replay followed by reading its losses; sorted. An error if the replayed losses are not
/// the step's.
pub fn replayed_step_times_ms(config: &RunConfig, warmup: usize, steps: usize) -> Result<Vec<f64>> {
    let trainer = super::warmed_up_trainer(config, warmup)?;
    let step = warmup as u64 + 1;
    // The device itself: burn captures and replays on a backend's device, not through autodiff.
    let device = crate::backend::device();
    let frozen = Frozen::start();
    // The stepped copy is kept with the losses: its weights are buffers the graph writes.
    let pass = || {
        frozen.rewind();
        let mut copy = trainer.clone();
        Ok((copy.queue_step(step)?, copy))
    };
    // The step as training takes it (its uploads are the ones every later pass is served).
    let stepped = pass()?.0.read()?;
    let (graph, (losses, _stepped)) = capture(&device, pass)?;
    let dispatch = device.as_dispatch();
    let mut ms = Vec::with_capacity(steps);
    for _ in 0..steps.max(1) {
        let start = Instant::now();
        // SAFETY: the buffers the recording touched stay alive and unshared until the last
        // read below: the weights and optimizer state read are `trainer`'s, the inputs
        // `frozen`'s, those written `_stepped`'s and `losses`; this thread alone uses the device.
        unsafe { Dispatch::graph_replay(dispatch, &graph) }
            .map_err(|err| anyhow!("replaying the captured step failed: {err}"))?;
        let replayed = losses.clone().read()?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        let near = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        anyhow::ensure!(
            near(replayed.d, stepped.d) && near(replayed.g, stepped.g),
            "the step replayed from its graph computed other losses than the step: \
             D {} and G {} against {} and {}",
            replayed.d,
            replayed.g,
            stepped.d,
            stepped.g
        );
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// `pass` captured as a graph on `device`, and the output of the pass recorded. Passes before
/// it warm up: fusion's first passes build its plans, and the memory pool must already hold
/// every buffer (nothing may allocate while recording); each one's output is kept until the
/// device has run it (fusion skips work whose output is dropped before it runs).
fn capture<T>(device: &Device, mut pass: impl FnMut() -> Result<T>) -> Result<(DispatchGraph, T)> {
    const WARM_UP_PASSES: usize = 3;
    let dispatch = device.as_dispatch();
    let failed = |what: &str, err: &dyn std::fmt::Display| {
        anyhow!(
            "capturing a step as a graph on {} failed ({what}): {err}",
            crate::backend::name()
        )
    };
    Dispatch::graph_prepare(dispatch).map_err(|err| failed("preparing", &err))?;
    let recorded = (|| {
        for _ in 0..WARM_UP_PASSES {
            let output = pass()?;
            Dispatch::sync(dispatch).map_err(|err| failed("warming up", &err))?;
            drop(output);
        }
        Dispatch::graph_start_capture(dispatch).map_err(|err| failed("starting", &err))?;
        pass().context("the recorded step")
    })();
    // Closed whatever happened: a device left preparing or recording refuses other work.
    let graph = Dispatch::graph_stop_capture(dispatch);
    let output = recorded?;
    let graph = graph.map_err(|err| failed("recording", &err))?;
    Ok((graph, output))
}
