//! Atelier: a desktop AI image-generation studio.
//!
//! The crate is split by what each module owns (see `ARCHITECTURE.md`): `generation` holds
//! the plain-data request every layer shares, `engine` runs jobs on a worker thread,
//! `diffusion` holds the candle pipelines and samplers, `models` finds and validates model
//! folders, `gallery` keeps every picture (files + SQLite catalog), `sketch` is the canvas
//! document, `app` ties them to the egui views in `ui`.

pub mod app;
pub mod diffusion;
pub mod engine;
pub mod fsio;
pub mod gallery;
pub mod generation;
pub mod imageio;
pub mod models;
pub mod paths;
pub mod postfx;
pub mod sketch;
pub mod train;
pub mod ui;
