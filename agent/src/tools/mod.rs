//! Offline commands over rulesets: `check`, `lint`, `import-ini`.
pub mod check;
pub mod import_fail2ban;
pub mod import_ini;
pub mod lint;
