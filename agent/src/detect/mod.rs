//! Detection: what turns log lines and traffic volumes into block orders for the owner.
//! `logs` and `traffic` are independent of each other; both speak to `enforce` only through
//! the owner's `Handle`.
pub mod logs;
pub mod traffic;
