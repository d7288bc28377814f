//! The process harness for the end-to-end tests.
