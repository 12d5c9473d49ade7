//! placeholder

pub mod imdn;
pub mod iscomposing;
pub mod presence;
pub mod xml;
