//! Per-course figures: folding changes into deltas and applying them in PostgreSQL.
