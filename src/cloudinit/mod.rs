//! Placeholder: filled in by the cloudinit work.
