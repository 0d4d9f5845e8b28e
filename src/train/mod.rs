pub mod data;
pub mod emoji;
pub mod eval;
pub mod judge;
pub mod linalg;
pub mod optim;
pub mod recipe;
pub mod trainer;
