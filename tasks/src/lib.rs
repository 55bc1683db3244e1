//! nearby's task kinds: the one explicit list of every kind a pipeline may `uses:`.
//!
//! The engine's own kinds (`command`, `noop`) come first; astronomy kinds (simulate, calibrate,
//! extract, astrometry, stack, link, known, cutout, report, ceres) join this list as they land,
//! each in its own module with its tests beside it.

pub mod ades;
pub mod astrometry;
pub mod calibrate;
pub mod cutout;
pub mod download;
pub mod ephem;
pub mod extract;
pub mod fits;
pub mod json;
pub mod known;
pub mod link;
pub mod mpc80;
pub mod obs;
pub mod report;
pub mod simulate;
pub mod skybot;
pub mod stack;
pub mod wcs;

use nearby_engine::task::Registry;

/// Every task kind, in the order `nearby kinds` lists them.
pub fn registry() -> Registry {
    Registry::builtin().extend(vec![
        std::sync::Arc::new(download::Download),
        std::sync::Arc::new(simulate::task::Simulate),
        std::sync::Arc::new(calibrate::task::Masters),
        std::sync::Arc::new(calibrate::task::Calibrate),
        std::sync::Arc::new(extract::task::Extract),
        std::sync::Arc::new(astrometry::task::Astrometry),
        std::sync::Arc::new(stack::task::Stack),
        std::sync::Arc::new(link::task::Link),
        std::sync::Arc::new(known::Known),
        std::sync::Arc::new(cutout::task::Cutout),
        std::sync::Arc::new(report::Report),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn kind_names_are_unique() {
        let r = super::registry();
        let mut names: Vec<_> = r.names().collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
