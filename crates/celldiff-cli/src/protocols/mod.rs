//! Protocols: the end-to-end runs and benchmarks built on the library's methods (`demo`,
//! `scld-bench`, `identify-bench`, `bench`). They live here, outside the library's science
//! modules, because they fix an evaluation procedure (splits, seeds, tables, figures) rather
//! than implement a method.

pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod identify_bench;
pub(crate) mod scld_bench;
