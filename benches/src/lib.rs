//! Veil's benchmark harness (filled by the foundation and device issues).
