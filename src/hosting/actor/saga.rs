//! The start saga, written once: each step, and what undoes it when a later one fails.

use std::sync::Arc;

use tracing::info;

use super::{Actor, Ctx};
use crate::hosting::effects::{Effects, StepError, Vm};
use crate::store::Hosting;

impl<E: Effects> Actor<E> {
    /// The start saga, written once: directory, overlay and seed (when missing), tap,
    /// firewall, QEMU, SSH port. A failing step has undone itself; the earlier ones are
    /// undone here, newest first.
    pub(super) async fn start_vm(&mut self) -> Result<(), StepError> {
        let ctx = self.ctx.clone();
        let h = self.row.clone();
        let mut undo = Vec::new();
        match saga(&ctx, &h, &mut undo).await {
            Ok(vm) => {
                info!(pid = vm.pid(), "qemu started; waiting for the guest");
                self.attach(vm).await;
                Ok(())
            }
            Err(e) => {
                for u in undo.into_iter().rev() {
                    match u {
                        Undo::Files => ctx.fx.remove_files(h.id),
                        Undo::Tap => ctx.fx.delete_tap(&h).await,
                        Undo::Vm(vm) => {
                            vm.kill().await;
                            ctx.fx.remove_cgroup(h.id).await;
                        }
                    }
                }
                Err(e)
            }
        }
    }
}

/// What the saga made so far.
enum Undo<V> {
    Files,
    Tap,
    Vm(Arc<V>),
}

async fn saga<E: Effects>(
    ctx: &Ctx<E>,
    h: &Hosting,
    undo: &mut Vec<Undo<E::Vm>>,
) -> Result<Arc<E::Vm>, StepError> {
    let fx = &ctx.fx;
    if !fx.files_exist(h.id) {
        if fx.make_dir(h)? {
            undo.push(Undo::Files);
        }
        ctx.fault("overlay")?;
        fx.overlay(h).await?;
        ctx.fault("seed")?;
        fx.seed(h)?;
    }
    ctx.fault("tap")?;
    let tap = fx.tap(h).await?;
    undo.push(Undo::Tap);
    // The firewall must know the new tap before the guest speaks.
    ctx.fault("firewall")?;
    fx.firewall(Some(h)).await?;
    ctx.fault("qemu")?;
    let vm = Arc::new(fx.spawn(h, tap).await?);
    undo.push(Undo::Vm(vm.clone()));
    ctx.fault("routes")?;
    fx.open_ssh(h).await?;
    Ok(vm)
}
