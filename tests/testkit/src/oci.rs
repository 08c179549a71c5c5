//! OCI layout writer (next step).
