//! Charts (plotters) and tables (Markdown/HTML) from raw results.
