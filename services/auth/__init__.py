"""The auth service: users, passwords, sessions, the registration lock and the audit log."""
