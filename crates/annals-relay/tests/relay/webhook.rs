//! The webhook sink against HTTP servers the tests run.
