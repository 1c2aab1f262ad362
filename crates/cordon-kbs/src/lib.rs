//! cordon-kbs
