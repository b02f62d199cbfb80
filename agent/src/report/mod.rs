//! `xdpguard report`: a history summary as text, JSON or one self-contained HTML file.
pub mod html;
pub mod markup;
pub mod svg;
pub mod text;
