//! The version line every binary prints.

/// `poolnode <semver>`: the crate version; images are tagged by content, not by this.
pub fn line() -> String {
    format!("poolnode {}", env!("CARGO_PKG_VERSION"))
}
