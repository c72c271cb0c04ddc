//! Shared test support.

pub mod tiny_models;
