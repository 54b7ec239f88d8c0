//! The contract between the stages (DESIGN.md): the types every stage reads and none owns.
//! A change and where it stands in the source's history, a review's image and the rules
//! that decide whether it counts, a verdict, and the payload the stats sink announces its
//! commits with. Their Avro forms are in `avro`.

pub mod change;
pub mod image;
pub mod lsn;
pub mod notify;
pub mod review;
pub mod verdict;
