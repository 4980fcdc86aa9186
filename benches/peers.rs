//! The permission check beside its peers, in one run of one binary: kms's compiled
//! snapshot, casbin-rs (`Enforcer` and `CachedEnforcer`) and cedar-policy
//! (`Authorizer::is_authorized`) on the *same* generated RBAC policy, plus the bare
//! intern-and-lookup floor. Results are in `docs/PERFORMANCE.md` ("Permission check beside
//! casbin-rs and cedar"; the conditional groups in "Conditional checks beside cedar").
//!
//! ```text
//! cargo bench -p kms-benches --features peers --bench peers -- --warm-up-time 1 --measurement-time 3
//! # the conditional checks only (criterion's filter; every cell is still set up first):
//! cargo bench -p kms-benches --features peers --bench peers -- conditional_peers --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Without the `peers` feature (as CI's `cargo clippy --all-targets` builds it) only kms and
//! the floor are measured, so CI does not compile casbin and cedar.
//!
//! The policy (`benches/common/rbac.rs`): 10, 1,000 or 100,000 grants over two role chains
//! of depth 1, 5 or 20; the user holds the top of one chain. Per cell and engine two
//! benchmarks, `allowed` (a permission granted at the bottom of the user's chain, so the
//! whole chain is walked) and `denied` (a permission granted only in the other chain).
//! Before measuring, every engine must give the same decisions for both requests.
//!
//! - `ours`: `PermissionSnapshot::check` against the user's precompiled `EffectiveSet`.
//! - `ours_effective_and_check`: the user's `EffectiveSet` compiled from its role and then
//!   checked, i.e. what kms pays when it has no compiled set for the subject yet.
//! - `casbin_enforcer`: `Enforcer::enforce((user, permission))`, model `r = sub, act`,
//!   `m = r.act == p.act && g(r.sub, p.sub)` (the cheap test first), one `p` line per
//!   grant, one `g` line per inheritance step and one for the user.
//! - `casbin_cached_enforcer`: the same through `CachedEnforcer`, whose result cache
//!   answers every call after the first.
//! - `cedar`: `Authorizer::is_authorized` with one `permit(principal in Role::"…", action
//!   == Action::"…", resource);` per grant and the chains as entity parents; the request
//!   and entities are built before the loop.
//! - `floor`: a `HashMap<Box<str>, u32>` lookup and a bit test.
//!
//! **Conditional checks** (groups `conditional_peers/g<grants>_d5`, issue 18): the same
//! policy at depth 5 with *every* grant conditional, `context.region == "eu"` (kms: each
//! role grants its permissions through its `grants`, none unconditionally; cedar: each
//! `permit` has `when { context has region && context.region == "eu" }`, the translation
//! of `benches/tests/cedar_differential.rs`, under which a missing key denies as in kms).
//! Three requests, each decided alike by both engines before measuring: `allowed` (the
//! allowed permission, region `eu`), `condition_false` (the same permission, region `us`:
//! granted, but its condition fails) and `denied` (the denied permission, region `eu`).
//!
//! - `ours`: `Kms::verify_token_in_context(token, Some(query), None, context)` of a token
//!   holding the user's role, answered from the verified-key cache (the cache must not miss
//!   while measuring): kms's real in-process path, so it also pays what cedar does not
//!   (token parse, keyed digest, cache lookup, the answer's scope list).
//! - `ours_unconditioned`: the same call in a service with the same policy without
//!   conditions (requests `allowed` and `denied`): the cost of the path without conditions.
//! - `cedar`: `Authorizer::is_authorized` with the conditional policies; the request (its
//!   context included) and the entities are built before the loop.

use std::error::Error;
use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use kms_benches::{full_run, SetupResult};
use kms_core::{PermissionQuery, VerifyCode};

#[path = "common/rbac.rs"]
mod rbac;
use rbac::Rbac;

