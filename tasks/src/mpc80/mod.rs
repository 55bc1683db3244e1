//! The MPC's 80-column format for optical astrometry: packed designations ([`designation`]),
//! the observation line ([`line`]) and whole reports with their header ([`report`]).
//!
//! Reading is tolerant where real reports are odd but unambiguous (header lines longer than 80
//! columns, a negative RA) and strict everywhere else: each unreadable line is kept verbatim
//! and reported as `line 12, columns 33-44: RA ...: expected ...`, and the rest of the report
//! is still read. Writing a parsed report gives back the same bytes.

pub mod designation;
pub mod line;
pub mod report;
#[cfg(test)]
mod tests;

pub use designation::{pack, pack_number, unpack, unpack_number, Designation, DesignationError};
pub use line::{
    check_temporary, FieldError, Fixed, Magnitude, MpcDate, ObjectId, ObsLine, Precision,
    Sexagesimal,
};
pub use report::{
    read_numbered_observations, read_observations, write_submission, Header, Line, LineError,
    Parsed, Record, Report,
};
