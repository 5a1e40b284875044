//! A crate that judges a SIP service it did not write, as any user of poolchaos would: a pool of three Kamailio
//! registrars (`subject.toml`, `topology.toml`) and its chaos scenarios (`scenarios/`), run by `cargo test -p
//! kamailio-pool` (see `tests/chaos.rs` and this crate's README). The crate has no code of its own.