fn main() -> Result<(), Box<dyn Error>> {
    let mut c = Criterion::default().configure_from_args();
    let grants: &[usize] = if full_run() {
        &[10, 1_000, 100_000]
    } else {
        &[10, 1_000]
    };
    for &g in grants {
        for depth in [1, 5, 20] {
            cell(&mut c, g, depth)?;
        }
    }
    for &g in grants {
        conditional_cell(&mut c, g)?;
    }
    c.final_summary();
    Ok(())
}

/// Every engine on one policy size.
fn cell(c: &mut Criterion, grants: usize, depth: usize) -> SetupResult<()> {
    let policy = Rbac::new(grants, depth)?;
    let start = Instant::now();
    let (snapshot, set, top) = policy.kms()?;
    println!(
        "set-up, {grants} grants, depth {depth}: kms policy and snapshot {:.1?}",
        start.elapsed()
    );
    let floor = policy.floor();
    let requests = [("allowed", &policy.allowed), ("denied", &policy.denied)];
    for (what, permission) in requests {
        let expected = what == "allowed";
        if snapshot.check(&set, permission) != expected || floor.holds(permission) != expected {
            return Err(format!(
                "kms or the floor decided the {what} request wrongly ({} grants, depth {})",
                policy.grants, policy.depth
            )
            .into());
        }
    }
    #[cfg(feature = "peers")]
    let peers = peers::Peers::new(&policy)?;

    let mut group = c.benchmark_group(format!("permission_peers/g{grants}_d{depth}"));
    if grants >= 100_000 {
        // casbin's enforce and cedar scan every policy: milliseconds per call here.
        group.sample_size(10);
    }
    for (what, permission) in requests {
        let p = permission.as_str();
        group.bench_function(BenchmarkId::new("ours", what), |b| {
            b.iter(|| snapshot.check(black_box(&set), black_box(p)))
        });
        group.bench_function(BenchmarkId::new("ours_effective_and_check", what), |b| {
            b.iter(|| {
                let s = snapshot.effective(std::iter::empty(), std::iter::once(black_box(&top)));
                snapshot.check(&s, black_box(p))
            })
        });
        #[cfg(feature = "peers")]
        peers.bench(&mut group, what, p);
        group.bench_function(BenchmarkId::new("floor", what), |b| {
            b.iter(|| floor.holds(black_box(p)))
        });
    }
    group.finish();
    Ok(())
}

/// Depth of the role chains in the conditional cells.
const CONDITIONAL_DEPTH: usize = 5;

/// The condition on every grant of the conditional cells, in kms's language.
const CONDITION: &str = "context.region == \"eu\"";

/// A request of a conditional cell: its name, the permission asked, the region in the
/// context, and the decision both engines must give.
type ConditionalRequest<'a> = (&'static str, &'a str, &'static str, bool);

/// The three requests of a conditional cell over `policy`.
fn conditional_requests(policy: &Rbac) -> [ConditionalRequest<'_>; 3] {
    [
        ("allowed", &policy.allowed, "eu", true),
        ("condition_false", &policy.allowed, "us", false),
        ("denied", &policy.denied, "eu", false),
    ]
}

/// A verification context `{"region": region}`.
fn region(region: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut context = serde_json::Map::new();
    context.insert("region".to_owned(), serde_json::Value::from(region));
    context
}

