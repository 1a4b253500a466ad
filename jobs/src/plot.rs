//! SVG scatter plots with the fitted line (owned by the analytics job).
