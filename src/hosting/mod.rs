//! Hostings: the create/delete saga, the state machine, the VM supervisor and the
//! reconciler. The only module that ties `vm`, `net`, `cloudinit` and `proxy` together.
//!
//! Knows a hosting's owner id and slug, but nothing of HTTP requests or tokens.

pub mod lifecycle;
