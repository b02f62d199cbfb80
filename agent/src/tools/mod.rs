//! Offline commands over rulesets: `check`, `lint`, `import-ini`, `import-fail2ban`.
pub mod check;
pub mod import_fail2ban;
pub mod import_ini;
mod ini;
pub mod lint;
