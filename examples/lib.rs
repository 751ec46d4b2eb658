//! The examples package. Its library only compiles the README's Rust snippets as doctests
//! (`cargo test --doc -p waitstate-examples`), so the README cannot drift from the API.

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
