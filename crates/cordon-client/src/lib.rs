//! cordon-client
