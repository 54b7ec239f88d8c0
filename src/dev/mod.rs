//! The developer's tools: a load generator (`demo`) and, with the cargo feature `bench`, the
//! benchmark (`bench`), which alone brings plotters, png and hdrhistogram into the build.

#[cfg(feature = "bench")]
pub mod bench;
pub mod demo;
