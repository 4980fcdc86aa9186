//! Benchmarks for kms.
