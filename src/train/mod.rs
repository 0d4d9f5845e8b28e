pub mod data;
pub mod emoji;
pub mod eval;
pub mod judge;
pub mod optim;
pub mod recipe;
pub mod trainer;
