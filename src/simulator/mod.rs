//! An in-memory Exchange Online simulator (to be written).
