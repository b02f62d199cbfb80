pub mod daemon;
pub mod flows;
pub mod frames;
pub mod netns;
