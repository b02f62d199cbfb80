//! `xdpguard report`: a history summary as text, JSON or one self-contained HTML file; the
//! same summary from logs or flow files without a history (`offline`).
pub mod html;
pub mod markup;
pub mod offline;
pub mod svg;
pub mod text;
