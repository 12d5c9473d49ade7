//! placeholder
pub mod condition;
