//! Origin AS and announced prefix per address, from RIS whois dumps.
