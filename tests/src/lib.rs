//! Helpers shared by the integration tests (network-namespace guards, process runners).
