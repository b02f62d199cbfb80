//! The report as one self-contained HTML page with SVG charts.
