//! The set-backend nginx module.
