pub mod daemon;
pub mod frames;
pub mod netns;
