//! Checking a user's password (POP3 logins; meant to serve SMTP AUTH as well).

pub mod checkpassword;
