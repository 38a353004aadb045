//! virtio-console (placeholder until the device lands).
