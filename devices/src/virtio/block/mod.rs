//! virtio-blk (placeholder until the device lands).
