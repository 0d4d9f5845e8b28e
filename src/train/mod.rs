pub mod data;
pub mod emoji;
pub mod optim;
pub mod recipe;
pub mod trainer;