/// kms (and, with the `peers` feature, cedar) on one policy size with every grant
/// conditional.
fn conditional_cell(c: &mut Criterion, grants: usize) -> SetupResult<()> {
    let policy = Rbac::new(grants, CONDITIONAL_DEPTH)?;
    let start = Instant::now();
    let (conditional, token) = policy.service(Some(CONDITION))?;
    let (plain, plain_token) = policy.service(None)?;
    println!(
        "set-up, conditional, {grants} grants, depth {CONDITIONAL_DEPTH}: two kms services {:.1?}",
        start.elapsed()
    );
    let requests = conditional_requests(&policy);
    let mut cases = Vec::with_capacity(requests.len());
    for (what, permission, place, expected) in requests {
        let query = PermissionQuery::parse(permission)?;
        let context = region(place);
        let answer = |kms: &kms_core::Kms, token: &str| -> SetupResult<bool> {
            Ok(kms
                .verify_token_in_context(token, Some(&query), None, &context)?
                .code()
                == VerifyCode::Valid)
        };
        if answer(&conditional, &token)? != expected {
            return Err(format!(
                "kms decided the conditional {what} request wrongly ({grants} grants)"
            )
            .into());
        }
        // Without conditions the region does not matter.
        if what != "condition_false" && answer(&plain, &plain_token)? != expected {
            return Err(format!(
                "kms decided the unconditioned {what} request wrongly ({grants} grants)"
            )
            .into());
        }
        cases.push((what, query, context));
    }
    #[cfg(feature = "peers")]
    let cedar = peers::ConditionalCedar::new(&policy, &requests)?;

    let misses = (conditional.cache_stats().misses, plain.cache_stats().misses);
    let mut group = c.benchmark_group(format!("conditional_peers/g{grants}_d{CONDITIONAL_DEPTH}"));
    if grants >= 100_000 {
        // cedar scans every policy: about a hundred milliseconds per call here.
        group.sample_size(10);
    }
    for (i, (what, query, context)) in cases.iter().enumerate() {
        group.bench_function(BenchmarkId::new("ours", what), |b| {
            b.iter(|| {
                conditional.verify_token_in_context(
                    black_box(&token),
                    Some(black_box(query)),
                    None,
                    black_box(context),
                )
            })
        });
        if *what != "condition_false" {
            group.bench_function(BenchmarkId::new("ours_unconditioned", what), |b| {
                b.iter(|| {
                    plain.verify_token_in_context(
                        black_box(&plain_token),
                        Some(black_box(query)),
                        None,
                        black_box(context),
                    )
                })
            });
        }
        #[cfg(feature = "peers")]
        cedar.bench(&mut group, i);
        #[cfg(not(feature = "peers"))]
        let _ = i;
    }
    group.finish();
    if (conditional.cache_stats().misses, plain.cache_stats().misses) != misses {
        return Err(
            "conditional_peers missed the verified-key cache: it measured the cold path".into(),
        );
    }
    Ok(())
}

#[cfg(feature = "peers")]
mod peers {
    //! casbin-rs and cedar-policy, built from the same [`Rbac`] policy.

    use std::hint::black_box;
    use std::str::FromStr;
    use std::sync::Arc;
    use std::time::Instant;

    use casbin::{
        CachedEnforcer, CoreApi, DefaultModel, DefaultRoleManager, Enforcer, MemoryAdapter,
        MgmtApi, RoleManager,
    };
    use cedar_policy::{
        Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
        PolicySet, Request,
    };
    use criterion::measurement::WallTime;
    use criterion::{BenchmarkGroup, BenchmarkId};
    use kms_benches::SetupResult;
    use parking_lot::RwLock;

    use crate::rbac::{Rbac, USER};
    use crate::ConditionalRequest;

    /// kms's `context.region == "eu"` in cedar, as the differential test translates it:
    /// the key is checked first, so a missing one denies (as in kms) instead of erring.
    const CEDAR_CONDITION: &str = "context has region && context.region == \"eu\"";

    /// cedar with every grant conditional, and the requests of a conditional cell.
    pub(crate) struct ConditionalCedar {
        authorizer: Authorizer,
        policies: PolicySet,
        entities: Entities,
        requests: Vec<(&'static str, Request)>,
    }

