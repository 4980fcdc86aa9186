//! The manual: how kms is built and why, written in `docs/` and versioned with the code.
//!
//! - [`architecture`]: the map — which crate owns what, the verification pipeline, the
//!   cache, the compiled snapshot, tenancy, errors, and the kms-core module tree.
//! - [`adr`]: the architecture decision records, each with its context, decision and
//!   consequences.
//! - [`threat_model`]: what kms defends against, and how.
//!
//! The pages are written in `docs/` (read them on the forge, or here); links between them
//! point at the markdown files.

#[doc = include_str!("../../docs/architecture.md")]
pub mod architecture {}

#[doc = include_str!("../../docs/threat-model.md")]
pub mod threat_model {}

#[doc = include_str!("../../docs/adr/README.md")]
pub mod adr {
    #[doc = include_str!("../../docs/adr/0001-token-format.md")]
    pub mod adr_0001_token_format {}

    #[doc = include_str!("../../docs/adr/0002-argon2id-and-verified-key-cache.md")]
    pub mod adr_0002_argon2id_and_verified_key_cache {}

    #[doc = include_str!("../../docs/adr/0003-compiled-permission-snapshot.md")]
    pub mod adr_0003_compiled_permission_snapshot {}

    #[doc = include_str!("../../docs/adr/0004-synchronous-storage-traits-and-batches.md")]
    pub mod adr_0004_synchronous_storage_traits_and_batches {}

    #[doc = include_str!("../../docs/adr/0005-sqlite-default-store.md")]
    pub mod adr_0005_sqlite_default_store {}

    #[doc = include_str!("../../docs/adr/0006-server-edge-layer-and-honest-timeouts.md")]
    pub mod adr_0006_server_edge_layer_and_honest_timeouts {}

    #[doc = include_str!("../../docs/adr/0007-kms-core-layout-and-public-surface.md")]
    pub mod adr_0007_kms_core_layout_and_public_surface {}

    #[doc = include_str!("../../docs/adr/0008-kms-server-layout-and-settings-table.md")]
    pub mod adr_0008_kms_server_layout_and_settings_table {}

    #[doc = include_str!("../../docs/adr/0009-several-writers-chain-head-and-policy-version.md")]
    pub mod adr_0009_several_writers_chain_head_and_policy_version {}

    #[doc = include_str!("../../docs/adr/0010-postgresql-store.md")]
    pub mod adr_0010_postgresql_store {}

    #[doc = include_str!("../../docs/adr/0011-shared-counters-redis-and-postgresql.md")]
    pub mod adr_0011_shared_counters_redis_and_postgresql {}

    #[doc = include_str!("../../docs/adr/0012-opentelemetry-over-otlp-http.md")]
    pub mod adr_0012_opentelemetry_over_otlp_http {}

    #[doc = include_str!("../../docs/adr/0013-saml-service-provider.md")]
    pub mod adr_0013_saml_service_provider {}

    #[doc = include_str!("../../docs/adr/0014-users-sessions-and-openid-connect.md")]
    pub mod adr_0014_users_sessions_and_openid_connect {}

    #[doc = include_str!("../../docs/adr/0015-usage-counting.md")]
    pub mod adr_0015_usage_counting {}

    #[doc = include_str!("../../docs/adr/0016-capacity-growth-and-compliance-findings.md")]
    pub mod adr_0016_capacity_growth_and_compliance_findings {}

    #[doc = include_str!("../../docs/adr/0017-crypto-shredding-of-personal-data-in-the-audit-chain.md")]
    pub mod adr_0017_crypto_shredding_of_personal_data_in_the_audit_chain {}

    #[doc = include_str!("../../docs/adr/0018-console-vanilla-js-no-build-step-strict-csp.md")]
    pub mod adr_0018_console_vanilla_js_no_build_step_strict_csp {}

    #[doc = include_str!("../../docs/adr/0019-master-key-custody.md")]
    pub mod adr_0019_master_key_custody {}
}
