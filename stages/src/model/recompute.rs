//! Gradient checkpointing: a block's activations are not kept for the backward pass but
//! recomputed there, so training memory holds one block's activations instead of every
//! block's (what lets a 135M-parameter model fine-tune on a laptop's memory).
//!
//! [`block`] runs a block as one candle node ([`Recompute`]): its forward runs the block on
//! detached copies of the weights (no graph is recorded), keeping only the block's input;
//! its backward runs the block again with gradients and back-propagates the incoming
//! gradient through it. The input's gradient goes back to candle; the weights' gradients,
//! which candle cannot return from a node they are not inputs of, go to a stash that
//! [`super::optim::Grads::collect`] reads. The recomputation runs the same kernels on the
//! same inputs, so every gradient is the same bits as without checkpointing (tested).
//! Not with dropout (the recomputation would draw other masks): the caller keeps the plain
//! path then.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, TensorId, Var};

use super::layers::Block;
use super::ops::Dropout;

/// Weight gradients produced inside [`Recompute`]'s backward, by the weight's tensor id.
static STASH: LazyLock<Mutex<HashMap<TensorId, Tensor>>> = LazyLock::new(Default::default);

/// Takes the stashed gradient of `t`, if a recomputed block produced one.
pub fn take(t: &Tensor) -> Option<Tensor> {
    STASH.lock().unwrap_or_else(|e| e.into_inner()).remove(&t.id())
}

fn stash(t: &Tensor, g: Tensor) -> Result<()> {
    let mut s = STASH.lock().unwrap_or_else(|e| e.into_inner());
    let g = match s.remove(&t.id()) {
        Some(before) => (before + g)?,
        None => g,
    };
    s.insert(t.id(), g);
    Ok(())
}

struct Recompute {
    /// The block with the model's weights (gradients recorded).
    block: Block,
    /// The same block on detached weights (no graph).
    twin: Block,
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "hone-recompute"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match s {
            CpuStorage::F32(_) => Tensor::from_slice(
                super::kernels::slice::<f32>(s, l, "recompute")?,
                l.shape(),
                &candle_core::Device::Cpu,
            )?,
            CpuStorage::F64(_) => Tensor::from_slice(
                super::kernels::slice::<f64>(s, l, "recompute")?,
                l.shape(),
                &candle_core::Device::Cpu,
            )?,
            _ => candle_core::bail!("recompute: only f32 and f64 are supported"),
        };
        let y = self.twin.forward(&x, &mut Dropout::off())?.contiguous()?;
        let (storage, layout) = y.storage_and_layout();
        let out = match &*storage {
            candle_core::Storage::Cpu(c) => match c {
                CpuStorage::F32(_) => super::kernels::storage(
                    super::kernels::slice::<f32>(c, layout, "recompute")?.to_vec(),
                ),
                CpuStorage::F64(_) => super::kernels::storage(
                    super::kernels::slice::<f64>(c, layout, "recompute")?.to_vec(),
                ),
                _ => candle_core::bail!("recompute: only f32 and f64 are supported"),
            },
            _ => candle_core::bail!("recompute runs on the CPU only"),
        };
        Ok((out, y.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let input = Var::from_tensor(&x.detach())?;
        let y = self.block.forward(input.as_tensor(), &mut Dropout::off())?;
        let grads = (y * dy.detach())?.sum_all()?.backward()?;
        for w in self.block.weights() {
            if let Some(g) = grads.get(&w) {
                stash(&w, g.clone())?;
            }
        }
        Ok(grads.get(input.as_tensor()).cloned())
    }
}

/// `block.forward(x)`, its activations recomputed in the backward pass (no dropout).
pub fn block(b: &Block, x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Recompute { block: b.clone(), twin: b.detached() })
}