    impl ConditionalCedar {
        /// Loads `policy` with [`CEDAR_CONDITION`] on every grant, and checks that cedar
        /// decides each of `requests` as kms does.
        pub(crate) fn new(policy: &Rbac, requests: &[ConditionalRequest<'_>]) -> SetupResult<Self> {
            let start = Instant::now();
            let (policies, entities) = cedar_load(policy, Some(CEDAR_CONDITION))?;
            println!(
                "set-up, conditional, {} grants, depth {}: cedar {:.1?}",
                policy.grants,
                policy.depth,
                start.elapsed()
            );
            let authorizer = Authorizer::new();
            let mut built = Vec::with_capacity(requests.len());
            for &(what, permission, region, expected) in requests {
                let context = Context::from_pairs([(
                    "region".to_owned(),
                    cedar_policy::RestrictedExpression::new_string(region.to_owned()),
                )])?;
                let request = Request::new(
                    uid("User", USER)?,
                    uid("Action", permission)?,
                    uid("Resource", "any")?,
                    context,
                    None,
                )?;
                let allowed = authorizer
                    .is_authorized(&request, &policies, &entities)
                    .decision()
                    == Decision::Allow;
                if allowed != expected {
                    return Err(format!(
                        "cedar decided the conditional {what} request {allowed}, kms {expected} \
                         ({} grants)",
                        policy.grants
                    )
                    .into());
                }
                built.push((what, request));
            }
            Ok(ConditionalCedar {
                authorizer,
                policies,
                entities,
                requests: built,
            })
        }

        /// Adds cedar's benchmark of request `i` to `group`.
        pub(crate) fn bench(&self, group: &mut BenchmarkGroup<'_, WallTime>, i: usize) {
            let Some((what, request)) = self.requests.get(i) else {
                return;
            };
            group.bench_function(BenchmarkId::new("cedar", what), |b| {
                b.iter(|| {
                    self.authorizer.is_authorized(
                        black_box(request),
                        &self.policies,
                        &self.entities,
                    )
                })
            });
        }
    }

    /// casbin's RBAC model for the policy: a subject and a permission per request.
    const CASBIN_MODEL: &str = "
[request_definition]
r = sub, act

[policy_definition]
p = sub, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.act == p.act && g(r.sub, p.sub)
";

    /// The engines under comparison, loaded with one policy.
    pub(crate) struct Peers {
        enforcer: Enforcer,
        cached: CachedEnforcer,
        authorizer: Authorizer,
        policies: PolicySet,
        entities: Entities,
        allowed: Request,
        denied: Request,
    }

    impl Peers {
        /// Loads `policy` into each engine and checks that each decides both requests as
        /// kms does.
        pub(crate) fn new(policy: &Rbac) -> SetupResult<Self> {
            let rt = tokio::runtime::Builder::new_current_thread().build()?;
            let start = Instant::now();
            let enforcer: Enforcer = rt.block_on(casbin_load(policy))?;
            let casbin_setup = start.elapsed();
            let cached: CachedEnforcer = rt.block_on(casbin_load(policy))?;
            let start = Instant::now();
            let (policies, entities) = cedar_load(policy, None)?;
            println!(
                "set-up, {} grants, depth {}: casbin Enforcer {:.1?}, cedar {:.1?}",
                policy.grants,
                policy.depth,
                casbin_setup,
                start.elapsed()
            );
            let request = |permission: &str| -> SetupResult<Request> {
                Ok(Request::new(
                    uid("User", USER)?,
                    uid("Action", permission)?,
                    uid("Resource", "any")?,
                    Context::empty(),
                    None,
                )?)
            };
            let peers = Peers {
                enforcer,
                cached,
                authorizer: Authorizer::new(),
                policies,
                entities,
                allowed: request(&policy.allowed)?,
                denied: request(&policy.denied)?,
            };
            for (what, permission) in [("allowed", &policy.allowed), ("denied", &policy.denied)] {
                let expected = what == "allowed";
                let request = peers.request(what);
                let cedar = peers
                    .authorizer
                    .is_authorized(request, &peers.policies, &peers.entities)
                    .decision()
                    == Decision::Allow;
                // Twice through the cached enforcer: the first fills its cache.
                let answers = [
                    (
                        "casbin Enforcer",
                        peers.enforcer.enforce((USER, permission))?,
                    ),
                    (
                        "casbin CachedEnforcer",
                        peers.cached.enforce((USER, permission))?,
                    ),
                    (
                        "casbin CachedEnforcer",
                        peers.cached.enforce((USER, permission))?,
                    ),
                    ("cedar", cedar),
                ];
                for (engine, answer) in answers {
                    if answer != expected {
                        return Err(format!(
                            "{engine} decided the {what} request {answer}, kms {expected} \
                             ({} grants, depth {})",
                            policy.grants, policy.depth
                        )
                        .into());
                    }
                }
            }
            Ok(peers)
        }

        fn request(&self, what: &str) -> &Request {
            if what == "allowed" {
                &self.allowed
            } else {
                &self.denied
            }
        }

        /// Adds the peers' benchmarks of one request to `group`.
        pub(crate) fn bench(
            &self,
            group: &mut BenchmarkGroup<'_, WallTime>,
            what: &str,
            permission: &str,
        ) {
            group.bench_function(BenchmarkId::new("casbin_enforcer", what), |b| {
                b.iter(|| self.enforcer.enforce(black_box((USER, permission))))
            });
            group.bench_function(BenchmarkId::new("casbin_cached_enforcer", what), |b| {
                b.iter(|| self.cached.enforce(black_box((USER, permission))))
            });
            let request = self.request(what);
            group.bench_function(BenchmarkId::new("cedar", what), |b| {
                b.iter(|| {
                    self.authorizer.is_authorized(
                        black_box(request),
                        &self.policies,
                        &self.entities,
                    )
                })
            });
        }
    }

    /// An enforcer of either kind over a `MemoryAdapter` holding `policy`.
    async fn casbin_load<E: CoreApi + MgmtApi>(policy: &Rbac) -> SetupResult<E> {
        let model = DefaultModel::from_str(CASBIN_MODEL).await?;
        let mut e = E::new(model, MemoryAdapter::default()).await?;
        // The default role manager follows at most 10 inheritance steps; the deepest chain
        // here has 20 (and one more from the user to its role).
        let rm: Arc<RwLock<dyn RoleManager>> =
            Arc::new(RwLock::new(DefaultRoleManager::new(policy.depth + 2)));
        e.set_role_manager(rm)?;
        let grants = policy
            .grant_list()
            .into_iter()
            .map(|(role, permission)| vec![role.to_owned(), permission.to_owned()])
            .collect();
        e.add_policies(grants).await?;
        let mut links = vec![vec![
            USER.to_owned(),
            policy.roles[policy.user_role].name.clone(),
        ]];
        for role in &policy.roles {
            if let Some(i) = role.inherits {
                links.push(vec![role.name.clone(), policy.roles[i].name.clone()]);
            }
        }
        e.add_grouping_policies(links).await?;
        Ok(e)
    }

    fn uid(kind: &str, id: &str) -> SetupResult<EntityUid> {
        Ok(EntityUid::from_type_name_and_id(
            EntityTypeName::from_str(kind)?,
            EntityId::new(id),
        ))
    }

    /// One `permit` per grant, each with `when { <when> }` if given; the user and the roles
    /// as entities, each role's parent being the role it inherits (so
    /// `principal in Role::"held-l0"` holds for the user).
    fn cedar_load(policy: &Rbac, when: Option<&str>) -> SetupResult<(PolicySet, Entities)> {
        let mut src = String::with_capacity(policy.grants * 80);
        let when = when.map(|w| format!(" when {{ {w} }}")).unwrap_or_default();
        for (role, permission) in policy.grant_list() {
            src.push_str(&format!(
                "permit(principal in Role::\"{role}\", action == Action::\"{permission}\", resource){when};\n"
            ));
        }
        let policies = PolicySet::from_str(&src)?;
        let mut entities = vec![Entity::new_no_attrs(
            uid("User", USER)?,
            [uid("Role", &policy.roles[policy.user_role].name)?].into(),
        )];
        for role in &policy.roles {
            let parents = match role.inherits {
                Some(i) => [uid("Role", &policy.roles[i].name)?].into(),
                None => Default::default(),
            };
            entities.push(Entity::new_no_attrs(uid("Role", &role.name)?, parents));
        }
        Ok((policies, Entities::from_entities(entities, None)?))
    }
}
